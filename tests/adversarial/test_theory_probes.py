"""Hostile inputs to the linear-map theory: extreme targets and masses.

Each probe asserts a correct result or an error that names the argument and its valid range.
"""

import math

import numpy as np
import pytest

from mode.theory.linear_maps import (
    _psi_and_slope,
    m_eps,
    m_eps_table,
    momentum_flow_matrix,
    momentum_logarithm,
    psi,
)


def test_momentum_logarithm_of_a_target_spanning_the_float_range():
    D = np.diag([1e300, 1e-300])
    A = momentum_logarithm(D, 0.5)
    assert np.all(np.isfinite(A)) and A[0, 1] == A[1, 0] == 0
    values = psi(np.diag(A), 0.5)
    assert math.isclose(values[0], 1e300, rel_tol=1e-8)
    # The documented guarantee is normwise, relative to ||D||: the tiny eigenvalue is met to ~1e-16.
    assert abs(values[1]) < 1e-12


def test_momentum_logarithm_names_a_target_past_float_overflow():
    with pytest.raises(
        ValueError, match=r"D has an eigenvalue of size about 1e\+308.*float64 overflow.*scale D"
    ):
        momentum_logarithm(np.diag([1e308, 1.0]), 0.5)


def test_m_eps_of_a_huge_mass_is_minus_one():
    # b = T / (2 eps) ~ 5e-301: m_eps = -1 + O(b), which rounds to -1.
    assert m_eps(1e300) == -1.0
    ((eps, value, argmin),) = m_eps_table([1e300])
    assert value == -1.0 and math.isclose(argmin, -(math.pi**2) * 1e300, rel_tol=1e-12)


def test_m_eps_of_a_tiny_mass_underflows_to_minus_zero():
    # T / eps overflows to inf here; the minimum e^{-b}(...) is far below the smallest float.
    value = m_eps(1e-320)
    assert value == 0.0 and math.copysign(1.0, value) == -1.0


@pytest.mark.parametrize("eps", [1e-3, 1.0, 1e10, 1e100])
def test_m_eps_is_psi_at_its_minimiser_across_scales(eps):
    ((_, value, argmin),) = m_eps_table([eps])
    assert -1.0 <= value <= 0.0
    assert math.isclose(float(psi(argmin, eps)), value, rel_tol=1e-9, abs_tol=1e-300)


# ------------------------------------------------------------------ psi across the float range

_MACHINE_EPS = float(np.finfo(float).eps)


def _psi_reference(lam, eps, T):
    r"""psi = e^{-b}(cosh s + b sinh(s)/s), b = T/(2 eps), s = T sqrt(1 + 4 eps lam)/(2 eps), in mpmath.

    The inputs are taken exactly; the caller sets the working precision (``mp.workdps``).
    """
    mp = pytest.importorskip("mpmath")
    lam, eps, T = mp.mpmathify(lam), mp.mpf(eps), mp.mpf(T)
    b = T / (2 * eps)
    s = T * mp.sqrt(1 + 4 * eps * lam) / (2 * eps)
    return mp.exp(-b) * (mp.cosh(s) + (b * mp.sinh(s) / s if s else b))


@pytest.mark.parametrize(("eps", "T"), [(0.05, 1.0), (0.5, 1.0), (3.0, 2.0)])
def test_psi_and_its_slope_are_within_a_few_ulp_of_a_high_precision_reference(eps, T):
    mp = pytest.importorskip("mpmath")
    critical = -1 / (4 * eps)
    lams = [-30.0, -7.3, -2.5, -1.0, -0.1, 0.0, 0.3, 2.0, 12.0, 1 + 3j, -12 - 6j, -0.2 + 9j]
    lams += [critical, critical * (1 + 1e-12), critical * (1 - 1e-9)]
    for lam in lams:
        with mp.workdps(40):
            exact = complex(_psi_reference(lam, eps, T))
            exact_slope = complex(mp.diff(lambda x: _psi_reference(x, eps, T), mp.mpmathify(lam)))
        value = complex(psi(lam, eps, T))
        # The slope drives the Newton steps of momentum_logarithm; psi itself returns only the value.
        slope = complex(_psi_and_slope(lam, eps, T)[1][()])
        # Units of the last place of max(|psi|, 1): the exponents |r T| stay below ~30 here.
        assert abs(value - exact) <= 6 * _MACHINE_EPS * max(abs(exact), 1.0), lam
        assert abs(slope - exact_slope) <= 8 * _MACHINE_EPS * max(abs(exact_slope), 1.0), lam


def test_psi_is_finite_where_its_dominant_exponential_alone_overflows():
    # eps = 1/2, T = 1: r_+ T = sqrt(1 + 2 lam) - 1 = 710 > log(float max) ~ 709.78, and
    # psi = e^{710} (1 + 1/711) / 2 + ... ~ 1.1186e308 still fits.
    mp = pytest.importorskip("mpmath")
    with mp.workdps(40):
        exact = float(_psi_reference(252760.0, 0.5, 1.0).real)
    value = psi(252760.0, 0.5)
    # The relative condition number is ~r_+ T = 710.
    assert math.isfinite(value) and math.isclose(value, exact, rel_tol=1000 * _MACHINE_EPS)


