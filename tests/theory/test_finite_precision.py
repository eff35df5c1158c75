"""mode.theory.finite_precision: bounds, measurements, and checks that fail when their claim is false."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mode.exact import BitStack
from mode.exact.bit_stack import chunk_width
from mode.nn import MomentumNet
from mode.theory import finite_precision as fp
from mode.theory.fields import TanhField, frozen
from tests.theory.support import refuted


def test_growth_rate_band_and_its_validity():
    low, high = fp.growth_rate_band(0.5, 1.0, 0.0)
    assert low == high == pytest.approx(math.log(2))
    with pytest.raises(ValueError, match="lipschitz"):
        fp.growth_rate_band(0.9, 1.0, 0.1)


def test_float_reversal_error_grows_with_depth():
    field = frozen(TanhField(8, seed=0, lipschitz=0.01))
    x0 = torch.randn(16, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    errors = [
        fp.float_reversal_error(MomentumNet([field] * L, gamma=0.5, backprop="autograd"), x0)
        for L in (1, 20, 40)
    ]
    assert errors[0] < 1e-15 < errors[1] < errors[2]
    assert errors[2] / errors[1] == pytest.approx(2.0**20, rel=0.5)


def test_bits_destroyed_by_halving():
    # gamma = 1/2 on an even-aligned window: every image has exactly 2 preimages per multiply.
    assert fp.bits_destroyed(1, 1, 1) == pytest.approx(1.0, abs=1e-5)


@given(
    k=st.integers(1, 55),
    numerator=st.sampled_from(["one", "max", "random", "near_max"]),
    seed=st.integers(0, 2**32 - 1),
    depth=st.integers(1, 300),
)
@settings(max_examples=60, deadline=None)
def test_stack_bounds_hold_after_every_multiply(k, numerator, seed, depth):
    import random

    rng = random.Random(seed)
    n = {
        "one": 1,
        "max": (1 << k) - 1,
        "random": rng.randrange(1, 1 << k) | 1,
        "near_max": max(1, (1 << k) - rng.randint(1, 1000)) | 1,
    }[numerator]
    if n >= 1 << k:
        n = (1 << k) - 1
    stack = BitStack(torch.zeros(3, dtype=torch.int64))
    v = torch.tensor([rng.randrange(-(2**40), 2**40) for _ in range(3)])
    for j in range(1, depth + 1):
        v = stack.multiply(v, n, k)
        bits = stack.bits_per_coordinate()
        chunks, remainder = divmod(bits - 64, chunk_width(k))
        low, high = fp.stack_bounds(j, n, k, chunks)
        assert remainder == 0 and low <= bits < high, (n, k, j, bits, low, high)


def test_naive_word_bound_is_exceeded():
    # The "L log2(d/n) bits plus one word" is not what the stack guarantees (see FP-4).
    net = MomentumNet([lambda x: torch.tanh(x)] * 200, gamma=math.nextafter(0.2, 1), gamma_bits=55)
    out = net(torch.randn(2, 4))  # noqa: F841  (the stack lives as long as the output)
    bits = net.bit_stack.bits_per_coordinate()
    assert bits > 64 + 200 * math.log2(2**net.k / net.n)


def test_wrong_rate_fails_fp1(monkeypatch):
    right = fp.growth_rate_band
    monkeypatch.setattr(fp, "growth_rate_band", lambda g, h, lip: tuple(2 * b for b in right(g, h, lip)))
    assert refuted("FP-1")


def test_wrong_rate_fails_fp2(monkeypatch):
    right = fp.growth_rate_band
    monkeypatch.setattr(fp, "growth_rate_band", lambda g, h, lip: tuple(0.8 * b for b in right(g, h, lip)))
    assert refuted("FP-2")


def test_overstated_information_loss_fails_fp3(monkeypatch):
    right = fp.information_bounds
    monkeypatch.setattr(
        fp, "information_bounds", lambda n, k, s, w: (right(n, k, s, w)[0] + 0.2, right(n, k, s, w)[1])
    )
    assert refuted("FP-3")


def test_understated_information_loss_fails_fp3(monkeypatch):
    monkeypatch.setattr(fp, "information_bounds", lambda n, k, s, w: (0.0, s * math.log2((1 << k) / n)))
    assert refuted("FP-3")


@pytest.mark.parametrize("which", ["naive", "lower"])
def test_wrong_stack_bound_fails_fp4(monkeypatch, which):
    right = fp.stack_bounds

    def wrong(depth, n, k, chunks):
        low, high = right(depth, n, k, chunks)
        if which == "naive":
            return low, 64.5 + depth * math.log2(2**k / n)
        return low + 1.5, high

    monkeypatch.setattr(fp, "stack_bounds", wrong)
    assert refuted("FP-4")
