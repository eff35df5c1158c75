r"""Exact, memory-free backpropagation through the momentum recursion.

Forward, with :math:`x, v` held in block floating point (int64 mantissas, one exponent per tensor or per
sample, :class:`mode.exact.ExactState`) and the momentum an exact rational :math:`\gamma = n / 2^k`,
every layer applies the momentum scheme's exact step
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

The integer forward runs first; the autograd graph is a chain of one node per layer that saves no
tensor: ``_Start`` takes the inputs, one ``_Layer`` per block takes that block's parameters
(and the leaves the forward found it captured, see :func:`captured_leaves`), and ``_Finish``
returns :math:`(x_L, v_L)`. The nodes pass an empty token along the chain, which fixes the order in which
the engine runs them (layer :math:`L` first); :math:`\bar x, \bar v` travel beside the chain in the
shared :class:`ReversiblePass`. Each layer hands its parameter gradients to the engine as soon as it is
done, as autograd does: they go straight into ``.grad`` (and to ``DistributedDataParallel``'s hooks),
and a block shared by several layers is accumulated by the engine like any reused parameter.
"""

from __future__ import annotations

from collections.abc import Callable, MutableSequence, Sequence
from dataclasses import dataclass, replace
from typing import cast

import torch
from torch.autograd.graph import Node

from mode.exact import ExactState
from mode.nn.layer_state import (
    NOT_REPRODUCED,
    BlockState,
    CallMode,
    LayerState,
    ReconstructionError,
    capture,
    replayed,
)
from mode.schemes.momentum import MomentumCoefficients

_AccumulateGrad = torch._C._functions.AccumulateGrad


@dataclass
class Recursion:
    """The fixed parameters of one forward call (everything but the tensors autograd tracks)."""

    blocks: Sequence
    rules: Sequence[MomentumCoefficients]  # per layer
    args: tuple
    kwargs: dict
    # Per layer, the tensors its node hands gradients to: the block's parameters that require grad, then
    # (added by the forward) the leaves the block captured, such as a closure's module weights.
    block_params: MutableSequence[list[torch.Tensor]]
    states: Sequence[BlockState]  # per layer, shared by the layers of one block
    mode: CallMode
    exponents: str = "tensor"  # what shares an exponent (mode.exact.block_float.BLOCKS)
    # Per layer, the time a block is called at as block(x, t, *args) (an ODE solve); None: block(x, *args).
    time_of: Callable[[int], torch.Tensor] | None = None
    # One autograd node for all layers instead of a chain of one per layer: for layers that share their
    # parameters (an ODE solve), whose gradients the engine would only sum, it saves a node per layer.
    # Their block_params must then be one list, shared by every layer.
    single_node: bool = False
    # How to make a tensor the forward found outside the blocks' reach differentiable (error messages).
    outside_remedy: str = (
        "Pass it as an argument (net(x, c) calls every block as block(x, c)), or use backprop='autograd' "
        "or 'checkpoint'"
    )

    def call(self, i: int, x: torch.Tensor, args: tuple, kwargs: dict) -> torch.Tensor:
        """Block ``i`` at ``x`` (:func:`call_block`), given the time of layer ``i`` first if there is one."""
        if self.time_of is not None:
            args = (self.time_of(i), *args)
        return call_block(self.blocks[i], i, x, args, kwargs)


@dataclass
class ExactRecord:
    """Exact state of the recursion after ``layer`` blocks, with what is needed to walk it back."""

    state: ExactState
    layer: int
    states: dict[int, LayerState]  # per layer whose block changed generator or buffer state
    # The forward's inputs (v0 None: zero), referenced, not copied: their bits below the grid are not part
    # of the recursion, and inverse() returns them from here; the versions detect a later in-place change.
    inputs: tuple[torch.Tensor, torch.Tensor | None]
    versions: tuple[int, int | None]
    checksum: torch.Tensor

    def clone(self) -> ExactRecord:
        """An independent record to walk back."""
        return replace(self, state=self.state.clone(), states=dict(self.states))


