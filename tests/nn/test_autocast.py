"""What exactness means under torch.autocast (bf16 on the CPU).

The state (x, v) stays in float32 fixed point, so the reconstruction is bit-exact and the backward replays
every block under the forward's autocast state: the gradients are the exact vector-Jacobian products of
the bf16 blocks at the forward's states. They equal autograd's only to bf16 precision, because autograd
keeps float32 states and bf16 rounding amplifies the 2**-32 difference between the two.
"""

import pytest
import torch

from mode.nn import MomentumNet, ReconstructionError
from mode.nn.layer_state import CallMode


def blocks(depth=20):
    torch.manual_seed(0)
    return [
        torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 16))
        for _ in range(depth)
    ]


def run(net, x):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, v = net(x, return_velocity=True)
    assert out.dtype == torch.float32
    return out, v


def test_bf16_reconstruction_is_bit_exact_and_gradients_match_to_bf16_precision():
    stack = blocks()
    x = torch.randn(8, 16, requires_grad=True)
    grads = []
    for backprop in ("autograd", "reversible"):
        net = MomentumNet(stack, gamma=0.9, backprop=backprop)
        net.zero_grad()
        x.grad = None
        out, v = run(net, x)
        out.square().sum().backward()
        grads.append(torch.cat([x.grad.flatten()] + [p.grad.flatten() for p in net.parameters()]))
    x_rec, v_rec = net.inverse(out, v)
    assert torch.equal(x_rec, x) and torch.equal(v_rec, torch.zeros_like(x))
    error = ((grads[1] - grads[0]).norm() / grads[0].norm()).item()
    assert error <= 2e-2, error  # bf16 keeps 8 bits: 2**-8 = 3.9e-3


def test_replay_without_the_forward_autocast_state_would_not_be_exact(monkeypatch):
    net = MomentumNet(blocks(), gamma=0.9)
    out, _ = run(net, torch.randn(8, 16, requires_grad=True))
    applied = CallMode.applied

    def without_autocast(self, grad_enabled=None):
        return applied(CallMode(self.grad_enabled, ()), grad_enabled)

    monkeypatch.setattr(CallMode, "applied", without_autocast)
    with pytest.raises(ReconstructionError):
        out.sum().backward()
