r"""Exact, memory-free backpropagation through the momentum recursion.

Forward, with :math:`x, v` held in block floating point (int64 mantissas, one exponent per sample,
:class:`mode.exact.ExactState`) and the momentum an exact rational :math:`\gamma = n / 2^k`, every layer
applies the momentum scheme's exact step
(:meth:`mode.schemes.momentum.MomentumCoefficients.exact_step`): a bijection of integer states that keeps
the bits it destroys on a bit stack, undone exactly by its inverse.

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

The autograd graph is a chain of one node per layer that saves no tensor: :class:`_Start` runs the
integer forward, one :class:`_Layer` per block takes that block's parameters, and :class:`_Finish`
returns :math:`(x_L, v_L)`. The nodes pass an empty token along the chain, which fixes the order in which
the engine runs them (layer :math:`L` first); :math:`\bar x, \bar v` travel beside the chain in the
shared :class:`ReversiblePass`. Each layer hands its parameter gradients to the engine as soon as it is
done, as autograd does: they go straight into ``.grad`` (and to ``DistributedDataParallel``'s hooks),
and a block shared by several layers is accumulated by the engine like any reused parameter.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from mode.exact import ExactState
from mode.nn.layer_state import CallMode, LayerState, capture, replayed
from mode.schemes.momentum import MomentumCoefficients


class ReconstructionError(RuntimeError):
    """The reversed recursion did not land on the forward's input: some block is not deterministic."""


@dataclass
class Recursion:
    """The fixed parameters of one forward call (everything but the tensors autograd tracks)."""

    blocks: list
    rule: MomentumCoefficients
    args: tuple
    kwargs: dict
    block_params: list[list[torch.nn.Parameter]]  # per block, those that require grad
    mode: CallMode


@dataclass
class ExactRecord:
    """Exact state of the recursion after ``layer`` blocks, with what is needed to walk it back."""

    state: ExactState
    layer: int
    states: list[LayerState | None]
    # The forward's inputs (v0 None: zero), referenced, not copied: their bits below the grid are not part
    # of the recursion, and inverse() returns them from here; the versions detect a later in-place change.
    inputs: tuple[torch.Tensor, torch.Tensor | None]
    versions: tuple[int, int | None]
    checksum: torch.Tensor

    def clone(self) -> ExactRecord:
        """An independent record to walk back."""
        return replace(self, state=self.state.clone(), states=list(self.states))


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


def exact_forward(rec: Recursion, x0: torch.Tensor, v0: torch.Tensor | None) -> ExactRecord:
    """Run the exact recursion over all blocks (no graph) from ``(x0, v0)`` (``v0=None``: zero) and
    return its record."""
    state = ExactState.encode(x0, v0)
    checksum = state.checksum()
    x, states = state.decode_x(), []
    depth = len(rec.blocks)
    for i, block in enumerate(rec.blocks):
        with capture(block, x0.device) as recorder, rec.mode.applied():
            fx = call_block(block, i, x, rec.args, rec.kwargs)
        states.append(recorder.state)
        x = rec.rule.exact_step(state, fx, f"the MomentumNet forward pass (layer {i} of {depth})")
    inputs = (x0.detach(), None if v0 is None else v0.detach())
    versions = (x0._version, None if v0 is None else v0._version)
    return ExactRecord(state, depth, states, inputs, versions, checksum)


def undo_layer(rec: Recursion, record: ExactRecord, fx_of):
    """Step ``record`` back over its last layer; ``fx_of(i, x)`` evaluates block ``i``.

    Returns ``(x_i, f_i(x_i))`` as the float input the block saw and its output (with whatever graph
    ``fx_of`` built), so the caller can take the vector-Jacobian product from this single evaluation.
    A non-deterministic block shows up in :func:`check_reconstruction`.
    """
    i = record.layer - 1
    x = rec.rule.exact_undo_position(record.state)
    with replayed(rec.blocks[i], record.states[i], x.device):
        fx = fx_of(i, x)
    rec.rule.exact_undo_velocity(record.state, fx)
    record.states[i] = None
    record.layer = i
    return x, fx


