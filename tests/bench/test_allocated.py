"""The allocator-level memory count of the benchmarks, and the memory claims it makes testable."""

import pytest
import torch

import mode
from mode.bench.allocated import TensorPeak
from mode.exact.fusion import compiling


def test_counts_allocations_and_frees_exactly():
    held = torch.empty(7, dtype=torch.float64)
    with TensorPeak() as peak:
        a = torch.empty(1000, dtype=torch.float64)
        b = torch.empty(500, dtype=torch.float32)
        del a
        c = torch.empty(10, dtype=torch.int64)
        del held  # allocated before the block: the profiler sees no free of it
    assert peak.peak_bytes == 8000 + 2000
    assert peak.net_bytes == 2000 + 80
    del b, c


def test_an_error_inside_propagates():
    with pytest.raises(ZeroDivisionError), TensorPeak():
        torch.empty(3)
        _ = 1 / 0


def _solve_peak(backprop: str, steps: int) -> int:
    torch.manual_seed(0)
    field = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 8))
    x0 = torch.randn(32, 8, requires_grad=True)

    def step():
        solution = mode.odeint(
            lambda x, t: field(x), x0, eps=0.1, method="leapfrog", backprop=backprop, steps=steps
        )
        (solution.x[-1] ** 2).mean().backward()

    step()  # allocates the .grad tensors, which the measured pass then only accumulates into
    with TensorPeak() as peak:
        step()
    return peak.peak_bytes


def test_reversible_solve_memory_is_flat_in_steps_and_autograd_is_not():
    reversible = [_solve_peak("reversible", n) for n in (16, 256)]
    autograd = [_solve_peak("autograd", n) for n in (16, 256)]
    # Stored trajectory: autograd keeps a few states per step (32 x 8 float32 = 1 KiB each).
    assert autograd[1] > 8 * autograd[0]
    # The exact state, the bit stack (T / (eps ln 2) bits per coordinate in all, whatever the steps) and
    # one step's temporaries.
    assert reversible[1] <= 1.2 * reversible[0]


def test_reversible_backward_holds_one_layer_vjp_besides_the_adjoints_and_the_rebuilt_input():
    # Batch = width, no biases: every float tensor of the step has the same size s. Compiled: the eager
    # integer kernels hold int64 temporaries that the fused ones never allocate.
    torch.manual_seed(0)
    d = 32
    s = d * d * 4
    blocks = [
        torch.nn.Sequential(
            torch.nn.Linear(d, d, bias=False), torch.nn.Tanh(), torch.nn.Linear(d, d, bias=False)
        )
        for _ in range(3)
    ]
    net = mode.MomentumNet(blocks, gamma=0.9, backprop="reversible")
    x = torch.randn(d, d, requires_grad=True)
    with compiling(True):
        # Compiles the kernels and allocates the .grad tensors, which the measured pass accumulates into.
        net(x).sum().backward()
        out = net(x)
        grad = torch.ones_like(out)
        with TensorPeak() as backward:
            out.backward(grad)
    given, cotangent = torch.randn(d, d, requires_grad=True), torch.randn(d, d)
    with TensorPeak() as layer:
        torch.autograd.grad(blocks[0](given), [given, *blocks[0].parameters()], cotangent)
    # The adjoints (x~, v~: 2s) and the rebuilt x_i (s) besides what autograd needs for one block's
    # vector-Jacobian product (5s here), and a few scalars (exponents, scales); a copy of the cotangent
    # scaled by 1 - gamma would be one s more.
    assert layer.peak_bytes == 5 * s
    assert layer.peak_bytes + 3 * s <= backward.peak_bytes <= layer.peak_bytes + 3 * s + 256
