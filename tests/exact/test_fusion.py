"""The compiled (fused) exact kernels against the eager ones: bit for bit, on a few shapes."""

import os
import subprocess
import sys

import pytest
import torch

import mode
from mode.exact import compile_seconds, fusion, set_compile


def _block(width, dtype):
    layers = torch.nn.Linear(width, 16), torch.nn.Tanh(), torch.nn.Linear(16, width)
    return torch.nn.Sequential(*layers).to(dtype)


def _train_step(dtype, gamma, shape, compiled):
    previous = set_compile(compiled)
    try:
        torch.manual_seed(1)
        width = shape[-1]
        blocks = [_block(width, dtype) for _ in range(12)]
        x0 = (torch.randn(*shape, dtype=dtype) * 1e-6).requires_grad_()
        net = mode.MomentumNet(blocks, gamma=gamma)
        x, v = net(x0, return_velocity=True)
        back = net.inverse(x, v)[0]
        (x.square().sum() + v.sum()).backward()
        grads = [x0.grad] + [p.grad for b in blocks for p in b.parameters()]
        return [x.detach(), v.detach(), back, *grads]
    finally:
        set_compile(previous)


@pytest.mark.parametrize(
    ("dtype", "gamma", "shape"),
    [
        (torch.float32, 0.9, (5, 8)),
        (torch.float64, 0.3, (3, 4, 8)),
        pytest.param(torch.float32, 0.99, (7, 8), marks=pytest.mark.slow),
    ],
)
def test_compiled_kernels_agree_with_eager_bit_for_bit(dtype, gamma, shape):
    compiled = _train_step(dtype, gamma, shape, compiled=True)
    eager = _train_step(dtype, gamma, shape, compiled=False)
    assert all(torch.equal(a, b) for a, b in zip(compiled, eager, strict=True))
    assert {"momentum_forward", "momentum_undo_position", "momentum_undo_velocity"} <= set(compile_seconds())


def test_a_failing_compiler_falls_back_to_the_eager_kernel_with_a_warning(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(fusion, "_build", broken)

    @fusion.fused
    def double(x):
        return x * 2

    previous = set_compile(True)
    try:
        with pytest.warns(RuntimeWarning, match="eager kernels"):
            assert torch.equal(double(torch.ones(2)), torch.full((2,), 2.0))
        assert torch.equal(double(torch.ones(2)), torch.full((2,), 2.0))  # no second warning needed
    finally:
        set_compile(previous)


def test_compile_switch_is_read_from_the_environment():
    for value, expected in (("0", "False"), ("1", "True")):
        out = subprocess.run(
            [sys.executable, "-c", "import mode.exact; print(mode.exact.compile_enabled())"],
            env={**os.environ, "MODE_COMPILE": value},
            capture_output=True,
            text=True,
            check=True,
        )
        assert out.stdout.strip() == expected


def test_a_kernel_first_compiled_on_aliased_arguments_treats_them_as_distinct():
    @fusion.fused
    def difference(a, b):
        return a - b

    previous = set_compile(True)
    try:
        t, u = torch.arange(4.0), torch.ones(4)
        assert torch.equal(difference(t, t), torch.zeros(4))
        assert torch.equal(difference(t, u), t - u)
    finally:
        set_compile(previous)


class _Compiled:
    """A stand-in for a compiled graph: the wrapped call doubles its input, ``runner`` is the raw one."""

    def __init__(self, runner):
        self.current_callable = runner

    def __call__(self, t):
        return t * 2


def test_the_raw_runner_replaces_the_wrapped_kernel_only_where_it_computes_the_same():
    t = torch.arange(3.0)
    same = _Compiled(lambda given: [given[0] * 2])
    direct = fusion._unwrapped(same, [t])
    assert direct is not same and torch.equal(direct(t), t * 2)
    other = _Compiled(lambda given: [given[0] * 3])
    assert fusion._unwrapped(other, [t]) is other
    writes_input = _Compiled(lambda given: [given[0].mul_(2)])  # right output, but changes its input
    assert fusion._unwrapped(writes_input, [t]) is writes_input
    assert torch.equal(t, torch.arange(3.0))  # checked on copies