def call_block(block, i: int, x: torch.Tensor, args: tuple, kwargs: dict) -> torch.Tensor:
    """``block(x, *args, **kwargs)``, refusing a block that changes ``x`` in place or returns anything but
    a tensor of the shape, device and (at most) precision of ``x``: every backprop mode would go on
    differently from there.

    Raises
    ------
    ValueError
        If the block modified ``x`` in place, or returned another shape or device.
    TypeError
        If the block returned no tensor, or a dtype that would change the state's (wider or not floating).
    """
    # Inference tensors keep no version counter; they cannot be changed outside inference mode anyway.
    version = None if x.is_inference() else x._version
    fx = block(x, *args, **kwargs)
    if version is not None and x._version != version:
        raise ValueError(
            f"block {i} modified its input x in place (an in-place op such as x.add_() or x[...] = , or a "
            "module with inplace=True as its first layer): the MomentumNet state x must stay unchanged, "
            "and the backprop modes would disagree; use out-of-place ops (x = x + 1) or clone x first"
        )
    if not isinstance(fx, torch.Tensor):
        raise TypeError(
            f"block {i} returned {type(fx).__name__}: the residual functions must return a tensor"
        )
    if fx.shape != x.shape:
        raise ValueError(
            f"block {i} returned {tuple(fx.shape)} for an input of shape {tuple(x.shape)}: the residual "
            "functions of a MomentumNet must preserve the shape"
        )
    # A lower-precision output (autocast) is promoted by the step; a wider one would change the state's
    # dtype in the float modes but not in the exact one.
    if fx.dtype != x.dtype and (
        not fx.dtype.is_floating_point or torch.promote_types(fx.dtype, x.dtype) != x.dtype
    ):
        raise TypeError(
            f"block {i} returned {fx.dtype} for a {x.dtype} input: the state keeps the input's dtype in "
            "every backprop mode, so a block may compute in lower precision but not return a wider or "
            f"non-floating dtype; return fx.to(x.dtype) or pass a {fx.dtype} input"
        )
    if fx.device != x.device:
        raise ValueError(
            f"block {i} returned a tensor on {fx.device} for an input on {x.device}: the residual functions "
            f"must return their output on the input's device; move the block (block.to({str(x.device)!r})) "
            "or the input, not x inside the block"
        )
    return fx


#: The dtypes the exact state encodes.
EXACT_DTYPES = (torch.float32, torch.float64)


def check_reversible_input(x: torch.Tensor) -> None:
    """Refuse an input the exact recursion cannot run on: a dtype other than float32 or float64 (a
    ``TypeError``), or a call under a ``torch.func`` transform (a ``RuntimeError``)."""
    if x.dtype not in EXACT_DTYPES:
        raise TypeError(
            f"backprop='reversible' runs on float32 or float64 inputs, got {x.dtype}; cast the input "
            "(blocks may still compute in lower precision)"
        )
    if torch._C._are_functorch_transforms_active():
        raise RuntimeError(
            "backprop='reversible' does not support torch.func transforms (vmap, grad, jacrev, jvp, "
            "hessian): its exact integer state and its own backward pass live outside them. Use "
            "backprop='autograd' (or 'checkpoint' under vmap)"
        )


def _next_sequence_nr() -> int:
    """The sequence number the next autograd node created on this thread will get."""
    peek = getattr(torch._C._autograd, "_get_sequence_nr", None)
    if peek is not None:
        return peek()
    with torch.enable_grad():  # older torch: a throwaway node takes a number
        # A view of a tensor that requires grad always has a grad_fn.
        node = cast(Node, torch.empty(0, requires_grad=True).view(0).grad_fn)
        return node._sequence_nr() + 1


