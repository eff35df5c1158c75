r"""Fixed-step solves of :math:`\varepsilon \ddot x + \dot x = f(x, t)` over the schemes of
:data:`mode.SCHEMES`, with three ways to backpropagate (the engine of :func:`mode.odeint` for a scheme).

* ``"autograd"``: the steps are recorded by autograd; memory grows with the number of steps.
* ``"checkpoint"``: the steps run in :math:`\lceil\sqrt N\rceil` segments under
  ``torch.utils.checkpoint``, each recomputed in the backward pass; gradients identical to autograd's,
  memory :math:`O(\sqrt N)` states.
* ``"reversible"``: the invertible schemes (a :class:`~mode.schemes.momentum.MomentumSplitting`:
  ``momentum``, ``exp-momentum``, ``leapfrog``) run in the exact integer arithmetic of
  :class:`~mode.nn.reversible.ReversiblePass`, one layer per sub-step
  :math:`v \leftarrow \gamma_j v + (1 - \gamma_j) f(x, t_n + \tau_j)`, :math:`x \leftarrow x + h_j v`.
  The forward keeps no trajectory; the backward rebuilds every state bit for bit and walks the adjoint
  recursion of the discrete solve, so the gradient is that of the discrete solve, to float rounding:

  .. math::
     \tilde v = \bar v + h_j \bar x, \qquad
     \bar x \leftarrow \bar x + (1 - \gamma_j) J_f^\top \tilde v, \qquad
     \bar v \leftarrow \gamma_j \tilde v .

Steps are taken at the times :math:`t_n = t_0 + n h`, evaluated as ``torch.as_tensor(t0 + n * h)`` by
every mode (and by :func:`mode.integrate`), so all modes call ``f`` at bitwise equal times. Output times
must lie on that grid.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, MutableSequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch.utils.checkpoint import checkpoint

from mode.nn.layer_state import BlockState, CallMode
from mode.nn.reversible import Recursion, ReversiblePass, check_reversible_input
from mode.ode import VectorField, check_positive, check_steps, checked_vector_field
from mode.schemes import Scheme, get_scheme
from mode.schemes.momentum import MomentumSplitting

#: How a fixed-step solve backpropagates.
FIXED_STEP_BACKPROP = ("autograd", "checkpoint", "reversible")
#: The backprop modes that only a scheme of ``mode.SCHEMES`` runs (no torchdiffeq method offers them).
SCHEME_ONLY_BACKPROP = ("checkpoint", "reversible")


@dataclass(frozen=True)
class StepGrid:
    """The steps of a solve: step ``h`` from ``t0``, and the step count at each output time after ``t0``."""

    t0: float
    h: float
    stops: tuple[int, ...]

    @property
    def steps(self) -> int:
        """Total number of steps."""
        return self.stops[-1]


def step_grid(times: torch.Tensor, steps: int | None, step_size: float | None) -> StepGrid:
    r"""The grid :math:`t_n = t_0 + n h` through the output ``times``.

    ``steps`` divides :math:`[t_0, t_{\text{end}}]` into equal steps; ``step_size`` gives :math:`h`
    directly. Exactly one of them is given.

    Raises
    ------
    ValueError
        If both or neither are given, or an output time is not on the grid (within
        :math:`10^{-9} h`).
    """
    if (steps is None) == (step_size is None):
        raise ValueError(
            "a fixed-step method needs exactly one of steps=N and options={'step_size': h}, got "
            f"{'both' if steps is not None else 'neither'}"
        )
    values = [float(t) for t in times]
    t0, end = values[0], values[-1]
    if steps is not None:
        h = (end - t0) / check_steps(steps)
    else:
        h = check_positive("step_size", cast(float, step_size))  # given: checked above
    stops: list[int] = []
    for j, t in enumerate(values[1:], 1):
        n = round((t - t0) / h)
        if n < 1 or abs(t0 + n * h - t) > 1e-9 * h or (stops and n <= stops[-1]):
            raise ValueError(
                f"t[{j}] = {t} is not on the step grid t0 + n h (t0 = {t0}, h = {h}): choose steps or "
                "step_size so that every output time is a whole number of steps from t[0]"
            )
        stops.append(n)
    return StepGrid(t0, h, tuple(stops))


class _Periodic(MutableSequence):
    """``items`` repeated to ``length``, stored once: a solve's per-layer blocks, rules and parameters
    repeat with the period of a step, and a list of thousands of references would outweigh its state."""

    def __init__(self, items: tuple, length: int) -> None:
        self.items, self.length = items, length

    def __getitem__(self, i):
        if isinstance(i, slice) or not -self.length <= i < self.length:
            raise IndexError(f"layer {i} of {self.length}")
        return self.items[i % len(self.items)]

    def __len__(self) -> int:
        return self.length

    def __setitem__(self, i, value):
        raise TypeError("the layers of a solve share their entries: they cannot be set one by one")

    def __delitem__(self, i):
        raise TypeError("a solve has a fixed number of layers")

    def insert(self, i, value):
        raise TypeError("a solve has a fixed number of layers")


class _Force(torch.nn.Module):
    """The force :math:`f(x, t)` of a counting field as a block ``block(x, t)``: each call counts one
    evaluation. The field (and through it ``f``, when ``f`` is a module) is a submodule, so that the
    reversible mode finds ``f``'s parameters, buffers and training flags."""

    def __init__(self, field: Any) -> None:
        super().__init__()
        self.field = field

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.field.nfe += 1
        return self.field.vector_field(x, t)


