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
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch


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
    buffers: list[torch.Tensor] | None


def _buffer_slots(block) -> list[tuple[torch.nn.Module, str]]:
    """Every ``(owner, name)`` buffer slot of ``block``, so buffers can be swapped, not written into."""
    if not isinstance(block, torch.nn.Module):
        return []
    return [(m, name) for m in block.modules() for name, b in m._buffers.items() if b is not None]


class Recorder:
    """Context for one block call in a forward pass; ``state`` is the :class:`LayerState` to replay."""

    def __init__(self, block, device: torch.device):
        self.block, self.device = block, device
        self.state: LayerState | None = None

    def __enter__(self) -> Recorder:
        self._rng = _rng_states(self.device)
        self._buffers = [m._buffers[name].detach().clone() for m, name in _buffer_slots(self.block)]
        return self

    def __exit__(self, *exc) -> None:
        rng = None if _same(self._rng, _rng_states(self.device)) else self._rng
        after = [m._buffers[name].detach() for m, name in _buffer_slots(self.block)]
        buffers = None if _same(self._buffers, after) else self._buffers
        # None when the call changed nothing: a deterministic, stateless block costs no memory per layer.
        self.state = None if rng is None and buffers is None else LayerState(rng, buffers)


def capture(block, device: torch.device) -> Recorder:
    """``with capture(block, device) as rec: out = block(x)``; then ``rec.state`` replays that call."""
    return Recorder(block, device)


@contextlib.contextmanager
def replayed(block, state: LayerState | None, device: torch.device):
    """Run the body from the generator and buffer state of the recorded call; restore both afterwards.

    Buffers are swapped for fresh copies of the recorded values rather than overwritten, so the tensors
    that the forward's own graph saved (BatchNorm saves its running statistics) keep their version, and
    the copies that the replayed graph saves are never touched again.
    """
    if state is None or (state.rng is None and state.buffers is None):
        yield
        return
    rng_now = _rng_states(device) if state.rng is not None else None
    slots = _buffer_slots(block) if state.buffers is not None else []
    buffers_now = [m._buffers[name] for m, name in slots]
    try:
        if state.rng is not None:
            _set_rng_states(device, state.rng)
        for (m, name), saved in zip(slots, state.buffers or [], strict=True):
            m._buffers[name] = saved.clone()
        yield
    finally:
        if rng_now is not None:
            _set_rng_states(device, rng_now)
        for (m, name), now in zip(slots, buffers_now, strict=True):
            m._buffers[name] = now
