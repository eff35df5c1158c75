"""``MomentumNet``: a stack of residual functions run as momentum steps, with three ways to backprop."""

from __future__ import annotations

import contextlib
import math
import numbers
import weakref
from collections.abc import Callable, Iterable
from typing import Any, cast

import torch
from torch.utils.checkpoint import checkpoint, set_checkpoint_early_stop

from mode.exact.block_float import check_blocks
from mode.nn.layer_state import (
    NOT_REPRODUCED,
    BlockState,
    CallMode,
    ReconstructionError,
    block_states,
    capture,
    replayed,
)
from mode.nn.reversible import (
    ExactRecord,
    Recursion,
    ReversiblePass,
    call_block,
    check_reversible_input,
    reversed_input,
    undo_layer,
)
from mode.ode import _real, check_gamma, check_positive, check_steps, gamma_from_eps
from mode.schemes.momentum import MomentumCoefficients

BACKPROP_MODES = ("autograd", "reversible", "checkpoint")
#: Input dtypes of the reversible mode.
#: Weak references to the last reversible forward's pass and its outputs ``(x_L, v_L)``.
_LastForward = tuple[weakref.ref[ReversiblePass], weakref.ref[torch.Tensor], weakref.ref[torch.Tensor]]


class _Function(torch.nn.Module):
    """Holds a plain callable among the blocks so it can live in an ``nn.ModuleList``."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *args, **kwargs):
        return self.fn(*args, **kwargs)


def _as_blocks(blocks) -> torch.nn.ModuleList:
    if isinstance(blocks, torch.nn.Module) and not isinstance(
        blocks, (torch.nn.ModuleList, torch.nn.Sequential)
    ):
        raise TypeError("blocks must be a list, nn.ModuleList or nn.Sequential of residual functions")
    try:
        blocks = list(blocks)
    except TypeError:
        raise TypeError(
            "blocks must be a list, nn.ModuleList or nn.Sequential of residual functions"
        ) from None
    check_steps(len(blocks), "len(blocks)")
    for i, b in enumerate(blocks):
        if not callable(b):
            raise TypeError(f"blocks[{i}] is not callable: {type(b).__name__}")
    return torch.nn.ModuleList(b if isinstance(b, torch.nn.Module) else _Function(b) for b in blocks)


def _checksum(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Sums of a segment's output, to tell a recomputation that went another way."""
    with torch.no_grad():
        return torch.stack((x.sum(), v.sum()))