def captured_leaves(
    i: int, fx: torch.Tensor, since: int, known: list[torch.Tensor], remedy: str
) -> list[torch.Tensor]:
    """The leaves requiring grad that the graph of block ``i``'s output ``fx`` reaches besides ``known``
    (its parameters and arguments): tensors the block captured, such as the weights of a module a plain
    function closes over. ``since`` is the sequence number of the first node the block call created;
    ``remedy`` ends the error message.

    Raises
    ------
    ValueError
        If the graph reaches a tensor computed before the call (not a leaf, a parameter or an argument):
        the reversible backward has no way to hand it its gradient.
    """
    known_ids = {id(t) for t in known}
    boundary = {t.grad_fn for t in known if t.grad_fn is not None}  # non-leaf parameters or arguments
    # The caller passes an fx with a graph: its grad_fn is set.
    found: list[torch.Tensor] = []
    seen: set[Node] = set()
    stack = [cast(Node, fx.grad_fn)]
    while stack:
        node = stack.pop()
        if node in seen or node in boundary:
            continue
        seen.add(node)
        if type(node) is _AccumulateGrad:
            if id(node.variable) not in known_ids:
                found.append(node.variable)
            continue
        # autocast caches its casts of the weights across calls: a cast of an earlier call is no outside
        # tensor (its inputs are leaves, and it saves nothing, so the backward can run it again).
        if node._sequence_nr() < since and type(node).__name__ != "ToCopyBackward0":
            raise ValueError(
                f"block {i} uses a tensor that requires grad and was computed before the MomentumNet call "
                "(it is neither a leaf such as a parameter, nor one of the MomentumNet's arguments): "
                f"backprop='reversible' cannot pass it its gradient. {remedy}"
            )
        for edge, _ in node.next_functions:
            if edge is not None:  # None: an input that needs no grad
                stack.append(edge)
    return found


def exact_forward(rec: Recursion, x0: torch.Tensor, v0: torch.Tensor | None) -> ExactRecord:
    """Run the exact recursion over all blocks (no graph) from ``(x0, v0)`` (``v0=None``: zero) and
    return its record."""
    state = ExactState.encode(x0.detach(), None if v0 is None else v0.detach(), rec.exponents)
    checksum = state.checksum()
    x, states = state.decode_x(), {}
    depth = len(rec.blocks)
    arg_tensors = tensor_arguments(rec.args, rec.kwargs)
    for i, block in enumerate(rec.blocks):
        since = _next_sequence_nr() if rec.mode.grad_enabled else None
        with capture(block, x0.device, rec.states[i].buffer_slots) as recorder, rec.mode.applied():
            fx = rec.call(i, x, rec.args, rec.kwargs)
        if since is not None and fx.grad_fn is not None:
            known = [*rec.block_params[i], *arg_tensors]
            captured = captured_leaves(i, fx, since, known, rec.outside_remedy)
            if captured and rec.single_node:
                # Layers that share their parameters share one list: what one captured, all take.
                rec.block_params[i].extend(captured)
            elif captured:
                rec.block_params[i] = [*rec.block_params[i], *captured]
        if recorder.state is not None:
            states[i] = recorder.state
        x = rec.rules[i].exact_step(state, fx, f"the reversible forward pass (layer {i} of {depth})")
    for block_state in dict.fromkeys(rec.states):
        block_state.record_versions()
    inputs = (x0.detach(), None if v0 is None else v0.detach())
    versions = (x0._version, None if v0 is None else v0._version)
    return ExactRecord(state, depth, states, inputs, versions, checksum)


