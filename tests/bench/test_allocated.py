"""The allocator-level memory count of the benchmarks, and the memory claims it makes testable."""

import pytest
import torch

import mode
from mode.bench.allocated import TensorPeak


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
