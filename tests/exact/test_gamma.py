"""The rational form of gamma."""

import math
from fractions import Fraction

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mode.exact import rational_gamma


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