def check_reconstruction(record: ExactRecord) -> None:
    """Raise :class:`ReconstructionError` unless the walk back ended on the forward's exact input."""
    if not torch.equal(record.state.checksum(), record.checksum):
        raise ReconstructionError(
            "reversing the MomentumNet did not reproduce its input: a block returned different values for "
            "the same input in the two passes (non-deterministic kernels, or state the block reads and "
            "changes outside its buffers). Use torch.use_deterministic_algorithms(True) or "
            "backprop='checkpoint'."
        )


def reversed_input(record: ExactRecord) -> tuple[torch.Tensor, torch.Tensor]:
    """The forward's float input, bit for bit: the rebuilt grid value plus the input's bits below the grid.

    Raises
    ------
    ValueError
        If the forward's input was modified in place since, so that its bits below the grid are gone.
    """
    check_reconstruction(record)
    if tuple(None if t is None else t._version for t in record.inputs) != record.versions:
        raise ValueError(
            "the input of this MomentumNet forward was modified in place since: its bits below the "
            "block-floating-point grid cannot be restored"
        )
    state, given = record.state, record.inputs
    x = state.decode_x()
    x = x + (given[0] - x)  # exact: the residual lies on the grid of given[0]'s own spacing
    if given[1] is None:
        return x, torch.zeros_like(x)
    v = state.decode_v(given[1].dtype)
    return x, v + (given[1] - v)