def undo_layer(
    rec: Recursion, record: ExactRecord, fx_of: Callable[[int, torch.Tensor], torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Step ``record`` back over its last layer; ``fx_of(i, x)`` evaluates block ``i``.

    Returns ``(x_i, f_i(x_i))`` as the float input the block saw and its output (with whatever graph
    ``fx_of`` built), so the caller can take the vector-Jacobian product from this single evaluation.
    A non-deterministic block shows up in :func:`check_reconstruction`.
    """
    i = record.layer - 1
    x = rec.rules[i].exact_undo_position(record.state)
    with rec.states[i].restored(i), replayed(record.states.pop(i, None), x.device):
        fx = fx_of(i, x)
    rec.rules[i].exact_undo_velocity(record.state, fx)
    record.layer = i
    return x, fx


def check_reconstruction(record: ExactRecord) -> None:
    """Raise :class:`~mode.nn.layer_state.ReconstructionError` unless the walk back ended on the forward's
    exact input."""
    if not torch.equal(record.state.checksum(), record.checksum):
        raise ReconstructionError(
            "reversing the MomentumNet did not reproduce its input: a block returned other values for the "
            f"same input in the forward and the backward pass {NOT_REPRODUCED}."
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
    :meth:`~mode.MomentumNet.inverse`) keep it alive, nothing else.
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
        state = self._record().state
        return state.decode_x().to(dtype_x), state.decode_v(dtype_v)

    def run(self, x0: torch.Tensor, v0: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """:math:`(x_L, v_L)` from ``(x0, v0)`` (``v0=None``: zero), differentiable through the chain of
        layer nodes where gradients are needed."""
        rec = self.rec
        # The forward comes first: it finds the leaves the blocks captured, which the chain must take.
        self.forward(x0, v0)
        arg_tensors = tensor_arguments(rec.args, rec.kwargs)
        leaves = [x0, *arg_tensors, *(p for params in rec.block_params for p in params)]
        leaves += [] if v0 is None else [v0]
        if not (torch.is_grad_enabled() and any(t.requires_grad for t in leaves)):
            return self.state(x0.dtype, x0.dtype if v0 is None else v0.dtype)
        dtypes = (x0.dtype, x0.dtype if v0 is None else v0.dtype)
        if rec.single_node:
            params = list(dict.fromkeys(p for layer in rec.block_params for p in layer))
            return _Whole.apply(self, dtypes, len(params), x0, v0, *params, *arg_tensors)
        # A leaf that requires grad starts the chain, so the engine runs every layer node (and the
        # reconstruction check at the start) even when only a late block trains.
        anchor = torch.empty(0, dtype=x0.dtype, device=x0.device, requires_grad=True)
        token = _Start.apply(self, anchor, x0, v0)
        for i, params in enumerate(rec.block_params):
            token = _Layer.apply(self, i, token, *params, *arg_tensors)
        return _Finish.apply(self, token, *dtypes)

    def backward_layer(self, i: int, arg_tensors: list[torch.Tensor]) -> list[torch.Tensor | None]:
        """Rebuild layer ``i``, advance the adjoints over it; return the gradients of its parameters
        and of ``arg_tensors`` (``None`` where not required)."""
        rec, record = self.rec, self._record()
        if record.layer != i + 1:
            raise RuntimeError(
                "this MomentumNet forward was already reversed: the reversible mode supports one backward "
                "pass per forward (retain_graph=True cannot replay it)"
            )
        arg_tensors = [t.detach().requires_grad_(t.requires_grad) for t in arg_tensors]
        args, kwargs = _substitute(rec.args, rec.kwargs, arg_tensors)

        def with_graph(i: int, x: torch.Tensor) -> torch.Tensor:
            with rec.mode.applied(grad_enabled=True):
                return rec.call(i, x.requires_grad_(True), args, kwargs)

        x, fx = undo_layer(rec, record, with_graph)
        params = rec.block_params[i]
        wanted = [t for t in arg_tensors if t.requires_grad]
        # The adjoints are this pass's own copies (see _Finish): updated in place, no temporaries held.
        bar_x, bar_v = self._adjoints()
        rule = rec.rules[i]
        tilde_v = bar_v.add_(bar_x, alpha=rule.step)
        found: Sequence[torch.Tensor | None] = [None] * (1 + len(params) + len(wanted))
        if fx.requires_grad:
            # The product J^T v~ is scaled by 1 - gamma afterwards, not v~ before: a scaled copy of v~
            # would be one more state-sized tensor alive through the whole vector-Jacobian product.
            found = torch.autograd.grad(fx, [x, *params, *wanted], tilde_v, allow_unused=True)
        x_grad, *grads = found
        del found
        if x_grad is not None:
            bar_x.add_(x_grad, alpha=rule.one_minus_gamma)
        # Freed before the scaled gradients are made, which would otherwise raise the step's peak.
        del x, fx, x_grad
        for j, g in enumerate(grads):
            # Out of place: a gradient may be v~ itself (f(x) = x + b with a full-shape b), or shared by
            # two parameters.
            grads[j] = None if g is None else g * rule.one_minus_gamma
        self.bar_v = tilde_v.mul_(rule.gamma)
        rest = iter(grads[len(params) :])
        return [*grads[: len(params)], *(next(rest) if t.requires_grad else None for t in arg_tensors)]

    def backward_all(self, params: list[torch.Tensor], arg_tensors: list[torch.Tensor]) -> list:
        """Walk every layer back (:meth:`backward_layer`); return the summed gradients of ``params``
        (every layer's parameters, each once) and of ``arg_tensors``."""
        position = {id(p): j for j, p in enumerate(params)}
        sums: list[torch.Tensor | None] = [None] * (len(params) + len(arg_tensors))
        for i in reversed(range(self._record().layer)):
            layer = self.rec.block_params[i]
            grads = self.backward_layer(i, arg_tensors)
            slots = [position[id(p)] for p in layer] + list(range(len(params), len(sums)))
            for j, grad in zip(slots, grads, strict=True):
                if grad is not None:
                    sums[j] = grad if sums[j] is None else cast(torch.Tensor, sums[j]).add_(grad)
        return sums

    def finish_backward(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Check the walk back; return :math:`(\\bar x_0, \\bar v_0)`."""
        check_reconstruction(self._record())
        return self._adjoints()

    def _record(self) -> ExactRecord:
        # Set by forward, which run calls before anything reads it.
        return cast(ExactRecord, self.record)

    def _adjoints(self) -> tuple[torch.Tensor, torch.Tensor]:
        # Set by _Finish's backward, which the engine runs before any layer's.
        return cast(torch.Tensor, self.bar_x), cast(torch.Tensor, self.bar_v)


class _Start(torch.autograd.Function):
    """``(pass, anchor, x0, v0) -> token``: heads the chain; backward returns the input adjoints."""

    @staticmethod
    def forward(ctx, run: ReversiblePass, anchor, x0, v0):
        ctx.run, ctx.zero_v0 = run, v0 is None
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
    def backward(ctx, grad_x, grad_v):
        _take_output_adjoints(ctx.run, grad_x, grad_v)
        return None, grad_x.new_empty(0), None, None


def _take_output_adjoints(run: ReversiblePass, grad_x: torch.Tensor, grad_v: torch.Tensor) -> None:
    """Start the backward walk of ``run`` from the gradients of :math:`(x_L, v_L)`.

    Raises
    ------
    RuntimeError
        Under ``create_graph=True``: the walk computes first derivatives only.
    """
    # Grad mode is on in a backward pass only with create_graph=True (double backward, hessians).
    if torch.is_grad_enabled():
        raise RuntimeError(
            "backprop='reversible' computes first derivatives only: its backward pass cannot build a "
            "graph (create_graph=True, double backward, torch.autograd.functional.hessian). Use "
            "backprop='autograd'"
        )
    # Copies: the engine may hand the same gradient tensor to other nodes too.
    run.bar_x, run.bar_v = grad_x.clone(), grad_v.clone()


class _Whole(torch.autograd.Function):
    """``(pass, dtypes, n_params, x0, v0, *params, *arg_tensors) -> (x_L, v_L)``: all layers in one node
    (:attr:`Recursion.single_node`); backward walks them all back and returns the summed gradients."""

    @staticmethod
    def forward(ctx, run: ReversiblePass, dtypes, n_params: int, x0, v0, *tensors):
        ctx.run, ctx.n_params, ctx.zero_v0 = run, n_params, v0 is None
        ctx.save_for_backward(*tensors[n_params:])
        return run.state(*dtypes)

    @staticmethod
    def backward(ctx, grad_x, grad_v):
        run = ctx.run
        _take_output_adjoints(run, grad_x, grad_v)
        params = list(dict.fromkeys(p for layer in run.rec.block_params for p in layer))
        with torch.no_grad():
            grads = run.backward_all(params, list(ctx.saved_tensors))
            bar_x, bar_v = run.finish_backward()
        return (None, None, None, bar_x, None if ctx.zero_v0 else bar_v, *grads)


def tensor_arguments(args: tuple, kwargs: dict) -> list[torch.Tensor]:
    """The top-level tensors among the extra arguments (these are differentiated)."""
    return [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]


def _substitute(args: tuple, kwargs: dict, tensors: list[torch.Tensor]) -> tuple[tuple, dict]:
    it = iter(tensors)
    args = tuple(next(it) if isinstance(a, torch.Tensor) else a for a in args)
    kwargs = {key: next(it) if isinstance(a, torch.Tensor) else a for key, a in kwargs.items()}
    return args, kwargs
