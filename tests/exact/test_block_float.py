"""Block floating point: encoding, exponent choice, exact rescaling, and the float quotient estimate."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mode.exact import BitStack, FixedPointRangeError, decode, encode
from mode.exact.bit_stack import pop_bits_word, push_bits_word
from mode.exact.block_float import (
    HYSTERESIS,
    MANTISSA_BITS,
    MIN_EXPONENT,
    needed_exponent,
    next_exponent,
    power_of_two,
    rescale,
    unscale,
)
from mode.exact.wide import ESTIMATE_MIN_DIVISOR, floor_divmod_estimated


@pytest.mark.parametrize("blocks, exponents", [("tensor", (1, 1)), ("sample", (3, 1))])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", [1e-280, 1e-30, 1e-12, 1.0, 1e12, 1e30])
def test_encode_keeps_relative_precision_at_every_scale(dtype, scale, blocks, exponents):
    if scale * 10 > torch.finfo(dtype).max / 4 or scale < torch.finfo(dtype).tiny:
        pytest.skip("scale outside the dtype's normal range")
    torch.manual_seed(0)
    # samples a factor 4 apart: within the spare mantissa bits of both dtypes, so both block kinds hold them
    y = (torch.randn(3, 7, dtype=torch.float64) * torch.tensor([[1.0], [0.25], [4.0]]) * scale).to(dtype)
    mantissa, exponent = encode(y, blocks)
    assert exponent.shape == exponents
    top = mantissa.abs().amax(dim=1 if blocks == "sample" else (0, 1))
    # every block's largest mantissa fills the top bits: 2**59 <= max |Y| < 2**60 (exact powers aside)
    assert bool(((top >= 2 ** (MANTISSA_BITS - 1)) & (top <= 2**MANTISSA_BITS)).all())
    # float32 / float64 values near the sample's maximum are on the grid: decode gives them back exactly
    assert torch.equal(decode(mantissa, power_of_two(exponent), dtype), y)


def test_encode_of_tensors_without_a_sample_dimension():
    for y in (torch.tensor(3.0), torch.tensor([1e-20, 2e-20])):
        for blocks in ("tensor", "sample"):
            mantissa, exponent = encode(y, blocks)
            assert exponent.shape == (1,) * y.dim()
            assert torch.equal(decode(mantissa, power_of_two(exponent), y.dtype), y)


def test_a_shared_exponent_keeps_precision_relative_to_the_tensor_and_per_sample_to_each_sample():
    # float64 samples 2**-40 apart: one exponent leaves the small sample 60 - 40 = 20 bits, its own 60
    y = torch.tensor([[1.0 + 2.0**-50, 3.0], [2.0**-40 * (1.0 + 2.0**-50), 0.0]], dtype=torch.float64)
    shared, exponent = encode(y, "tensor")
    assert not torch.equal(decode(shared, power_of_two(exponent), y.dtype), y)
    assert torch.equal(decode(shared, power_of_two(exponent), y.dtype)[0], y[0])
    own, exponent = encode(y, "sample")
    assert torch.equal(decode(own, power_of_two(exponent), y.dtype), y)


def test_encode_names_the_allowed_block_kinds():
    with pytest.raises(ValueError, match="exponents must be one of .'tensor', 'sample'."):
        encode(torch.ones(2, 2), "row")


@pytest.mark.parametrize("bad", [math.nan, math.inf, 1e38])
def test_encode_refuses_values_beyond_the_range(bad):
    with pytest.raises(FixedPointRangeError, match="quarter of the largest"):
        encode(torch.tensor([[1.0, bad]], dtype=torch.float32))


@settings(max_examples=200, deadline=None)
@given(st.floats(0.0, 2.0**1000, allow_subnormal=False))
def test_needed_exponent_is_the_least_that_holds_the_bound(bound):
    t = int(needed_exponent(torch.tensor([bound], dtype=torch.float64)))
    assert t >= MIN_EXPONENT
    if bound > 0:
        assert bound < 2.0 ** (t + MANTISSA_BITS)
        if t > MIN_EXPONENT:
            assert bound >= 2.0 ** (t - 1 + MANTISSA_BITS)


def test_next_exponent_keeps_within_the_hysteresis_band_and_relabels_empty_samples():
    bound = torch.tensor([2.0**70, 2.0**70, 2.0**70, 2.0**70, 2.0**70], dtype=torch.float64)
    # needed: 70 - 60 + 1 = 11; kept from 11 to 11 + HYSTERESIS, else moved to 11
    current = torch.tensor([11, 10, 11 + HYSTERESIS, 12 + HYSTERESIS, 3])
    empty = torch.tensor([False, False, False, False, True])
    new, old = next_exponent(bound, current, empty)
    assert new.tolist() == [11, 11, 11 + HYSTERESIS, 11, 11]
    assert old.tolist() == [11, 10, 11 + HYSTERESIS, 12 + HYSTERESIS, 11]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.integers(-(2**60), 2**60), min_size=4, max_size=4),
    st.lists(st.integers(-1022, 900), min_size=2, max_size=2),
    st.lists(st.integers(-1022, 900), min_size=2, max_size=2),
)
def test_rescale_is_undone_exactly(values, old, new):
    y = torch.tensor(values, dtype=torch.int64).reshape(2, 2)
    old, new = torch.tensor(old).reshape(2, 1), torch.tensor(new).reshape(2, 1)
    # a left shift must fit: only move a sample to a finer exponent if its values allow it
    fits = y.abs().amax(dim=1, keepdim=True) < 2**60 >> (old - new).clamp(min=0, max=62)
    new = torch.where(fits, new, old.clamp(min=new))
    stack = BitStack(y)
    moved = rescale(stack, y, old, new)
    # the moved mantissas represent the values up to one unit of the new grid
    shift = (new - old).clamp(min=0)
    assert bool(
        (
            (moved << 0)
            == torch.where(shift >= 62, torch.zeros_like(y), y >> shift.clamp(max=61))
            << (old - new).clamp(min=0)
        ).all()
    )
    assert torch.equal(unscale(stack, moved, old, new), y)
    assert stack.is_empty()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(-(2**61) + 1, 2**61 - 1), st.integers(0, 90)), min_size=1, max_size=8))
def test_push_bits_round_trips_every_shift(rows):
    y = torch.tensor([r[0] for r in rows])
    shift = torch.tensor([r[1] for r in rows])
    word = torch.zeros_like(y)
    word2, pushed = push_bits_word(word, y, shift)
    assert torch.equal(pushed, torch.where(shift >= 62, 0, y >> shift.clamp(max=61)))
    back_word, back = pop_bits_word(word2, pushed, shift)
    assert torch.equal(back, y) and torch.equal(back_word, word)


divisors = st.one_of(
    st.just(ESTIMATE_MIN_DIVISOR), st.just(2**53 - 1), st.integers(ESTIMATE_MIN_DIVISOR, 2**53 - 1)
)
dividends = st.one_of(st.just(2**63 - 1), st.just(-(2**62)), st.just(0), st.integers(-(2**62), 2**63 - 1))


@settings(max_examples=300, deadline=None)
@given(divisors, st.lists(dividends, min_size=1, max_size=8))
def test_float_quotient_estimate_is_exact_over_the_proved_range(n, values):
    a = torch.tensor(values, dtype=torch.int64)
    quotient, remainder = floor_divmod_estimated(a, n)
    assert quotient.tolist() == [v // n for v in values]
    assert remainder.tolist() == [v % n for v in values]


def test_float_quotient_estimate_at_multiples_of_the_divisor():
    # the floor estimate is off by one exactly around multiples of n, where a - 1, a, a + 1 switch quotient
    for n in (ESTIMATE_MIN_DIVISOR, 3865470566, 2**52 + 1, 2**53 - 1):
        q = (2**63 - 1) // n
        values = [m * n + d for m in (q, q - 1, 1, -1, -((2**62) // n)) for d in (-1, 0, 1)]
        values = [v for v in values if -(2**62) <= v < 2**63]
        quotient, remainder = floor_divmod_estimated(torch.tensor(values), n)
        assert quotient.tolist() == [v // n for v in values], n
        assert remainder.tolist() == [v % n for v in values], n
