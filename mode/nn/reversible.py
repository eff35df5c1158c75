r"""Exact, memory-free backpropagation through the momentum recursion.

Forward, with :math:`x, v` held as fixed-point integers :math:`X = x\, 2^q`, :math:`V = v\, 2^q` and the
momentum an exact rational :math:`\gamma = n / 2^k`:

.. math::
   V_{i+1} = \gamma \odot V_i + [\, (1 - \gamma)\, f_i(x_i)\, 2^q \,], \qquad
   X_{i+1} = X_i + [\, h V_{i+1} \,],

where :math:`[\cdot]` rounds to an integer and :math:`\gamma \odot` is the exact multiplication of
:class:`mode.exact.BitStack`, which keeps the bits it destroys. Every step is then a bijection of integer
states, undone exactly by

.. math::
   X_i = X_{i+1} - [\, h V_{i+1} \,], \qquad
   V_i = \gamma^{-1} \odot \big(V_{i+1} - [\, (1 - \gamma) f_i(x_i)\, 2^q \,]\big).

Backward walks the layers from :math:`L` down to 1. At layer :math:`i` it rebuilds :math:`x_i`, evaluates
:math:`f_i(x_i)` once with graph, uses that value both to rebuild :math:`v_i` and for the vector-Jacobian
product of the adjoint recursion (:math:`\bar x, \bar v` the gradients of the loss with respect to
:math:`x_{i+1}, v_{i+1}`):

.. math::
   \tilde v = \bar v + h \bar x, \qquad
   \bar x \leftarrow \bar x + (1 - \gamma) J_{f_i}(x_i)^\top \tilde v, \qquad
   \bar v \leftarrow \gamma \tilde v, \qquad
   \bar\theta_i \mathrel{+}= (1 - \gamma) (\partial_\theta f_i)^\top \tilde v .

Only the final integer state, the bit stack (about :math:`L \log_2(1/\gamma)` bits per coordinate) and the
few generator states and buffers that blocks actually changed are kept, so activation memory does not
grow with depth.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from mode.exact import BitStack, RangeGuard, dequantize, quantize
from mode.nn.layer_state import CallMode, LayerState, capture, replayed


class ReconstructionError(RuntimeError):
    """The reversed recursion did not land on the forward's input: some block is not deterministic."""


@dataclass
class Recursion:
    """The fixed parameters of one forward call (everything but the tensors autograd tracks)."""

    blocks: list
    n: int  # gamma = n / 2**k exactly
    k: int
    step: float
    frac_bits: int
    args: tuple
    kwargs: dict
    params: list[torch.nn.Parameter]
    mode: CallMode

    @property
    def gamma(self) -> float:
        return self.n / 2**self.k

    @property
    def one_minus_gamma(self) -> float:
        return (2**self.k - self.n) / 2**self.k


@dataclass
class ExactRecord:
    """Integer state of the recursion after ``layer`` blocks, with what is needed to walk it back."""

    x: torch.Tensor
    v: torch.Tensor
    stack: BitStack
    layer: int
    states: list[LayerState | None]
    residual_x: torch.Tensor  # input - dequantize(quantize(input)): the bits below the grid
    residual_v: torch.Tensor
    checksum: tuple[torch.Tensor, torch.Tensor]

    def clone(self) -> ExactRecord:
        """An independent record to walk back (the tensors are never modified in place, so shared)."""
        return replace(self, stack=self.stack.copy(), states=list(self.states))


