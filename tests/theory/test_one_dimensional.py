"""Tests of mode.theory.one_dimensional: floors of first-order flows, crossing momentum flows, checks."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mode.theory import one_dimensional as od
from mode.theory.linear_maps import m_eps, psi
from mode.theory.registry import CLAIMS

ONE_D_IDS = ["1D-1", "1D-2", "1D-3"]


@pytest.mark.parametrize("claim_id", ONE_D_IDS)
def test_registered_check_passes(claim_id):
    claim = CLAIMS[claim_id]
    assert claim.doc == "theory/one_dimensional_flows.md"
    verdict = claim.check()
    assert isinstance(verdict.passed, bool) and isinstance(verdict.measured, float)
    assert verdict.passed, verdict


SABOTAGE = {
    "1D-1": ("first_order_floor", lambda target=od._minus_cube: 0.15),
    "1D-2": ("m_eps_table", lambda eps_values, T=1.0: [(e, -0.1, -1.0) for e in eps_values]),
    "1D-3": ("linear_momentum_fit", lambda target, eps, T=1.0: (0.02, -0.6, -9.0)),
}


@pytest.mark.parametrize("claim_id", ONE_D_IDS)
def test_registered_check_can_fail(claim_id, monkeypatch):
    monkeypatch.setattr(od, *SABOTAGE[claim_id])
    assert not CLAIMS[claim_id].check().passed


def test_first_order_floor_values():
    assert od.first_order_floor() == pytest.approx(1 / 7, abs=1e-14)
    assert od.first_order_floor(lambda x: -x) == pytest.approx(1 / 3, abs=1e-14)
    assert od.first_order_floor(lambda x: np.full_like(x, 2.0)) == pytest.approx(0.0, abs=1e-14)


def test_first_order_floor_rejects_increasing_target():
    with pytest.raises(ValueError, match="non-increasing"):
        od.first_order_floor(lambda x: x**3)


def test_monotone_fit_mse():
    assert od.monotone_fit_mse() == pytest.approx(1 / 7, abs=1e-8)
    assert od.monotone_fit_mse(lambda x: x**3) == 0.0
    # |x|: the isotonic fit is the constant a on [-1, a] and |x| after, where the pooled mean of |x| over
    # [-1, a] equals a, i.e. a = sqrt(2) - 1; its MSE is (1/3 - a + a^2 + a^3/3) / 2.
    a = np.sqrt(2) - 1
    assert od.monotone_fit_mse(np.abs) == pytest.approx((1 / 3 - a + a**2 + a**3 / 3) / 2, abs=1e-7)
    with pytest.raises(ValueError, match="n_grid"):
        od.monotone_fit_mse(n_grid=1)


def test_linear_momentum_fit():
    mse, slope, lam = od.linear_momentum_fit(eps=1.0)
    assert (mse, slope) == pytest.approx((4 / 175, -0.6), abs=1e-12)
    assert psi(lam, 1.0) == pytest.approx(slope, abs=1e-12)
    mse, slope, lam = od.linear_momentum_fit(eps=0.2)
    assert slope == m_eps(0.2)
    assert psi(lam, 0.2) == pytest.approx(slope, abs=1e-12)
    assert mse == pytest.approx(slope**2 / 3 + 2 * slope / 5 + 1 / 7, abs=1e-13) and mse < 1 / 7


@settings(max_examples=60, deadline=None)
@given(y=arrays(np.float64, st.integers(1, 60), elements=st.floats(-10, 10, allow_nan=False)))
def test_pool_adjacent_violators_is_the_isotonic_fit(y):
    fit = od._pool_adjacent_violators(y)
    assert np.all(np.diff(fit) >= -1e-12)
    assert fit.mean() == pytest.approx(y.mean(), abs=1e-9)
    # Sorting is one non-decreasing candidate; the isotonic fit is at least as close.
    assert np.sum((fit - y) ** 2) <= np.sum((np.sort(y) - y) ** 2) + 1e-9


def test_wrong_m_eps_fails_1d3(monkeypatch):
    # The check's expected slope comes from its own minimisation, so a wrong m_eps behind
    # linear_momentum_fit shows.
    right = od.m_eps
    monkeypatch.setattr(od, "m_eps", lambda eps, T=1.0: 0.99 * right(eps, T))
    assert not CLAIMS["1D-3"].check().passed


@pytest.mark.parametrize("threshold", [1.0, 0.9555])
def test_wrong_threshold_fails_1d3(monkeypatch, threshold):
    monkeypatch.setattr(od, "THRESHOLD_EPS", threshold)
    assert not CLAIMS["1D-3"].check().passed


@pytest.mark.parametrize("T", [1.0, 3.0])
@pytest.mark.parametrize("eps", [1e-3, 0.05, 0.5, od.THRESHOLD_EPS, 20.0, 1e3])
def test_least_flow_slope_is_m_eps(eps, T):
    assert od._least_flow_slope(eps, T) == pytest.approx(m_eps(eps, T), rel=1e-14, abs=1e-300)


def test_threshold():
    # m_eps depends on T / eps only, and crosses -3/5 at THRESHOLD_EPS (to half a unit of its last digit).
    for T in (1.0, 2.0):
        assert m_eps((od.THRESHOLD_EPS - 5e-9) * T, T) > -3 / 5 > m_eps((od.THRESHOLD_EPS + 5e-9) * T, T)