def test_psi_past_float_overflow_is_inf_not_nan():
    assert psi(1e6, 0.5) == math.inf
    assert np.all(psi(np.array([1e6, 1e300, 1.7e308]), 0.5) == math.inf)
    value = psi(1e6 + 0j, 0.5)
    assert value.real == math.inf and value.imag == 0


@pytest.mark.parametrize(
    ("lam", "eps", "T", "limit"),
    [
        # eps >> T: b = T/(2 eps) -> 0 and psi -> cosh(T sqrt(lam / eps)), cos for lam < 0.
        (2e300, 1e300, 1.0, math.cosh(math.sqrt(2.0))),
        (-2e300, 1e300, 1.0, math.cos(math.sqrt(2.0))),
        (1e308, 1e308, 1.0, math.cosh(1.0)),
        (-1e308, 1e308, 1.0, math.cos(1.0)),
        (1.0, 1e300, 1.0, 1.0),
        # eps << T: the first-order flow, psi -> e^{lam T}.
        (1.0, 1e-300, 1.0, math.e),
        (-1.0, 1e-300, 1.0, 1 / math.e),
        (700.0, 1e-300, 1.0, math.exp(700.0)),
        (1e-5, 1e-320, 1.0, math.exp(1e-5)),
        (1e-300, 0.5, 1e300, math.e),
        (-1e-300, 0.5, 1e300, 1 / math.e),
        # T -> 0: psi -> 1.
        (1.0, 0.5, 1e-300, 1.0),
        (3.0, 1e-200, 1e-200, 1.0),
        # At the double root lam = -1/(4 eps) with b ~ 5e299: e^{-b}(1 + b) underflows to 0.
        (-2.5e299, 1e-300, 1.0, 0.0),
    ],
)
def test_psi_at_extreme_masses_and_horizons_meets_its_limits(lam, eps, T, limit):
    # The neglected terms are O(1e-300) relative; 700 T lam has a condition number of 700.
    assert math.isclose(psi(lam, eps, T), limit, rel_tol=1000 * _MACHINE_EPS, abs_tol=1e-300)


def test_m_eps_depends_on_T_over_eps_only_at_the_top_of_the_float_range():
    # T / (2 eps) would give b = 0 here (2 eps overflows) and m_eps = -1.
    assert math.isclose(m_eps(1e308, 1e308), m_eps(1.0, 1.0), rel_tol=1e-14)
    assert math.isclose(m_eps(1e-300, 1e-300), m_eps(1.0, 1.0), rel_tol=1e-14)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((math.inf, 0.5), "lam must be finite .*got inf"),
        ((math.nan, 0.5), "lam must be finite .*got nan"),
        ((np.array([1.0, -math.inf]), 0.5), "lam must be finite"),
        ((complex(1.0, math.nan), 0.5), "lam must be finite"),
        ((1.0, 0.5, 0.0), "T must be a finite positive number, got 0.0"),
        ((1.0, 0.5, -1.0), "T must be a finite positive number"),
        ((1.0, 0.5, math.inf), "T must be a finite positive number, got inf"),
        ((1.0, 0.5, math.nan), "T must be a finite positive number"),
        ((1.0, -0.5), "eps must be a finite positive number"),
    ],
)
def test_psi_rejects_invalid_input_naming_the_argument_and_range(args, match):
    with pytest.raises(ValueError, match=match):
        psi(*args)


def test_psi_reports_an_oscillation_phase_beyond_the_float_range():
    # theta ~ T sqrt(|lam| / eps) ~ 2e309 while the amplitude e^{-b}, b = T/(2 eps) ~ 75, does not underflow:
    # the value is not determined by float64 inputs.
    with pytest.raises(ValueError, match=r"not representable in float64: the phase of its oscillation"):
        psi(-1.79e308, 1.2e306, 1.79e308)


@pytest.mark.filterwarnings("error")
def test_psi_is_never_nan_and_stays_in_its_range_across_the_float_range():
    rng = np.random.default_rng(0)
    count = 2000
    eps = 10.0 ** rng.uniform(-320, 308, count)
    T = 10.0 ** rng.uniform(-320, 308, count)
    lam = 10.0 ** rng.uniform(-320, 308, count) * rng.choice([-1.0, 1.0], count)
    for x, e, t in zip(lam, eps, T, strict=True):
        value = psi(x, e, t)
        # psi >= psi(0) = 1 on [0, inf) (increasing there); psi in [m_eps, 1] within (-1, 1] for lam < 0.
        if x > 0:
            assert value >= 1 - _MACHINE_EPS, (x, e, t)
        else:
            assert -1 <= value <= 1 + _MACHINE_EPS, (x, e, t)


# ------------------------------------------------------------------ momentum_logarithm at the float limits