def _checksum(x: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # int64 sums wrap modulo 2**64 identically in both passes: a cheap fingerprint, no host sync here
    return x.sum(), (v * 3 + x).sum()


def _drift(v: torch.Tensor, step: float) -> torch.Tensor:
    """:math:`[h V]`, a fixed function of :math:`V`, so forward and backward subtract the same integer."""
    if step == 1.0:
        return v
    return torch.round(v.to(torch.float64) * step).to(torch.int64)


def _force(rec: Recursion, fx: torch.Tensor, guard: RangeGuard) -> torch.Tensor:
    """:math:`[(1 - \\gamma) f(x) 2^q]`, computed in float64 from the block's output."""
    inc = fx.detach().to(torch.float64) * rec.one_minus_gamma
    guard.check_float(inc, rec.frac_bits)
    return quantize(inc, rec.frac_bits)


def call_block(block, i: int, x: torch.Tensor, args: tuple, kwargs: dict) -> torch.Tensor:
    """``block(x, *args, **kwargs)``, refusing a block that does not preserve the shape of ``x``."""
    fx = block(x, *args, **kwargs)
    if not isinstance(fx, torch.Tensor) or fx.shape != x.shape:
        got = tuple(fx.shape) if isinstance(fx, torch.Tensor) else type(fx).__name__
        raise ValueError(
            f"block {i} returned {got} for an input of shape {tuple(x.shape)}: the residual functions of a "
            "MomentumNet must preserve the shape"
        )
    return fx


def exact_forward(rec: Recursion, x0: torch.Tensor, v0: torch.Tensor) -> ExactRecord:
    """Run the integer recursion over all blocks (no graph) and return its record."""
    q, guard = rec.frac_bits, RangeGuard()
    guard.check_float(x0, q)
    guard.check_float(v0, q)
    X, V = quantize(x0, q), quantize(v0, q)
    guard.raise_if_violated("the input of MomentumNet (x0, v0)")
    residual_x = x0 - dequantize(X, q, x0.dtype)
    residual_v = v0 - dequantize(V, q, v0.dtype)
    checksum = _checksum(X, V)
    stack, states = BitStack(V), []
    for i, block in enumerate(rec.blocks):
        with capture(block, x0.device) as recorder, rec.mode.applied():
            fx = call_block(block, i, dequantize(X, q, x0.dtype), rec.args, rec.kwargs).detach()
        states.append(recorder.state)
        V = stack.multiply(V, rec.n, rec.k) + _force(rec, fx, guard)
        guard.check_int(V)
        step = _drift(V, rec.step)
        guard.check_int(step)
        X = X + step
        guard.check_int(X)
    guard.raise_if_violated(f"the MomentumNet forward pass (depth {len(rec.blocks)})")
    return ExactRecord(X, V, stack, len(rec.blocks), states, residual_x, residual_v, checksum)


def undo_layer(rec: Recursion, record: ExactRecord, fx_of, guard: RangeGuard):
    """Step ``record`` back over its last layer; ``fx_of(i, x)`` evaluates block ``i``.

    Returns ``(x_i, f_i(x_i))`` as the float input the block saw and its output (with whatever graph
    ``fx_of`` built), so the caller can take the vector-Jacobian product from this single evaluation.
    """
    i = record.layer - 1
    record.x = record.x - _drift(record.v, rec.step)
    x = dequantize(record.x, rec.frac_bits, record.residual_x.dtype)
    with replayed(rec.blocks[i], record.states[i], x.device):
        fx = fx_of(i, x)
    record.v = record.stack.divide(record.v - _force(rec, fx, guard), rec.n, rec.k)
    record.states[i] = None
    record.layer = i
    return x, fx


def check_reconstruction(record: ExactRecord) -> None:
    """Raise :class:`ReconstructionError` unless the walk back ended on the forward's exact input."""
    got = _checksum(record.x, record.v)
    if not (torch.equal(got[0], record.checksum[0]) and torch.equal(got[1], record.checksum[1])):
        raise ReconstructionError(
            "reversing the MomentumNet did not reproduce its input: a block returned different values for "
            "the same input in the two passes (non-deterministic kernels, or state the block reads and "
            "changes outside its buffers). Use torch.use_deterministic_algorithms(True) or "
            "backprop='checkpoint'."
        )


def reversed_input(rec: Recursion, record: ExactRecord) -> tuple[torch.Tensor, torch.Tensor]:
    """The forward's float input, bit for bit: the grid value plus the residual bits below the grid."""
    check_reconstruction(record)
    x = dequantize(record.x, rec.frac_bits, record.residual_x.dtype) + record.residual_x
    v = dequantize(record.v, rec.frac_bits, record.residual_v.dtype) + record.residual_v
    return x, v


class ReversibleMomentum(torch.autograd.Function):
    """``apply(rec, holder, x0, v0, *params, *arg_tensors) -> (x_L, v_L)`` with exact reversal."""

    @staticmethod
    def forward(ctx, rec: Recursion, holder: list, x0, v0, *tensors):
        record = exact_forward(rec, x0, v0)
        x_out = dequantize(record.x, rec.frac_bits, x0.dtype)
        v_out = dequantize(record.v, rec.frac_bits, v0.dtype)
        holder.append(record)
        ctx.rec, ctx.record = rec, record
        ctx.save_for_backward(*tensors[len(rec.params) :])
        return x_out, v_out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_x, grad_v):
        rec, record = ctx.rec, ctx.record
        if record.layer != len(rec.blocks):
            raise RuntimeError("this MomentumNet forward was already reversed (a second backward?)")
        arg_tensors = [t.detach().requires_grad_(t.requires_grad) for t in ctx.saved_tensors]
        args, kwargs = _substitute(rec.args, rec.kwargs, arg_tensors)
        dtype = record.residual_x.dtype
        bar_x = torch.zeros_like(record.residual_x) if grad_x is None else grad_x.to(dtype)
        bar_v = torch.zeros_like(record.residual_v) if grad_v is None else grad_v.to(dtype)
        wanted_args = [t for t in arg_tensors if t.requires_grad]
        total: dict[int, torch.Tensor] = {}  # gradient sums over layers, keyed by the tensor's identity
        guard = RangeGuard()

        def with_graph(i, x):
            with rec.mode.applied(grad_enabled=True):
                return call_block(rec.blocks[i], i, x.requires_grad_(True), args, kwargs)

        for i in reversed(range(len(rec.blocks))):
            x, fx = undo_layer(rec, record, with_graph, guard)
            params = [p for p in _parameters(rec.blocks[i]) if p.requires_grad]
            tilde_v = bar_v + rec.step * bar_x
            targets = [*params, *wanted_args]
            g_x, *grads = torch.autograd.grad(
                fx, [x, *targets], rec.one_minus_gamma * tilde_v, allow_unused=True
            )
            bar_x = bar_x if g_x is None else bar_x + g_x
            bar_v = rec.gamma * tilde_v
            for t, g in zip(targets, grads, strict=True):
                if g is not None:
                    total[id(t)] = total[id(t)] + g if id(t) in total else g
        guard.raise_if_violated("the MomentumNet backward pass")
        check_reconstruction(record)
        grads_out = [total.get(id(t)) for t in (*rec.params, *arg_tensors)]
        return (None, None, bar_x, bar_v, *grads_out)


def _parameters(block) -> list[torch.nn.Parameter]:
    return list(block.parameters()) if isinstance(block, torch.nn.Module) else []


def tensor_arguments(args: tuple, kwargs: dict) -> list[torch.Tensor]:
    """The top-level tensors among the extra arguments (these are differentiated)."""
    return [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]


def _substitute(args: tuple, kwargs: dict, tensors: list[torch.Tensor]) -> tuple[tuple, dict]:
    it = iter(tensors)
    args = tuple(next(it) if isinstance(a, torch.Tensor) else a for a in args)
    kwargs = {key: next(it) if isinstance(a, torch.Tensor) else a for key, a in kwargs.items()}
    return args, kwargs
