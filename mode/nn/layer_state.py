"""What a block's forward depends on besides its input: random numbers and mutable buffers.

A recomputation in the backward pass (reversible or checkpointed) must apply *the same function* the
forward applied. Two things can make it differ:

* random ops (dropout): the generator state has moved on, so the replay must restart from the state the
  forward saw (CPU and, where the input lives on a GPU, that device's generator);
* buffers the forward mutates (BatchNorm running statistics, spectral-norm power iterates): the replay
  would update them a second time, and a block whose output reads them would see the updated values;
* the calling mode: autocast changes the precision of every op, and some modules take another code path
  when gradients are off (``nn.TransformerEncoderLayer``'s fused fast path), so a forward run without
  grad and a backward replay with grad would apply two different functions. :class:`CallMode` records
  both at the forward and re-enters them for every later evaluation.

:func:`capture` records both *before* a block runs and keeps only what the block actually changed, so a
deterministic, stateless block costs nothing. :func:`replayed` runs a recomputation from the recorded
state and then puts the generators and buffers back exactly as they were, so every mutation happens once.

What the caller may change between the forward and a recomputation is recorded once per forward by
:class:`BlockState`: the tensors in the parameter and buffer slots (``torch.func.functional_call`` swaps
them for the duration of its call only), the parameters' versions and the training flags.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import cast

import torch


class ReconstructionError(RuntimeError):
    """A re-evaluation of the blocks in the backward pass (reversible or checkpoint) did not apply the
    function the forward applied, so the gradients would be wrong."""


#: The causes of a re-evaluation that returned other values, and the remedies (for error messages).
NOT_REPRODUCED = (
    "(non-deterministic kernels, or state a block reads and changes outside its parameters and buffers, "
    "such as a call counter). Make the blocks deterministic (torch.use_deterministic_algorithms(True)), "
    "or use backprop='autograd', which does not evaluate them again"
)


def _rng_states(device: torch.device) -> list[torch.Tensor]:
    states = [torch.get_rng_state()]
    if device.type == "cuda":
        states.append(torch.cuda.get_rng_state(device))
    return states


def _set_rng_states(device: torch.device, states: list[torch.Tensor]) -> None:
    torch.set_rng_state(states[0])
    if device.type == "cuda":
        torch.cuda.set_rng_state(states[1], device)


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(u, w) for u, w in zip(a, b, strict=True))


@dataclass(frozen=True)
class CallMode:
    """Grad mode and autocast settings (CPU and the input's device) under which a forward was called."""

    grad_enabled: bool
    autocast: tuple[tuple[str, bool, torch.dtype], ...]

    @classmethod
    def current(cls, device: torch.device) -> CallMode:
        types = dict.fromkeys(("cpu", device.type))
        return cls(
            torch.is_grad_enabled(),
            tuple((t, torch.is_autocast_enabled(t), torch.get_autocast_dtype(t)) for t in types),
        )

    @contextlib.contextmanager
    def applied(self, grad_enabled: bool | None = None):
        """Evaluate under the recorded mode (``grad_enabled`` overrides the grad mode, for a replay)."""
        with contextlib.ExitStack() as stack:
            grad = self.grad_enabled if grad_enabled is None else grad_enabled
            if grad != torch.is_grad_enabled():
                stack.enter_context(torch.set_grad_enabled(grad))
            # Entering an autocast context costs more than a small block's integer arithmetic: only
            # the settings that differ from the current ones are entered.
            for device_type, enabled, dtype in self.autocast:
                if (enabled, dtype) != (
                    torch.is_autocast_enabled(device_type),
                    torch.get_autocast_dtype(device_type),
                ):
                    stack.enter_context(torch.autocast(device_type, dtype=dtype, enabled=enabled))
            yield


@dataclass
class LayerState:
    """Generator states and buffer values from just before one block call (``None``: not needed)."""

    rng: list[torch.Tensor] | None
    buffers: list[tuple[torch.nn.Module, str, torch.Tensor]] | None  # (owner, name, value)


def _buffer_slots(block) -> list[tuple[torch.nn.Module, str]]:
    """Every ``(owner, name)`` buffer slot of ``block``, so buffers can be swapped, not written into."""
    if not isinstance(block, torch.nn.Module):
        return []
    return [(m, name) for m in block.modules() for name, b in m._buffers.items() if b is not None]


def _buffer(m: torch.nn.Module, name: str) -> torch.Tensor:
    # A slot of _buffer_slots, which lists only the buffers that are set.
    return cast(torch.Tensor, m._buffers[name])


class Recorder:
    """Context for one block call in a forward pass; ``state`` is the :class:`LayerState` to replay.

    ``slots`` are the block's ``(module, name)`` buffer slots if the caller has them already (a
    :class:`BlockState`'s ``buffer_slots``): walking the module tree costs more than a small block's
    integer arithmetic.
    """

    def __init__(self, block, device: torch.device, slots: list[tuple[torch.nn.Module, str]] | None = None):
        self.block, self.device, self._slots = block, device, slots
        self.state: LayerState | None = None

    def __enter__(self) -> Recorder:
        if self._slots is None:
            self._slots = _buffer_slots(self.block)
        self._rng = _rng_states(self.device)
        self._buffers = [(m, name, _buffer(m, name).detach().clone()) for m, name in self._slots]
        return self

    def __exit__(self, *exc) -> None:
        rng = None if _same(self._rng, _rng_states(self.device)) else self._rng
        # The slots are read again: a call may assign a new tensor to a buffer as well as update it in place.
        changed = any(not torch.equal(b, _buffer(m, name)) for m, name, b in self._buffers)
        buffers = self._buffers if changed else None
        # None when the call changed nothing: a deterministic, stateless block costs no memory per layer.
        self.state = None if rng is None and buffers is None else LayerState(rng, buffers)


def capture(block, device: torch.device, slots: list[tuple[torch.nn.Module, str]] | None = None) -> Recorder:
    """``with capture(block, device) as rec: out = block(x)``; then ``rec.state`` replays that call.
    ``slots``: the block's buffer slots, if known (see :class:`Recorder`)."""
    return Recorder(block, device, slots)


@contextlib.contextmanager
def replayed(state: LayerState | None, device: torch.device):
    """Run the body from the generator and buffer state of the recorded call; restore both afterwards.

    Buffers are swapped for fresh copies of the recorded values rather than overwritten, so the tensors
    that the forward's own graph saved (BatchNorm saves its running statistics) keep their version, and
    the copies that the replayed graph saves are never touched again.
    """
    if state is None or (state.rng is None and state.buffers is None):
        yield
        return
    rng_now = _rng_states(device) if state.rng is not None else None
    saved = state.buffers or []
    buffers_now = [m._buffers[name] for m, name, _ in saved]
    try:
        if state.rng is not None:
            _set_rng_states(device, state.rng)
        for m, name, value in saved:
            m._buffers[name] = value.clone()
        yield
    finally:
        if rng_now is not None:
            _set_rng_states(device, rng_now)
        for (m, name, _), now in zip(saved, buffers_now, strict=True):
            m._buffers[name] = now


_MISSING = object()


def _version(t: torch.Tensor) -> int | None:
    # Inference tensors keep no version counter (and cannot be changed in place outside inference mode).
    return None if t.is_inference() else t._version


@dataclass(eq=False)
class BlockState:
    """What a block's forward read besides its inputs and the generators, recorded once per forward.

    A later evaluation (a backward recomputation, :meth:`~mode.MomentumNet.inverse`) enters :meth:`restored`,
    which

    * swaps the forward's tensors back into the parameter and buffer slots: ``torch.func.functional_call``
      substitutes them only for the duration of its call, and a recomputation must use the substitutes;
    * refuses parameters changed in place since the end of the forward (:meth:`record_versions`; an
      optimizer step before ``backward()``): their forward values are gone;
    * sets the training flags back: ``eval()`` in between would switch dropout off in the recomputation only.

    Use :func:`block_states` to build them before the forward.
    """

    block: torch.nn.Module
    slots: tuple[tuple[dict, str, torch.Tensor], ...]  # (m._parameters or m._buffers, name, tensor)
    parameters: tuple[tuple[torch.nn.Module, str, torch.Tensor], ...]  # (owning module, name, parameter)
    training: tuple[tuple[torch.nn.Module, bool], ...]
    buffer_slots: list[tuple[torch.nn.Module, str]]  # (owning module, name) of every buffer that is set
    versions: list[int | None] = field(default_factory=list)  # empty until record_versions()

    @classmethod
    def of(cls, block: torch.nn.Module) -> BlockState:
        slots: list[tuple[dict, str, torch.Tensor]] = []
        parameters: list[tuple[torch.nn.Module, str, torch.Tensor]] = []
        training: list[tuple[torch.nn.Module, bool]] = []
        buffers: list[tuple[torch.nn.Module, str]] = []
        # The module tree walked directly: Module.modules() builds every qualified name, which costs
        # more than the rest of the record.
        stack: list[torch.nn.Module | None] = [block]
        seen: set[torch.nn.Module] = set()
        while stack:
            m = stack.pop()
            if m is None or m in seen:
                continue
            seen.add(m)
            training.append((m, m.training))
            for name, p in m._parameters.items():
                if p is not None:
                    slots.append((m._parameters, name, p))
                    parameters.append((m, name, p))
            for name, b in m._buffers.items():
                if b is not None:
                    slots.append((m._buffers, name, b))
                    buffers.append((m, name))
            stack.extend(m._modules.values())
        return cls(block, tuple(slots), tuple(parameters), tuple(training), buffers)

    def trainable(self) -> list[torch.Tensor]:
        """The distinct parameters that require grad."""
        return [p for p in dict.fromkeys(p for _, _, p in self.parameters) if p.requires_grad]

    def record_versions(self) -> None:
        """Note the parameters' versions as the forward leaves them (after it: a module may legitimately
        rewrite its weights in its first call, as cuDNN RNNs flatten theirs)."""
        self.versions = [_version(p) for _, _, p in self.parameters]

    def check(self, index: int) -> None:
        """Raise :class:`ReconstructionError` if a parameter was changed in place since
        :meth:`record_versions`."""
        # Not strict: no versions (nothing to check) before record_versions().
        for (owner, name, p), version in zip(self.parameters, self.versions, strict=False):
            if version is not None and p._version != version:
                prefix = next(q for q, m in self.block.named_modules() if m is owner)
                raise ReconstructionError(
                    f"parameter {prefix + '.' if prefix else ''}{name} of block {index} was changed in place "
                    "between the forward and the backward pass (an optimizer step or a weight update "
                    "before backward()): the backward pass evaluates the block again and the forward's "
                    "values are gone. Call backward() before changing the parameters"
                )

    @contextlib.contextmanager
    def restored(self, index: int):
        """Evaluate block ``index`` with the forward's parameter and buffer tensors and training flags."""
        self.check(index)
        swapped = [(d, name, t, d.get(name, _MISSING)) for d, name, t in self.slots if d.get(name) is not t]
        flipped = [(m, flag) for m, flag in self.training if m.training != flag]
        if not swapped and not flipped:
            yield
            return
        try:
            for d, name, t, _ in swapped:
                d[name] = t
            for m, flag in flipped:
                m.training = flag
            yield
        finally:
            for d, name, _, now in swapped:
                if now is _MISSING:
                    del d[name]
                else:
                    d[name] = now
            for m, flag in flipped:
                m.training = not flag


def block_states(blocks) -> list[BlockState]:
    """The :class:`BlockState` of each block, one shared by every appearance of the same block."""
    states = {b: BlockState.of(b) for b in dict.fromkeys(blocks)}
    return [states[b] for b in blocks]