class MomentumNet(torch.nn.Module):
    r"""A Momentum ResNet over the residual functions ``blocks``.

    .. math::  v_{i+1} = \gamma v_i + (1 - \gamma) f_i(x_i, \ldots), \qquad x_{i+1} = x_i + h\, v_{i+1},
               \qquad i = 0, \ldots, L - 1,

    the semi-implicit Euler discretization of :math:`\varepsilon \ddot x + \dot x = f(x)` with
    :math:`\gamma = 1 - h / \varepsilon`.

    Parameters
    ----------
    blocks : list, nn.ModuleList or nn.Sequential
        The residual functions :math:`f_i`, each called as ``f_i(x, *args, **kwargs)`` and returning a
        tensor of the shape and device of ``x``, of its dtype or a lower precision (autocast), without
        changing ``x`` in place. The same module may appear several times (shared weights).
    gamma : float, optional
        Momentum in :math:`[0, 1)`. Give exactly one of ``gamma`` and ``eps``. :math:`\gamma = 0` is the
        plain ResNet :math:`x_{i+1} = x_i + h f_i(x_i)`, which has no inverse.
    eps : float, optional
        :math:`\varepsilon > 0`, giving :math:`\gamma = 1 - h / \varepsilon`; needs :math:`h \le \varepsilon`.
    step : float
        :math:`h > 0`; the paper's form is ``step=1``. With :math:`T` the horizon, :math:`h = T / L`.
    backprop : {"reversible", "autograd", "checkpoint"}
        ``"autograd"`` stores every activation (the reference); ``"reversible"`` stores none and rebuilds
        them exactly in the backward pass, evaluating each :math:`f_i` once there; ``"checkpoint"`` uses
        ``torch.utils.checkpoint`` on ``segments`` segments.
    v0 : None, Tensor or nn.Module
        Initial velocity: zero (default), a fixed tensor of the input's shape (a Parameter is trained), or
        a module applied to the input (the paper's :math:`v_0 = f(x_0)` variant).
    gamma_rel_tol : float
        :math:`\gamma` is replaced by the exact rational :math:`n / 2^k` with the smallest :math:`k` that
        keeps the relative error on :math:`1 - \gamma` below this, in :math:`[0, 1)`; all three modes use
        that value.
    gamma_bits : int, optional
        Fix :math:`k` instead: :math:`\gamma` is rounded to the grid :math:`2^{-k}` (``k <= 55``; a smaller
        :math:`k` makes the bit stack's arithmetic cheaper).
    segments : int, optional
        Checkpoint segments (default :math:`\lceil \sqrt{L} \rceil`).
    exponents : {"tensor", "sample"}
        Reversible mode: what shares a binary exponent of the block-floating-point state, the whole tensor
        (cheapest: exponents move a few times in a thousand layers) or each sample along the first
        dimension (every sample keeps its own relative precision in a batch whose samples differ in scale
        by more than :math:`2^{7}` in float64, :math:`2^{36}` in float32; about one more stack bit per
        coordinate whenever any sample's scale crosses a power of two).

    Notes
    -----
    The reversible mode is exact: :meth:`inverse` returns the forward's input bit for bit, and the
    backward pass raises :class:`~mode.nn.ReconstructionError` if a block is not deterministic (so that
    the reconstruction drifted) rather than return wrong gradients; the checkpoint mode compares a
    checksum of each segment's recomputed output with the forward's and raises the same way. Only
    ``"autograd"``, which evaluates every block once, accepts non-deterministic blocks, double backward
    (``create_graph=True``) and ``torch.func`` transforms (``vmap``, ``jacrev``; ``"checkpoint"`` takes
    ``vmap``); the reversible mode refuses them with a clear error. Values leaving the fixed-point range
    raise :class:`~mode.exact.FixedPointRangeError`.

    Gradients reach the block parameters, the top-level tensors among ``args`` and ``kwargs`` and, in
    every mode, the leaf tensors a block captures (the weights of a module that a plain function closes
    over). A captured tensor computed before the call (not a leaf) is refused by the reversible mode,
    which cannot pass it its gradient: pass it as an argument. ``torch.func.functional_call`` works in
    every mode, and ``eval()`` between the forward and the backward pass leaves the gradients unchanged
    (every later evaluation re-enters the forward's parameters and training flags); a parameter changed
    in place in between raises :class:`~mode.nn.ReconstructionError` naming it.

    Memory: the reversible forward keeps the integer state :math:`X_L, V_L` with its exponents, the bit
    stack (about :math:`L \log_2(1/\gamma)` bits per coordinate, plus the bits of the exponent moves:
    one per coordinate each time the scale of :math:`x` or :math:`v` doubles, of any sample with
    ``exponents="sample"``) and references to its inputs, for as long as its
    output (for :meth:`inverse`) or its graph (for the backward pass) is alive; the module itself holds
    only weak references, so nothing stays allocated between training steps. The backward pass hands
    each layer's parameter gradients to autograd as soon as that layer is done, as plain autograd does.

    Precision: the reversible state is block floating point (:mod:`mode.exact.block_float`): int64 mantissas
    with one binary exponent per tensor (or per sample, ``exponents``), chosen from the data and moved
    exactly (a right shift keeps the dropped bits on the bit stack). Every rounding of a step is at most
    :math:`2^{-55}` of the largest magnitude sharing its exponent, so the precision is relative at every
    scale of the dtype, from about :math:`10^{-290}` up to a quarter of its largest value (beyond that, or
    for non-finite values, :class:`~mode.exact.FixedPointRangeError`): finer than float32 and about
    float64's own. Measured (``tests/nn/test_precision.py``): outputs and gradients are no further from a
    float64 (for float32) or 64-bit-mantissa (for float64) reference than autograd's in the same dtype,
    within 2x, at input scales :math:`10^{-12}` to :math:`10^{8}`, depths 10 and 1000; float64 gradients
    match float64 autograd to :math:`10^{-9}` on depth-1000 tanh MLPs. The per-layer integer work is
    compiled into fused kernels (:mod:`mode.exact.fusion`; ``MODE_COMPILE=0`` runs them eagerly, bit for bit
    the same); each new input shape compiles once, in a few seconds.

    Every later evaluation of a block (backward, :meth:`inverse`) replays the forward's generator states,
    mutated buffers, grad mode and autocast state, so it applies the same function: BatchNorm statistics
    are updated once, dropout masks repeat. Under ``torch.autocast`` the state stays in float32 block floating
    point: the reconstruction is bit-exact and the gradients are the exact vector-Jacobian products of
    the low-precision blocks at the forward's states (equal to autograd's to the autocast precision, since
    autograd keeps float32 states). Under ``DistributedDataParallel`` the parameter gradients arrive
    through the usual accumulation hooks, so gradient averaging works unchanged.
    """

    def __init__(
        self,
        blocks: Iterable[Callable[..., Any]],
        gamma: float | None = None,
        eps: float | None = None,
        step: float = 1.0,
        backprop: str = "reversible",
        v0: torch.Tensor | torch.nn.Module | None = None,
        *,
        gamma_rel_tol: float = 1e-9,
        gamma_bits: int | None = None,
        segments: int | None = None,
        exponents: str = "tensor",
    ) -> None:
        super().__init__()
        self.blocks = _as_blocks(blocks)
        self.step = check_positive("step", step)
        if (gamma is None) == (eps is None):
            raise ValueError(
                f"give exactly one of gamma and eps, got {'both' if gamma is not None else 'neither'}"
            )
        # Exactly one of gamma and eps is None (checked above).
        self.gamma = check_gamma(cast(float, gamma)) if eps is None else gamma_from_eps(eps, self.step)
        gamma_rel_tol = _real("gamma_rel_tol", gamma_rel_tol)
        if not 0.0 <= gamma_rel_tol < 1.0:
            raise ValueError(f"gamma_rel_tol must lie in [0, 1), got {gamma_rel_tol}")
        if gamma_bits is not None:
            if isinstance(gamma_bits, bool) or not isinstance(gamma_bits, numbers.Integral):
                raise TypeError(
                    f"gamma_bits must be None or an int in [0, 55], got {type(gamma_bits).__name__}"
                )
            gamma_bits = int(gamma_bits)
        self.rule = MomentumCoefficients.from_gamma(
            self.gamma, self.step, rel_tol=gamma_rel_tol, bits=gamma_bits
        )
        if backprop not in BACKPROP_MODES:
            raise ValueError(f"backprop must be one of {BACKPROP_MODES}, got {backprop!r}")
        if backprop == "reversible" and self.rule.n == 0:
            raise ValueError(
                "gamma = 0 is the plain ResNet, which forgets v and has no inverse: "
                "use backprop='autograd' or 'checkpoint'"
            )
        self.backprop = backprop
        self.exponents = check_blocks(exponents)
        self.segments = (
            math.isqrt(len(self.blocks) - 1) + 1 if segments is None else check_steps(segments, "segments")
        )
        if v0 is not None and not isinstance(v0, (torch.Tensor, torch.nn.Module)):
            raise TypeError(f"v0 must be None, a Tensor or an nn.Module, got {type(v0).__name__}")
        if isinstance(v0, torch.Tensor) and not isinstance(v0, torch.nn.Parameter):
            self.register_buffer("v0", v0)
        else:
            self.v0 = v0
        self._last: _LastForward | None = None
        self._last_versions: tuple[int, int] | None = None

    @property
    def depth(self) -> int:
        return len(self.blocks)

    @property
    def n(self) -> int:
        """Numerator of the exact :math:`\\gamma = n / 2^k`."""
        return self.rule.n

    @property
    def k(self) -> int:
        """Denominator exponent of the exact :math:`\\gamma = n / 2^k`."""
        return self.rule.k

    @property
    def gamma_effective(self) -> float:
        """The exact rational :math:`n / 2^k` every backprop mode multiplies by."""
        return self.rule.gamma

    @property
    def eps(self) -> float:
        r""":math:`\varepsilon = h / (1 - \gamma)` of the effective :math:`\gamma`."""
        return self.step / (1 - self.gamma_effective)

    def extra_repr(self) -> str:
        return f"depth={self.depth}, gamma={self.gamma}, step={self.step}, backprop={self.backprop!r}"

    def initial_velocity(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`v_0` for the input ``x``."""
        if self.v0 is None:
            return torch.zeros_like(x)
        v0 = self.v0(x) if isinstance(self.v0, torch.nn.Module) else self.v0
        if v0.shape != x.shape:
            raise ValueError(f"v0 must have the shape of x {tuple(x.shape)}, got {tuple(v0.shape)}")
        return v0.to(x.dtype)

    def forward(
        self, x: torch.Tensor, *args: Any, return_velocity: bool = False, **kwargs: Any
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Run the :math:`L` momentum steps; returns :math:`x_L`, or :math:`(x_L, v_L)`."""
        if not isinstance(x, torch.Tensor) or not torch.is_floating_point(x):
            raise TypeError("x must be a floating-point torch.Tensor")
        if self.backprop == "reversible":
            # v0 = None: the recursion starts from an exact integer zero, no float zeros to keep.
            v = None if self.v0 is None else self.initial_velocity(x)
            x, v = self._reversible(x, v, args, kwargs)
        elif self.backprop == "checkpoint":
            x, v = self._checkpointed(x, self.initial_velocity(x), args, kwargs)
        else:
            x, v = self._steps(0, self.depth, x, self.initial_velocity(x), args, kwargs)
        return (x, v) if return_velocity else x

    def _steps(self, start, stop, x, v, args, kwargs):
        for i in range(start, stop):
            x, v = self.rule.float_step(x, v, call_block(self.blocks[i], i, x, args, kwargs))
        return x, v

    def _checkpointed(self, x, v, args, kwargs):
        size = math.ceil(self.depth / self.segments)
        # Recomputations run to the segment's end, where they compare their output with the forward's.
        with set_checkpoint_early_stop(False):
            for start in range(0, self.depth, size):
                stop = min(start + size, self.depth)
                x, v = checkpoint(
                    self._segment(start, stop, x.device),
                    x,
                    v,
                    *args,
                    use_reentrant=False,
                    preserve_rng_state=False,
                    **kwargs,
                )
        return x, v

    def _segment(self, start, stop, device):
        """The function checkpoint calls twice; the second call replays the first's RNG, buffers,
        parameter tensors and training flags, and checks that it reproduced the first's output."""
        blocks = self.blocks[start:stop]
        recorder = capture(blocks, device)
        states: dict[BlockState, int] = {}
        for i, state in enumerate(block_states(blocks), start):
            states.setdefault(state, i)
        forward: list[torch.Tensor] = []

        def run(x, v, *args, **kwargs):
            if not forward:
                with recorder:
                    x, v = self._steps(start, stop, x, v, args, kwargs)
                if torch.is_grad_enabled():  # else no recomputation follows
                    forward.append(_checksum(x, v))
                    for state in states:
                        state.record_versions()
                return x, v
            with contextlib.ExitStack() as stack:
                for state, i in states.items():
                    stack.enter_context(state.restored(i))
                stack.enter_context(replayed(recorder.state, device))
                x, v = self._steps(start, stop, x, v, args, kwargs)
            if not torch.allclose(_checksum(x, v), forward[0], rtol=0.0, atol=0.0, equal_nan=True):
                span = f"block {start}" if stop - start == 1 else f"blocks {start} to {stop - 1}"
                raise ReconstructionError(
                    f"the checkpointed recomputation of {span} in the backward pass returned other values "
                    f"than the forward pass, so the gradients would be wrong {NOT_REPRODUCED}."
                )
            return x, v

        return run

    def _recursion(self, x, args, kwargs) -> Recursion:
        check_reversible_input(x)
        states = block_states(self.blocks)
        return Recursion(
            blocks=list(self.blocks),
            rules=[self.rule] * len(self.blocks),
            args=args,
            kwargs=kwargs,
            block_params=[state.trainable() for state in states],
            states=states,
            mode=CallMode.current(x.device),
            exponents=self.exponents,
        )

    def _reversible(self, x, v, args, kwargs):
        run = ReversiblePass(self._recursion(x, args, kwargs))
        x_out, v_out = run.run(x, v)
        # The record lives as long as x_L (needed by inverse) or the graph (needed by backward), and no
        # longer: the module keeps weak references only, so it holds no memory between training steps.
        # Tensors take Python attributes; torch's stub declares none.
        x_out._momentum_pass = run  # type: ignore[attr-defined]
        self._last = (weakref.ref(run), weakref.ref(x_out), weakref.ref(v_out))
        self._last_versions = (x_out._version, v_out._version)
        return x_out, v_out

    @property
    def bit_stack(self):
        """The :class:`~mode.exact.BitStack` of the last reversible forward while its output is alive, else
        ``None``; full after the forward, emptied again by the backward pass."""
        run = self._last[0]() if self._last is not None else None
        return None if run is None else cast(ExactRecord, run.record).state.stack

    @torch.no_grad()
    def inverse(self, x: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Return :math:`(x_0, v_0)` from the output :math:`(x_L, v_L)` of the last forward, bit for bit.

        Exact reversal needs the bits that each multiplication by :math:`\gamma` destroyed, which the
        reversible forward kept: ``x`` and ``v`` must be the very tensors the last forward of this module
        returned (``return_velocity=True``), unmodified. For a float-arithmetic inverse of arbitrary states
        (whose error grows like :math:`\gamma^{-L}`) use ``mode.SCHEMES["momentum"].inverse``.
        """
        if self.backprop != "reversible":
            raise ValueError(
                "exact inversion needs backprop='reversible' (the other modes keep no bit stack)"
            )
        last = self._last
        if last is None or last[1]() is not x or last[2]() is not v:
            raise ValueError(
                "inverse(x, v) takes the tensors returned by this module's last forward "
                "(net(x0, return_velocity=True)); other states carry no record of the bits lost to gamma"
            )
        # x is alive, and it holds its pass (see _reversible).
        run = cast(ReversiblePass, last[0]())
        rec, record = run.rec, cast(ExactRecord, run.record)
        if (x._version, v._version) != self._last_versions:
            raise ValueError("x or v was modified in place after the forward: it cannot be inverted exactly")
        if record.layer:
            record = record.clone()

            def evaluate(i: int, x: torch.Tensor) -> torch.Tensor:
                with rec.mode.applied():
                    return rec.call(i, x, rec.args, rec.kwargs).detach()

            while record.layer:
                undo_layer(rec, record, evaluate)
        return reversed_input(record)
