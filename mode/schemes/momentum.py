r"""The momentum step of Momentum ResNets (semi-implicit Euler in phase space), in float and exactly.

.. math::  v_{n+1} = \gamma v_n + (1 - \gamma) f(x_n, t_n), \qquad x_{n+1} = x_n + h\, v_{n+1},

with :math:`\gamma = 1 - h/\varepsilon` (``momentum``: explicit Euler on :math:`v`, then the new velocity
moves :math:`x`) or :math:`\gamma = e^{-h/\varepsilon}` (``exp-momentum``: the damping integrated exactly).
Both are first order. The inverse is closed form for any ``f`` as long as :math:`\gamma \neq 0`:

.. math::  x_n = x_{n+1} - h\, v_{n+1}, \qquad v_n = (v_{n+1} - (1 - \gamma) f(x_n, t_n)) / \gamma.

``eps = 0`` gives :math:`\gamma = 0`: the ResNet rule :math:`x_{n+1} = x_n + h f(x_n)`, not invertible.

This module owns the rule for every caller: :class:`MomentumCoefficients` holds :math:`\gamma` as the
exact dyadic rational :math:`n / 2^k` and gives the float step (used by :func:`mode.integrate` and by
``MomentumNet``'s autograd and checkpoint modes, so that they agree bit for bit) and the exact step and
its inverse on an :class:`~mode.exact.state.ExactState` (``MomentumNet``'s reversible mode):

.. math::
   V' = \gamma \odot V^{\uparrow} + [(1 - \gamma) f(x)\, 2^{-b'}], \qquad
   X' = X^{\uparrow} + [h V' 2^{b' - a'}],

where :math:`V^{\uparrow}, X^{\uparrow}` are the mantissas moved exactly to the new exponents
:math:`b', a'` (chosen from bounds on the new values, :mod:`mode.exact.block_float`), :math:`[\cdot]`
rounds to an integer and :math:`\gamma \odot` is the bit stack's exact multiply. Each part is a bijection
of integer states given :math:`f(x)`, and :math:`x` is rebuilt before :math:`f(x)` is needed, so the
inverse runs the parts backwards.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from mode.exact.bit_stack import MAX_PUSH_BITS, divide_word, multiply_word
from mode.exact.block_float import (
    block_extremes,
    decode,
    extremes_amax,
    next_exponent,
    power_of_two,
    range_error,
    shift_word,
    unshift_word,
    value_limit,
    within_limit,
)
from mode.exact.fusion import fused
from mode.exact.gamma import dyadic_gamma, rational_gamma
from mode.exact.state import ExactState, Rescaling
from mode.ode import Time, VectorField, gamma_from_eps
from mode.schemes.base import NotInvertibleError, Scheme

#: Largest denominator exponent of the exact gamma (a float64 holds n / 2**53 exactly).
GAMMA_MAX_BITS = 53


@dataclass(frozen=True)
class MomentumCoefficients:
    r"""The momentum step with :math:`\gamma = n / 2^k` exactly and step :math:`h`.

    Parameters
    ----------
    n, k : int
        :math:`\gamma = n / 2^k`, ``0 <= n < 2**k``. For ``k <= 53`` (every default) :math:`\gamma` and
        :math:`1 - \gamma` are exact float64 numbers; ``gamma_bits`` of 54 or 55 give a :math:`1 - \gamma`
        that the force rounds once more (FP-5 bounds that step's error with the factor :math:`c_f`).
    step : float
        :math:`h \ge 0` of the drift :math:`x' = x + h v'`; ``0`` makes the rule a relaxation of
        :math:`v` alone (the second half of a leapfrog step).
    """

    n: int
    k: int
    step: float

    @classmethod
    def from_gamma(
        cls, gamma: float, step: float = 1.0, *, rel_tol: float = 1e-9, bits: int | None = None
    ) -> MomentumCoefficients:
        r"""The exact rule for a requested :math:`\gamma \in [0, 1)`.

        With ``bits=None``, :math:`\gamma` becomes the dyadic rational with the fewest bits whose
        :math:`1 - \gamma` is within ``rel_tol`` of the requested one
        (:func:`~mode.exact.gamma.rational_gamma`); where 53 bits cannot meet ``rel_tol``
        (:math:`\gamma` within about :math:`10^{-7}` of 1) it is the float64 value of :math:`\gamma`
        itself, the closest any float computation gets. With ``bits``, :math:`\gamma` is rounded to the
        grid :math:`2^{-\text{bits}}` (:func:`~mode.exact.gamma.dyadic_gamma`).
        """
        if bits is not None:
            return cls(*dyadic_gamma(gamma, bits), step)
        try:
            return cls(*rational_gamma(gamma, rel_tol=rel_tol, max_bits=GAMMA_MAX_BITS), step)
        except ValueError:
            if not rel_tol < 1.0 or not 0.5 <= gamma < 1.0:
                raise
            # gamma >= 1/2 is m / 2**53 with an integer m: its exact value, reduced.
            n, k = int(gamma * 2**GAMMA_MAX_BITS), GAMMA_MAX_BITS
            while n % 2 == 0:
                n, k = n // 2, k - 1
            return cls(n, k, step)

    @property
    def gamma(self) -> float:
        r""":math:`\gamma = n / 2^k` (exact in float64)."""
        return self.n / 2**self.k

    @property
    def one_minus_gamma(self) -> float:
        r""":math:`1 - \gamma = (2^k - n) / 2^k` (exact in float64)."""
        return (2**self.k - self.n) / 2**self.k

    # -- float arithmetic ---------------------------------------------------------------------------------

    def float_velocity(self, v: Tensor, fx: Tensor) -> Tensor:
        r""":math:`v' = \gamma v + (1 - \gamma) f(x)` (``v' = f(x)`` at :math:`\gamma = 0`)."""
        return self.gamma * v + self.one_minus_gamma * fx if self.n else fx

    def float_step(self, x: Tensor, v: Tensor, fx: Tensor) -> tuple[Tensor, Tensor]:
        r""":math:`v' = \gamma v + (1 - \gamma) f(x)`, :math:`x' = x + h v'`; returns :math:`(x', v')`.
        A rule with ``step = 0`` (a relaxation of :math:`v` alone) returns ``x`` itself."""
        v = self.float_velocity(v, fx)
        return (x + self.step * v if self.step else x), v

    def float_position_inverse(self, x: Tensor, v: Tensor) -> Tensor:
        r""":math:`x = x' - h v'`."""
        return x - self.step * v if self.step else x

    def float_velocity_inverse(self, v: Tensor, fx: Tensor) -> Tensor:
        r""":math:`v = (v' - (1 - \gamma) f(x)) / \gamma`."""
        if not self.n:
            raise NotInvertibleError("gamma = 0 (the ResNet rule) forgets v: the step has no inverse")
        return (v - self.one_minus_gamma * fx) / self.gamma

    # -- exact arithmetic ---------------------------------------------------------------------------------

    # The bit stack records the ops of every push: one shared tuple per rule, not one per step.
    @functools.cached_property
    def multiply_op(self) -> tuple[str, int, int]:
        r"""The bit stack's op of the exact multiply by :math:`\gamma`, ``("multiply", n, k)``."""
        return ("multiply", self.n, self.k)

    @functools.cached_property
    def multiply_push(self) -> tuple[tuple, ...]:
        """The push of a step that moves no exponent: the multiply alone."""
        return (self.multiply_op,)

    def _check_invertible(self) -> None:
        if not self.n:
            raise NotInvertibleError(
                "gamma = 0 (the ResNet rule) forgets v: there is no exact reversible step"
            )

    def scales(self, state: ExactState) -> Tensor:
        """:func:`momentum_scales` of this rule at the state's current exponents, derived once per pair of
        exponent tensors: exponents are replaced, never modified, so the same tensors mean the same
        scales (a walk back reuses the forward's last ones until an exponent moves)."""
        cached = state.derived
        if cached is not None and cached[0] is state.x_exp and cached[1] is state.v_exp and cached[2] == self:
            return cached[3]
        scales = momentum_scales(state.x_exp, state.v_exp, self.one_minus_gamma, self.step)
        state.derived = (state.x_exp, state.v_exp, self, scales)
        return scales

    def exact_step(self, state: ExactState, fx: Tensor, where: str = "the exact momentum step") -> Tensor:
        """Advance ``state`` in place by one exact step, given :math:`f(x)` at its :math:`x`; returns the
        new :math:`x` in the state's dtype (the next block's input).

        Raises
        ------
        FixedPointRangeError
            If :math:`f(x)` is not finite or the new state leaves the range of the dtype.
        """
        self._check_invertible()
        fx = fx.detach()
        x_exp, v_exp, x_shift, v_shift, facts, scales = momentum_exponents(
            *block_extremes(fx, state.blocks),
            *block_extremes(state.x, state.blocks),
            *block_extremes(state.v, state.blocks),
            state.x_exp,
            state.v_exp,
            self.gamma,
            self.one_minus_gamma,
            self.step,
            value_limit(state.dtype),
        )
        ok, changed, v_bits, x_bits = facts.tolist()  # the one host synchronisation of a step
        if not ok:
            raise range_error(where, state.dtype)
        multiply = self.multiply_op
        # Most steps move no exponent: their kernels are compiled without the shifts (None).
        ops = (("bits", v_bits), multiply, ("bits", x_bits)) if changed else self.multiply_push
        fuse = state.stack.fits(*ops)
        record = Rescaling(state.x_exp, state.v_exp, x_shift, v_shift, fuse) if changed else None
        state.rescalings.append(record)
        if not changed:
            x_shift = v_shift = None
        if fuse:
            state.stack.reserve(*ops)
            x = momentum_forward(
                state.stack.word, state.x, state.v, fx, x_shift, v_shift, scales, self.n, self.k, state.dtype
            )
            state.x_exp, state.v_exp = x_exp, v_exp
        else:
            # A shift too wide to share the word with the multiply (a scale jump of ~2**30 or more in one
            # step): the three pushes each reserve their own room.
            state.rescale_v(v_exp - v_shift, v_exp)
            state.stack.reserve(ops[1])
            state.stack.word, state.v = _velocity(state.stack.word, state.v, fx, scales[0], self.n, self.k)
            state.rescale_x(x_exp - x_shift, x_exp)
            state.x = state.x + _drift(state.v, scales[1])
            x = state.decode_x()
        state.derived = (x_exp, v_exp, self, scales)
        return x

    def exact_undo_position(self, state: ExactState) -> Tensor:
        """First half of the exact inverse: rebuild :math:`x` of the last step in place; returns it in the
        state's dtype, bit for bit the value the forward gave :math:`f`."""
        record = state.rescalings[-1]
        scales = self.scales(state)
        if record is not None and not record.fused:
            state.x = state.x - _drift(state.v, scales[1])
            state.unscale_x(record)
            return state.decode_x()
        shift = None if record is None else record.x_shift
        position = None if record is None else power_of_two(record.x_exp)
        x = momentum_undo_position(state.stack.word, state.x, state.v, scales, shift, position, state.dtype)
        if record is not None:
            state.x_exp = record.x_exp
        return x

    def exact_undo_velocity(self, state: ExactState, fx: Tensor) -> None:
        """Second half: given :math:`f(x)` at the rebuilt :math:`x`, rebuild :math:`v` in place."""
        record = state.rescalings.pop()
        multiply = self.multiply_op
        fx = fx.detach()
        scales = self.scales(state)
        if record is not None and not record.fused:
            state.stack.word, state.v = divide_word(
                state.stack.word, state.v - _force(fx, scales[0]), self.n, self.k
            )
            state.stack.release(multiply)
            state.unscale_v(record)
            return
        ops = state.stack.top()
        if ops != (self.multiply_push if record is None else (ops[0], multiply, ops[-1])):
            raise RuntimeError(f"the bit stack's last push {ops!r} is not a fused momentum step")
        shift = None if record is None else record.v_shift
        momentum_undo_velocity(state.stack.word, state.v, fx, scales, shift, self.n, self.k)
        state.stack.release(*ops)
        if record is not None:
            state.v_exp = record.v_exp


def momentum_scales(x_exp: Tensor, v_exp: Tensor, one_minus_gamma: float, step: float) -> Tensor:
    r"""The float64 factors of an exact momentum step at exponents :math:`(a, b)` of :math:`x = X 2^a`,
    :math:`v = V 2^b`, stacked: :math:`(1 - \gamma) 2^{-b}` (the force onto the grid of :math:`V`),
    :math:`h 2^{b - a}` (the drift of :math:`V` onto the grid of :math:`X`; exponent clamped to the float64
    range, far below which :math:`|V| < 2^{61}` rounds to zero anyway) and :math:`2^a` (decoding
    :math:`X`), each exact: a power of two times a float64 constant. Shape ``(3, *x_exp.shape)``.

    The fused kernels take these as one tensor rather than derive them from the exponents: a compiled
    loop re-derives a broadcast value at every element, since the exponents' memory might alias what it
    writes (the forward step ran 423 against 318 us for 65536 coordinates, one thread). Stacked, so that a
    kernel returns them as a buffer of its own, not as views that are rebuilt in Python at every call.
    """
    return torch.stack(
        [
            one_minus_gamma * power_of_two(-v_exp),
            step * power_of_two((v_exp - x_exp).clamp(-1022, 1023)),
            power_of_two(x_exp),
        ]
    )


def _force(fx: Tensor, scale: Tensor) -> Tensor:
    r""":math:`[(1 - \gamma) f(x) 2^{-b}]`: one float64 product with an exact scale
    (:func:`momentum_scales`), rounded half to even."""
    return torch.round(fx.to(torch.float64) * scale).to(torch.int64)


def _drift(v: Tensor, scale: Tensor) -> Tensor:
    r""":math:`[h V 2^{b - a}]` (:func:`momentum_scales`), a fixed function of :math:`V` and the exponents,
    so both passes move :math:`X` alike."""
    return torch.round(v.to(torch.float64) * scale).to(torch.int64)


def _velocity(word, v, fx, force_scale, n: int, k: int):
    word, v = multiply_word(word, v, n, k)
    return word, v + _force(fx, force_scale)


@fused
def momentum_exponents(
    fx_lo,
    fx_hi,
    x_lo,
    x_hi,
    v_lo,
    v_hi,
    x_exp,
    v_exp,
    gamma: float,
    one_minus_gamma: float,
    step: float,
    limit: float,
):
    r"""The exponents of the next state, from float64 bounds on it, and what the host must know.

    With :math:`\beta_v = \max(|v|, \mu)`, :math:`\mu = \gamma |v| + (1 - \gamma) |f|` (the old
    :math:`V` is moved to the new exponent before the multiply) and
    :math:`\beta_x = |x| + h(\mu + 2 \cdot 2^{b'})` (:math:`|V'| \le \mu 2^{-b'} + 2` after the
    roundings of the force and the multiply), per block, given the blocks' extremes of :math:`f`,
    :math:`X` and :math:`V` (:func:`~mode.exact.block_float.block_extremes`). Returns the new exponents,
    the shifts from the old ones (zero for all-zero blocks, relabelled), ``[within range, any exponent
    changed, widest v push, widest x push]`` and :func:`momentum_scales` at the new exponents.
    """
    x_max, v_max = extremes_amax(x_lo, x_hi, x_exp.shape), extremes_amax(v_lo, v_hi, v_exp.shape)
    size_x = x_max.to(torch.float64) * power_of_two(x_exp)
    size_v = v_max.to(torch.float64) * power_of_two(v_exp)
    moved = gamma * size_v + one_minus_gamma * extremes_amax(fx_lo, fx_hi, v_exp.shape).to(torch.float64)
    bound_v = torch.maximum(size_v, moved)
    v_new, v_old = next_exponent(bound_v, v_exp, v_max == 0)
    bound_x = size_x + step * (moved + 2 * power_of_two(v_new))
    x_new, x_old = next_exponent(bound_x, x_exp, x_max == 0)
    v_shift, x_shift = v_new - v_old, x_new - x_old
    facts = torch.stack(
        [
            within_limit(limit, bound_v, bound_x).to(torch.int64),
            ((v_new != v_exp).any() | (x_new != x_exp).any()).to(torch.int64),
            v_shift.clamp(0, MAX_PUSH_BITS).max(),
            x_shift.clamp(0, MAX_PUSH_BITS).max(),
        ]
    )
    return x_new, v_new, x_shift, v_shift, facts, momentum_scales(x_new, v_new, one_minus_gamma, step)


# The kernels below update the word and the mantissas in place: the state is never held twice, and the
# compiled loop writes each coordinate where it read it.


@fused
def momentum_forward(word, x, v, fx, x_shift, v_shift, scales, n: int, k: int, dtype):
    """One exact forward step in one kernel: move :math:`V` to its new exponent, multiply, add the force,
    move :math:`X`, drift (``word, x, v`` in place); returns the decoded :math:`x'`. ``scales``:
    :func:`momentum_scales` at the new exponents."""
    force, drift, position = scales
    new_word, new_v = shift_word(word, v, v_shift)
    new_word, new_v = _velocity(new_word, new_v, fx, force, n, k)
    new_word, new_x = shift_word(new_word, x, x_shift)
    new_x = new_x + _drift(new_v, drift)
    word.copy_(new_word), x.copy_(new_x), v.copy_(new_v)
    return decode(new_x, position, dtype)


@fused
def momentum_undo_position(word, x, v, scales, x_shift, position, dtype):
    """Inverse drift and exponent move of :math:`X` (``word, x`` in place); returns the decoded
    rebuilt :math:`x`. ``scales``: :func:`momentum_scales` at the step's exponents; ``position``:
    :math:`2^a` at the old exponent of :math:`X` where it moved (``x_shift``), else ``None``."""
    _, drift, same = scales
    new_word, new_x = unshift_word(word, x - _drift(v, drift), x_shift)
    word.copy_(new_word), x.copy_(new_x)
    return decode(new_x, same if position is None else position, dtype)


@fused
def momentum_undo_velocity(word, v, fx, scales, v_shift, n: int, k: int):
    r"""Inverse force, exact divide by :math:`\gamma` and exponent move of :math:`V` (``word, v`` in
    place)."""
    new_word, new_v = divide_word(word, v - _force(fx, scales[0]), n, k)
    new_word, new_v = unshift_word(new_word, new_v, v_shift)
    word.copy_(new_word), v.copy_(new_v)
    return ()


class Substep(NamedTuple):
    """One sub-step of a :class:`MomentumSplitting`."""

    #: The momentum rule (:math:`\gamma_j` and the drift step :math:`h_j`).
    rule: MomentumCoefficients
    #: :math:`\tau_j`, the offset of the evaluation time from the step's start :math:`t`.
    offset: float


class MomentumSplitting(Scheme):
    r"""A scheme whose step is a composition of momentum sub-steps, each
    :math:`v \leftarrow \gamma_j v + (1 - \gamma_j) f(x, t + \tau_j)`, :math:`x \leftarrow x + h_j v`
    (:meth:`substeps` gives the :math:`(\gamma_j, h_j, \tau_j)`).

    The float step, the float inverse (the sub-steps undone in reverse order) and the exact reversible
    solves of :func:`mode.odeint` all run these sub-steps through :class:`MomentumCoefficients`, so the
    float and exact paths use the same exact :math:`\gamma_j`.
    """

    invertible = True

    def substeps(self, h: float, eps: float) -> tuple[Substep, ...]:
        """The sub-steps of one step of size ``h``."""
        raise NotImplementedError

    def _step(
        self, f: VectorField, x: Tensor, v: Tensor, t: Time, h: float, eps: float
    ) -> tuple[Tensor, Tensor]:
        for rule, offset in self.substeps(h, eps):
            x, v = rule.float_step(x, v, f(x, t + offset if offset else t))
        return x, v

    def _inverse(
        self, f: VectorField, x: Tensor, v: Tensor, t: Time, h: float, eps: float
    ) -> tuple[Tensor, Tensor]:
        substeps = self.substeps(h, eps)
        if not all(rule.n for rule, _ in substeps):
            raise NotInvertibleError(
                f"the {self.name!r} step has gamma = 0 at h = {h}, eps = {eps} (the ResNet rule): "
                "it forgets v and has no inverse"
            )
        for rule, offset in reversed(substeps):
            x = rule.float_position_inverse(x, v)
            v = rule.float_velocity_inverse(v, f(x, t + offset if offset else t))
        return x, v


class MomentumScheme(MomentumSplitting):
    r"""Semi-implicit Euler with :math:`\gamma = 1 - h/\varepsilon` (the paper's rule): one sub-step."""

    name = "momentum"
    order = 1
    evals_per_step = 1

    def requested_gamma(self, h: float, eps: float) -> float:
        r"""The scheme's :math:`\gamma` before it is made exact."""
        return gamma_from_eps(eps, h)

    def coefficients(self, h: float, eps: float) -> MomentumCoefficients:
        """The exact rule every path of the library uses for this step."""
        return MomentumCoefficients.from_gamma(self.requested_gamma(h, eps), h)

    def gamma(self, h: float, eps: float) -> float:
        r""":math:`\gamma` as used (the exact dyadic rational of :meth:`coefficients`)."""
        return self.coefficients(h, eps).gamma

    def substeps(self, h: float, eps: float) -> tuple[Substep, ...]:
        return (Substep(self.coefficients(h, eps), 0.0),)


class ExpMomentumScheme(MomentumScheme):
    r"""Momentum step with the damping integrated exactly, :math:`\gamma = e^{-h/\varepsilon}`."""

    name = "exp-momentum"

    def requested_gamma(self, h: float, eps: float) -> float:
        return math.exp(-h / eps) if eps > 0 else 0.0