@pytest.mark.filterwarnings("error")
def test_momentum_logarithm_names_a_target_beyond_the_headroom_of_psi():
    # psi reaches 5e307 before overflow, but its Cauchy sums and the flow's velocity would not fit.
    with pytest.raises(
        ValueError,
        match=r"eigenvalue of size about 5e\+307.*float64 overflow \(about 4\.3889e\+304\): scale D down",
    ):
        momentum_logarithm(np.diag([5e307, 1.0]), 0.5)


@pytest.mark.filterwarnings("error")
def test_momentum_logarithm_reaches_a_target_just_below_the_headroom_limit():
    D = np.diag([4e304, 1.0])
    A = momentum_logarithm(D, 0.5)
    assert np.all(np.isfinite(A)) and A[0, 1] == A[1, 0] == 0
    assert math.isclose(psi(A[0, 0], 0.5), 4e304, rel_tol=1e-8)
    # The documented guarantee is normwise: ||Psi(A) - D|| <= rtol ||D||.
    assert np.max(np.abs(momentum_flow_matrix(A, 0.5) - D)) <= 1e-8 * 4e304


def _jordan(mu, k):
    return mu * np.eye(k) + np.diag(np.ones(k - 1), 1)


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize(
    "D",
    [
        np.diag([2.0, 0.5]),
        np.array([[0.3, -2.0], [2.0, 0.3]]),
        _jordan(2.0, 2),
        -0.5 * np.eye(2),
        np.diag([-0.9, -0.9]),
    ],
    ids=["diagonal", "rotation", "jordan", "paired-below-m_eps", "paired-near-m_eps"],
)
def test_momentum_logarithm_with_a_huge_mass(D):
    # eps = 1e300: psi's scale in lam is eps / T^2 = 1e300, where eps**2 used to overflow.
    A = momentum_logarithm(D, 1e300)
    residual = np.linalg.norm(momentum_flow_matrix(A, 1e300) - D) / np.linalg.norm(D)
    assert residual <= 1e-12


def test_momentum_logarithm_names_a_lam_scale_beyond_float64():
    with pytest.raises(ValueError, match=r"eps / T\*\*2 = 1e\+306 .*use a smaller eps or a larger T"):
        momentum_logarithm(np.diag([2.0, 0.5]), 1e300, 1e-3)


def test_momentum_logarithm_below_an_underflowed_m_eps_says_so():
    # T / eps = 1e4: m_eps = -e^{-5000}(...) underflows to -0.0.
    with pytest.raises(RuntimeError, match=r"eigenvalue -0\.5 < m_eps .*m_eps underflows to -0"):
        momentum_logarithm(-0.5 * np.eye(2), 1e-4)


def test_momentum_logarithm_of_a_stiff_flow_fails_its_documented_check():
    # T / eps = 1e50: the phase-space exponential that verifies the result is NaN, which fails the check.
    with pytest.raises(RuntimeError, match="could not verify its result"):
        momentum_logarithm(np.diag([2.0, 0.5]), 1e-50)


def _residual_in_150_digits(A, D, eps):
    """||Psi_eps(A) - D||_F / max(||D||_F, 1) at T = 1, built here from the definition (the top-left block of
    the phase-space exponential) in 150-digit arithmetic, independent of the library's evaluation."""
    import mpmath

    n = len(A)
    with mpmath.workdps(150):
        M = mpmath.zeros(2 * n)
        for i in range(n):
            M[i, n + i] = 1
            M[n + i, n + i] = -1 / mpmath.mpf(eps)
            for j in range(n):
                M[n + i, j] = mpmath.mpf(float(A[i][j])) / mpmath.mpf(eps)
        E = mpmath.expm(M)
        error = mpmath.sqrt(sum((E[i, j] - float(D[i][j])) ** 2 for i in range(n) for j in range(n)))
        return float(error / max(mpmath.sqrt(sum(mpmath.mpf(float(d)) ** 2 for d in np.ravel(D))), 1))


def test_momentum_logarithm_returns_only_certified_results_where_float64_cannot_verify():
    # J_2(0) at T / eps from 30 on: |A| ~ e^{T / (2 eps)} makes A -> Psi(A) so ill-conditioned that a
    # float64 residual of 4e-10 can hide an exact one of 4e-8. Every returned A must meet rtol in exact
    # terms; the others must raise.
    D, returned, raised = _jordan(0.0, 2), [], []
    for ratio in (30, 40, 54, 60, 62, 64, 68, 70, 92):
        try:
            A = momentum_logarithm(D, 1.0 / ratio)
        except RuntimeError as error:
            assert "could not verify its result: relative residual" in str(error)
            raised.append(ratio)
            continue
        assert _residual_in_150_digits(A, D, 1.0 / ratio) <= 1e-8, ratio
        returned.append(ratio)
    # both outcomes occur, so that both branches are tested (at 64 the float64 check alone returned an A
    # whose exact residual is 4.0e-8)
    assert 64 in raised and 30 in returned, (raised, returned)