class ReversiblePass:
    """One reversible forward and its backward walk: the record, and the adjoints ``bar_x, bar_v``.

    The autograd nodes of the pass share it; the graph (through them) and the output ``x_L`` (for
    :meth:`MomentumNet.inverse`) keep it alive, nothing else.
    """

    def __init__(self, rec: Recursion) -> None:
        self.rec = rec
        self.record: ExactRecord | None = None
        self.bar_x: torch.Tensor | None = None
        self.bar_v: torch.Tensor | None = None

    def forward(self, x0: torch.Tensor, v0: torch.Tensor | None) -> None:
        """Run the integer forward from the float inputs."""
        self.record = exact_forward(self.rec, x0, v0)

    def state(self, dtype_x: torch.dtype, dtype_v: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """The current state of the record as floats."""
        state = self.record.state
        return state.decode_x().to(dtype_x), state.decode_v(dtype_v)

    def run(self, x0: torch.Tensor, v0: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """:math:`(x_L, v_L)` from ``(x0, v0)`` (``v0=None``: zero), differentiable through the chain of
        layer nodes where gradients are needed."""
        rec = self.rec
        arg_tensors = tensor_arguments(rec.args, rec.kwargs)
        leaves = [x0, *arg_tensors, *(p for params in rec.block_params for p in params)]
        leaves += [] if v0 is None else [v0]
        if not (torch.is_grad_enabled() and any(t.requires_grad for t in leaves)):
            self.forward(x0, v0)
            return self.state(x0.dtype, x0.dtype if v0 is None else v0.dtype)
        # A leaf that requires grad starts the chain, so the engine runs every layer node (and the
        # reconstruction check at the start) even when only a late block trains.
        anchor = torch.empty(0, dtype=x0.dtype, device=x0.device, requires_grad=True)
        token = _Start.apply(self, anchor, x0, v0)
        for i, params in enumerate(rec.block_params):
            token = _Layer.apply(self, i, token, *params, *arg_tensors)
        return _Finish.apply(self, token, x0.dtype, x0.dtype if v0 is None else v0.dtype)

    def backward_layer(self, i: int, arg_tensors: list[torch.Tensor]) -> list[torch.Tensor | None]:
        """Rebuild layer ``i``, advance the adjoints over it; return the gradients of its parameters
        and of ``arg_tensors`` (``None`` where not required)."""
        rec, record = self.rec, self.record
        if record.layer != i + 1:
            raise RuntimeError(
                "this MomentumNet forward was already reversed: the reversible mode supports one backward "
                "pass per forward (retain_graph=True cannot replay it)"
            )
        arg_tensors = [t.detach().requires_grad_(t.requires_grad) for t in arg_tensors]
        args, kwargs = _substitute(rec.args, rec.kwargs, arg_tensors)

        def with_graph(i, x):
            with rec.mode.applied(grad_enabled=True):
                return call_block(rec.blocks[i], i, x.requires_grad_(True), args, kwargs)

        x, fx = undo_layer(rec, record, with_graph)
        params = rec.block_params[i]
        wanted = [t for t in arg_tensors if t.requires_grad]
        # The adjoints are this pass's own copies (see _Finish): updated in place, no temporaries held.
        tilde_v = self.bar_v.add_(self.bar_x, alpha=rec.rule.step)
        grads = [None] * (1 + len(params) + len(wanted))
        if fx.requires_grad:
            grads = torch.autograd.grad(
                fx, [x, *params, *wanted], tilde_v * rec.rule.one_minus_gamma, allow_unused=True
            )
        if grads[0] is not None:
            self.bar_x.add_(grads[0])
        self.bar_v = tilde_v.mul_(rec.rule.gamma)
        rest = iter(grads[1 + len(params) :])
        return [*grads[1 : 1 + len(params)], *(next(rest) if t.requires_grad else None for t in arg_tensors)]

    def finish_backward(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Check the walk back; return :math:`(\\bar x_0, \\bar v_0)`."""
        check_reconstruction(self.record)
        return self.bar_x, self.bar_v


class _Start(torch.autograd.Function):
    """``(pass, anchor, x0, v0) -> token``: runs the integer forward; backward returns the input adjoints."""

    @staticmethod
    def forward(ctx, run: ReversiblePass, anchor, x0, v0):
        ctx.run, ctx.zero_v0 = run, v0 is None
        run.forward(x0, v0)
        return anchor.new_empty(0)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, _token):
        bar_x, bar_v = ctx.run.finish_backward()
        return None, None, bar_x, None if ctx.zero_v0 else bar_v


class _Layer(torch.autograd.Function):
    """``(pass, i, token, *params_i, *arg_tensors) -> token``: stores nothing; backward undoes layer ``i``."""

    @staticmethod
    def forward(ctx, run: ReversiblePass, i: int, token, *tensors):
        ctx.run, ctx.i = run, i
        ctx.save_for_backward(*tensors[len(run.rec.block_params[i]) :])
        return token.new_empty(0)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, token):
        return (None, None, token, *ctx.run.backward_layer(ctx.i, list(ctx.saved_tensors)))


class _Finish(torch.autograd.Function):
    """``(pass, token, dtype_x, dtype_v) -> (x_L, v_L)``; backward hands the output adjoints to the pass."""

    @staticmethod
    def forward(ctx, run: ReversiblePass, token, dtype_x, dtype_v):
        ctx.run = run
        return run.state(dtype_x, dtype_v)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_x, grad_v):
        # Copies: the engine may hand the same gradient tensor to other nodes too.
        ctx.run.bar_x, ctx.run.bar_v = grad_x.clone(), grad_v.clone()
        return None, grad_x.new_empty(0), None, None


def tensor_arguments(args: tuple, kwargs: dict) -> list[torch.Tensor]:
    """The top-level tensors among the extra arguments (these are differentiated)."""
    return [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]


def _substitute(args: tuple, kwargs: dict, tensors: list[torch.Tensor]) -> tuple[tuple, dict]:
    it = iter(tensors)
    args = tuple(next(it) if isinstance(a, torch.Tensor) else a for a in args)
    kwargs = {key: next(it) if isinstance(a, torch.Tensor) else a for key, a in kwargs.items()}
    return args, kwargs