def solve_fixed(
    counting: Any,
    x0: torch.Tensor,
    v0: torch.Tensor | None,
    eps: float,
    times: torch.Tensor,
    *,
    scheme: str | Scheme,
    backprop: str,
    steps: int | None = None,
    step_size: float | None = None,
    adjoint_params: Iterable[torch.Tensor] | None = None,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Solve with ``scheme`` from ``(x0, v0)`` at ``times[0]``; returns the states at ``times[1:]``.

    Parameters
    ----------
    counting : CountingField
        The field (its ``vector_field`` is ``f(x, t)``; its ``nfe`` counts the evaluations).
    x0, v0, eps, times
        As validated by :func:`mode.odeint` (``v0=None``: zero velocity; ignored at ``eps = 0``).
    scheme : str or Scheme
        A scheme of :data:`mode.SCHEMES`; ``backprop="reversible"`` needs an invertible one.
    backprop : {"autograd", "checkpoint", "reversible"}
        See the module docstring.
    steps, step_size
        The grid, see :func:`step_grid`.
    adjoint_params : iterable of Tensor, optional
        Reversible mode: tensors ``f`` reads besides ``x`` and ``t`` whose gradients are wanted, such as
        non-leaf tensors a closure captured (the parameters of a module ``f`` and the leaves a closure
        captured are found without them). Ignored by the other modes, which differentiate all of them.

    Raises
    ------
    ValueError
        For an unknown ``backprop``, a grid that misses an output time, a scheme that cannot run
        reversibly (not invertible, or :math:`\\gamma = 0` at this step: ``eps = 0`` or
        :math:`h \\ge \\varepsilon` for ``momentum``).
    """
    if backprop not in FIXED_STEP_BACKPROP:
        raise ValueError(
            f"backprop must be one of {FIXED_STEP_BACKPROP} for a fixed-step solve, got {backprop!r}"
        )
    rule = get_scheme(scheme)
    grid = step_grid(times, steps, step_size)
    force = _Force(counting)
    if backprop == "reversible":
        return _reversible(rule, force, x0, v0, eps, grid, adjoint_params)
    field = checked_vector_field(force)
    v = torch.zeros_like(x0) if v0 is None else v0
    if backprop == "checkpoint":
        return _checkpointed(rule, field, x0, v, eps, grid)
    return _stepped(rule, field, x0, v, eps, grid, 0, grid.stops)


def time_at(grid: StepGrid, n: int, like: torch.Tensor) -> torch.Tensor:
    """:math:`t_n = t_0 + n h` as a scalar tensor of ``like``'s dtype and device."""
    return torch.as_tensor(grid.t0 + n * grid.h, dtype=like.dtype, device=like.device)


def _stepped(
    rule: Scheme,
    field: VectorField,
    x: torch.Tensor,
    v: torch.Tensor,
    eps: float,
    grid: StepGrid,
    start: int,
    stops: Iterable[int],
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    xs, vs, n = [], [], start
    for stop in stops:
        while n < stop:
            x, v = rule.step(field, x, v, time_at(grid, n, x), grid.h, eps)
            n += 1
        xs.append(x)
        vs.append(v)
    return xs, vs


def _checkpointed(
    rule: Scheme, field: VectorField, x: torch.Tensor, v: torch.Tensor, eps: float, grid: StepGrid
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    size = math.isqrt(grid.steps - 1) + 1
    bounds = sorted({*range(size, grid.steps, size), *grid.stops})
    outputs = set(grid.stops)
    xs, vs, start = [], [], 0
    for stop in bounds:

        def segment(x, v, start=start, stop=stop):
            (x,), (v,) = _stepped(rule, field, x, v, eps, grid, start, (stop,))
            return x, v

        x, v = checkpoint(segment, x, v, use_reentrant=False)
        if stop in outputs:
            xs.append(x)
            vs.append(v)
        start = stop
    return xs, vs


def _reversible(
    rule: Scheme,
    force: _Force,
    x0: torch.Tensor,
    v0: torch.Tensor | None,
    eps: float,
    grid: StepGrid,
    adjoint_params: Iterable[torch.Tensor] | None,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    if not isinstance(rule, MomentumSplitting):
        raise ValueError(
            f"backprop='reversible' needs an invertible scheme ('momentum', 'exp-momentum', 'leapfrog'), "
            f"got {rule.name!r}; use backprop='checkpoint' for the others"
        )
    substeps = rule.substeps(grid.h, eps)
    if not all(r.n for r, _ in substeps):
        raise ValueError(
            f"backprop='reversible' with the {rule.name!r} scheme at eps = {eps}, step h = {grid.h} has "
            "gamma = 0 (the ResNet rule, which forgets v): it needs eps > 0"
            + (" and h < eps (more steps)" if rule.name == "momentum" else "")
        )
    check_reversible_input(x0)
    state = BlockState.of(force)
    known = [*state.trainable(), *(p for p in adjoint_params or () if p.requires_grad)]
    params = list(dict.fromkeys(known))
    mode = CallMode.current(x0.device)
    per_step = len(substeps)
    xs, vs, start, x, v = [], [], 0, x0, v0
    for stop in grid.stops:
        layers = (stop - start) * per_step

        def time_of(i: int, start: int = start) -> torch.Tensor:
            n, j = divmod(i, per_step)
            t, offset = time_at(grid, start + n, x0), substeps[j][1]
            return t + offset if offset else t

        recursion = Recursion(
            blocks=_Periodic((force,), layers),
            rules=_Periodic(tuple(r for r, _ in substeps), layers),
            args=(),
            kwargs={},
            block_params=_Periodic((params,), layers),
            states=_Periodic((state,), layers),
            mode=mode,
            time_of=time_of,
            single_node=True,
            outside_remedy=("List it in adjoint_params, or use backprop='autograd' or 'checkpoint'"),
        )
        x, v = ReversiblePass(recursion).run(x, v)
        xs.append(x)
        vs.append(v)
        start = stop
    return xs, vs
