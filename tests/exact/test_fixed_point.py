"""Fixed-point encoding, the range guard and the rational form of gamma."""

import math
from fractions import Fraction

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mode.exact import LIMIT_BITS, FixedPointRangeError, RangeGuard, dequantize, quantize, rational_gamma


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.integers(-(2**52), 2**52), min_size=1, max_size=16),
    st.integers(0, 40),
)
def test_grid_points_round_trip_exactly(ints, frac_bits):
    n = torch.tensor(ints, dtype=torch.int64)
    y = dequantize(n, frac_bits, torch.float64)
    assert y.tolist() == [m * 2.0**-frac_bits for m in ints]
    assert torch.equal(quantize(y, frac_bits), n)


def test_quantize_rounds_to_nearest_and_ties_to_even():
    y = torch.tensor([0.25, 0.75, 0.5, 1.5, 2.5, -0.5, -1.5, -0.75], dtype=torch.float32)
    assert quantize(y, 0).tolist() == [0, 1, 0, 2, 2, 0, -2, -1]
    assert quantize(y, 1).tolist() == [0, 2, 1, 3, 5, -1, -3, -2]


def test_dequantize_casts_to_requested_dtype():
    out = dequantize(torch.tensor([3, -5]), 2, torch.float32)
    assert out.dtype == torch.float32
    assert out.tolist() == [0.75, -1.25]


def test_negative_frac_bits_are_rejected():
    with pytest.raises(ValueError, match="frac_bits"):
        quantize(torch.zeros(1), -1)


@pytest.mark.parametrize("frac_bits", [0, 20, 40])
def test_guard_accepts_values_just_inside_the_range(frac_bits):
    edge = 2.0 ** (LIMIT_BITS - frac_bits) * (1 - 2.0**-52)
    guard = RangeGuard()
    y = torch.tensor([edge, -edge, 0.0, 1.0], dtype=torch.float64)
    guard.check_float(y, frac_bits)
    guard.check_int(quantize(y, frac_bits))
    guard.check_int(torch.tensor([2**LIMIT_BITS - 1, -(2**LIMIT_BITS)]))
    guard.raise_if_violated("inside")


@pytest.mark.parametrize("frac_bits", [0, 20, 40])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_guard_rejects_floats_at_the_range_edge(frac_bits, sign):
    guard = RangeGuard()
    guard.check_float(torch.tensor([0.0, sign * 2.0 ** (LIMIT_BITS - frac_bits)]), frac_bits)
    with pytest.raises(FixedPointRangeError) as info:
        guard.raise_if_violated("layer 3")
    message = str(info.value)
    assert "layer 3" in message
    assert f"2**{LIMIT_BITS - frac_bits}" in message
    assert f"{2.0 ** (LIMIT_BITS - frac_bits):.6g}" in message
    assert "not seen" in message
    assert "frac_bits" in message and "normalise" in message


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_guard_rejects_non_finite_floats(bad):
    guard = RangeGuard()
    guard.check_float(torch.tensor([1.0, bad], dtype=torch.float32), 16)
    with pytest.raises(FixedPointRangeError, match="were seen") as info:
        guard.raise_if_violated("forward")
    assert f"2**{LIMIT_BITS - 16}" in str(info.value)


@pytest.mark.parametrize("value", [2**LIMIT_BITS, -(2**LIMIT_BITS) - 1, 2**63 - 1, -(2**63)])
def test_guard_rejects_integers_out_of_range(value):
    guard = RangeGuard()
    guard.check_int(torch.tensor([0, value], dtype=torch.int64))
    with pytest.raises(FixedPointRangeError, match=rf"2\*\*{LIMIT_BITS}"):
        guard.raise_if_violated("backward")


def test_guard_remembers_a_violation_across_later_clean_checks():
    guard = RangeGuard()
    guard.check_int(torch.tensor([2**62]))
    guard.check_int(torch.tensor([0]))
    guard.check_float(torch.tensor([0.5]), 8)
    with pytest.raises(FixedPointRangeError):
        guard.raise_if_violated("step")


def test_unused_guard_does_not_raise():
    RangeGuard().raise_if_violated("nothing checked")


@settings(max_examples=200, deadline=None)
@given(st.floats(0.0, 1.0, exclude_max=True), st.sampled_from([1e-3, 1e-6, 1e-9, 1e-12]))
def test_rational_gamma_is_the_coarsest_dyadic_within_tolerance(gamma, rel_tol):
    try:
        n, k = rational_gamma(gamma, rel_tol)
    except ValueError:
        # Only gamma so close to 1 that 55 bits cannot resolve rel_tol * (1 - gamma) may fail.
        assume(False)
    exact = Fraction(gamma)
    tol = Fraction(rel_tol) * (1 - exact)
    assert 0 <= k <= 55
    assert abs(Fraction(n, 2**k) - exact) <= tol
    assert Fraction(n, 2**k) < 1
    assert n % 2 == 1 or (n, k) == (0, 0)
    if k > 0:
        coarser = round(exact * 2 ** (k - 1))
        assert abs(Fraction(coarser, 2 ** (k - 1)) - exact) > tol


def test_rational_gamma_known_values():
    assert rational_gamma(0.0) == (0, 0)
    assert rational_gamma(0.5) == (1, 1)
    assert rational_gamma(0.75) == (3, 2)
    # round(0.9 * 2**k) / 2**k for k = 0..5 is 1, 1, 1, 7/8, 7/8, 29/32: only 29/32 is within 0.1 * 0.1.
    assert rational_gamma(0.9, rel_tol=0.1) == (29, 5)


@pytest.mark.parametrize("gamma", [-0.1, 1.0, 1.5, math.nan, math.inf])
def test_rational_gamma_rejects_gamma_outside_unit_interval(gamma):
    with pytest.raises(ValueError, match=r"gamma.*\[0, 1\)"):
        rational_gamma(gamma)


def test_rational_gamma_reports_unreachable_tolerance():
    with pytest.raises(ValueError, match="rel_tol.*max_bits"):
        rational_gamma(1 - 1e-12, max_bits=20)


@pytest.mark.parametrize("rel_tol", [-1e-9, 1.0, math.nan])
def test_rational_gamma_rejects_bad_tolerance(rel_tol):
    with pytest.raises(ValueError, match="rel_tol"):
        rational_gamma(0.9, rel_tol)


@given(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=6), st.integers(1, 3))
def test_guard_flags_exactly_the_integers_outside_the_range(values, repeats):
    """Any number of clean checks on the same shape never hides one bad value, and never invents one."""
    guard = RangeGuard()
    for _ in range(repeats):
        guard.check_int(torch.zeros(len(values), dtype=torch.int64))
    guard.check_int(torch.tensor(values, dtype=torch.int64))
    bad = any(not -(2**LIMIT_BITS) <= v < 2**LIMIT_BITS for v in values)
    if bad:
        with pytest.raises(FixedPointRangeError):
            guard.raise_if_violated("property")
    else:
        guard.raise_if_violated("property")
