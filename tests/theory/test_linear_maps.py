"""Tests of mode.theory.linear_maps: public API, registered checks (and that they can fail), properties."""

import math

import numpy as np
import pytest
import scipy.linalg as sla
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.integrate import solve_ivp

from mode.theory import linear_maps as lm
from mode.theory.registry import CLAIMS

LM_IDS = [f"LM-{i}" for i in range(1, 8)]
EPS, T = 0.5, 1.0
# m_eps for eps = 0.5, T = 1 (theory/linear_maps.md, table of LM-3).
M_HALF = -0.3833216002643256


def ode_value(lam, eps, T):
    """y(T) for eps y'' + y' = lam y, y(0) = 1, y'(0) = 0, integrated independently of the module."""
    sol = solve_ivp(
        lambda _, y: [y[1], (lam * y[0] - y[1]) / eps], (0, T), [1 + 0j, 0j], rtol=1e-12, atol=1e-14
    )
    return sol.y[0, -1]


def jordan(mu, k):
    return mu * np.eye(k) + np.diag(np.ones(k - 1), 1)


def conjugated(M, seed=0):
    S = np.random.default_rng(seed).standard_normal(M.shape)
    return S @ M @ np.linalg.inv(S)


def residual(A, D, eps=EPS, T=T):
    return np.linalg.norm(lm.momentum_flow_matrix(A, eps, T) - D) / max(np.linalg.norm(D), 1.0)


# ------------------------------------------------------------------ registered checks


@pytest.mark.parametrize("claim_id", LM_IDS)
def test_registered_check_passes(claim_id):
    claim = CLAIMS[claim_id]
    assert claim.doc == "theory/linear_maps.md"
    verdict = claim.check()
    assert isinstance(verdict.passed, bool) and isinstance(verdict.measured, float)
    assert verdict.passed, verdict


def _scaled(function, factor):
    return lambda *args, **kwargs: function(*args, **kwargs) * factor


SABOTAGE = {
    "LM-1": [("has_real_logarithm", lambda M, tol=None: True)],
    "LM-2": [("psi", _scaled(lm.psi, 1 + 1e-6))],
    "LM-3": [
        (
            "m_eps_table",
            lambda eps_values, T=1.0: [(e, v + 1e-6, a) for e, v, a in lm.m_eps_table(eps_values, T)],
        )
    ],
    "LM-4": [("momentum_logarithm", lambda D, eps, T=1.0: np.zeros_like(D))],
    "LM-5": [("momentum_logarithm", lambda D, eps, T=1.0: np.asarray(D, dtype=float))],
    "LM-6": [("max_reachable_scale", _scaled(lm.max_reachable_scale, 1.5))],
    "LM-7": [("max_reachable_scale", lambda D, eps, T=1.0: 1.0)],
}


@pytest.mark.parametrize("claim_id", LM_IDS)
def test_registered_check_can_fail(claim_id, monkeypatch):
    for name, fake in SABOTAGE[claim_id]:
        monkeypatch.setattr(lm, name, fake)
    try:
        verdict = CLAIMS[claim_id].check()
    except (ValueError, RuntimeError, np.linalg.LinAlgError):
        return
    assert not verdict.passed


def test_disk_count_sees_non_real_zeros_near_the_axis(monkeypatch):
    """A psi with an extra conjugate pair of zeros at distance 0.01 from the real axis fails LM-4."""
    integrated = lm._integrated_psi
    pair = -20.0 + 0.01j

    def with_pair(lam, eps, T, derivative=False, rtol=lm._ODE_RTOL):
        lam_flat = np.asarray(lam, dtype=complex).ravel()
        q = (lam_flat - pair) * (lam_flat - np.conj(pair))
        dq = 2 * lam_flat - 2 * pair.real
        if not derivative:
            return integrated(lam, eps, T, rtol=rtol) * q
        value, slope = integrated(lam, eps, T, True, rtol=rtol)
        return value * q, slope * q + value * dq

    monkeypatch.setattr(lm, "_integrated_psi", with_pair)
    assert not CLAIMS["LM-4"].check().passed


def test_exponential_cases_must_have_negative_eigenvalues(monkeypatch):
    """Rotations by pi/2 instead of pi leave D without negative eigenvalues: LM-7's case check fails."""
    rotation = lm._rotation
    monkeypatch.setattr(lm, "_rotation", lambda angle: rotation(angle / 2))
    assert not CLAIMS["LM-7"].check().passed


# ------------------------------------------------------------------ psi and Psi


def test_psi_special_values():
    b = T / (2 * EPS)
    assert lm.psi(0.0, EPS) == pytest.approx(1.0, rel=1e-14)
    assert lm.psi(-1 / (4 * EPS), EPS) == pytest.approx(math.exp(-b) * (1 + b), rel=1e-14)
    assert isinstance(lm.psi(0.3, EPS), float)
    assert isinstance(lm.psi(0.3 + 1j, EPS), complex)
    z = np.array([[1 + 2j, -3 - 1j], [-20 + 0.5j, 4j]])
    assert lm.psi(z, EPS).shape == (2, 2)
    np.testing.assert_allclose(lm.psi(z.conj(), EPS), lm.psi(z, EPS).conj(), rtol=1e-14)


@pytest.mark.parametrize("lam", [-1.0, -0.5, -0.5 + 1e-12, -0.5 - 1e-7, 2.0, -30.0, 1 + 3j, -12 - 6j])
@pytest.mark.parametrize(("eps", "T"), [(0.1, 1.0), (0.5, 1.0), (3.0, 2.0)])
def test_psi_matches_integrated_ode(lam, eps, T):
    assert lm.psi(lam, eps, T) == pytest.approx(ode_value(lam, eps, T), rel=1e-9, abs=1e-12)


def test_psi_depends_on_T_over_eps_only():
    lam = np.linspace(-40, 3, 50)
    np.testing.assert_allclose(lm.psi(lam, 0.3, 2.0), lm.psi(2.0 * lam, 0.15, 1.0), rtol=1e-12, atol=1e-15)
    assert lm.m_eps(0.3, 2.0) == pytest.approx(lm.m_eps(0.15, 1.0), rel=1e-13)


def test_momentum_flow_matrix_is_the_matrix_function_of_psi():
    lam = np.array([-3.0, -0.2, 0.7])
    np.testing.assert_allclose(
        lm.momentum_flow_matrix(np.diag(lam), EPS), np.diag(lm.psi(lam, EPS)), atol=1e-14
    )
    A = np.diag(lam)
    S = np.random.default_rng(1).standard_normal((3, 3))
    Si = np.linalg.inv(S)
    np.testing.assert_allclose(
        lm.momentum_flow_matrix(S @ A @ Si, EPS), S @ np.diag(lm.psi(lam, EPS)) @ Si, rtol=1e-10, atol=1e-12
    )
    # Jordan block: f(J_2(l)) = [[f(l), f'(l)], [0, f(l)]]
    h = 1e-6
    derivative = (lm.psi(-2 + h, EPS) - lm.psi(-2 - h, EPS)) / (2 * h)
    np.testing.assert_allclose(lm.momentum_flow_matrix(jordan(-2.0, 2), EPS)[0, 1], derivative, rtol=1e-7)


# ------------------------------------------------------------------ m_eps

TABLE = {
    0.05: (-0.00011677708027377988, -5.853814732583158),
    0.1: (-0.010832973090403817, -4.027683212473179),
    0.2: (-0.09908263172198878, -3.9344059901279103),
    0.5: (-0.3833216002643256, -6.299083029919333),
    1.0: (-0.6134986031674047, -11.047839372011284),
    2.0: (-0.7811471399756956, -20.82729016196355),
    5.0: (-0.9052866886126071, -50.38299807894562),
}


def test_m_eps_table_values_and_minimiser():
    rows = lm.m_eps_table()
    assert [row[0] for row in rows] == list(TABLE)
    for eps, value, argmin in rows:
        assert (value, argmin) == pytest.approx(TABLE[eps], rel=1e-10)
        assert -1 < value < 0
        assert lm.psi(argmin, eps) == pytest.approx(value, rel=1e-13)
        h = 1e-4 * max(1.0, abs(argmin))
        assert lm.psi(argmin - h, eps) > value and lm.psi(argmin + h, eps) > value
        grid = np.linspace(argmin - 200, 20, 200001)
        assert lm.psi(grid, eps).min() >= value - 1e-15
    assert [row[1] for row in rows] == sorted(row[1] for row in rows)[::-1]


def test_m_eps_limits():
    assert -1e-200 < lm.m_eps(1e-3) <= 0.0
    assert lm.m_eps(1e4) == pytest.approx(-1.0, abs=1e-4)


# ------------------------------------------------------------------ Culver


@pytest.mark.parametrize(
    ("M", "expected"),
    [
        (-np.eye(2), True),
        (-np.eye(3), False),
        (np.diag([-1.0, -2.0]), False),
        (jordan(-1.0, 2), False),
        (np.diag([-1.0, -1.0, 2.0]), True),
        (sla.block_diag(jordan(-1.0, 2), jordan(-1.0, 2)), True),
        (sla.block_diag(jordan(-1.0, 2), [[-1.0]]), False),
        (conjugated(sla.block_diag(jordan(-2.0, 3), jordan(-2.0, 3)), 4), True),
        (conjugated(sla.block_diag(jordan(-2.0, 3), jordan(-2.0, 2)), 4), False),
        (np.zeros((2, 2)), False),
        (np.diag([1.0, 0.0]), False),
        (np.eye(4), True),
        (sla.expm(np.array([[0.0, -np.pi], [np.pi, 0.0]])), True),
    ],
)
def test_has_real_logarithm_cases(M, expected):
    assert lm.has_real_logarithm(M) is expected


def test_has_real_logarithm_negative_determinant_odd_dimension():
    rng = np.random.default_rng(9)
    for n in (3, 5, 7, 9):
        M = rng.standard_normal((n, n))
        M[0] *= -np.sign(np.linalg.det(M))
        assert np.linalg.det(M) < 0 and lm.has_real_logarithm(M) is False


def test_has_real_logarithm_nonsingular_despite_small_singular_value():
    assert lm.has_real_logarithm(np.diag([1.0, 1e-11])) is True
    assert lm.has_real_logarithm(np.diag([1e-11, 1e-12])) is True
    assert lm.has_real_logarithm(np.diag([1.0, -1e-11])) is False
    assert lm.has_real_logarithm(np.diag([1.0, 1e-11]), tol=1e-10) is False


@pytest.mark.parametrize(
    "M",
    [
        -np.eye(3),
        -np.eye(2),
        np.diag([-1.0, -2.0]),
        np.diag([-1.0, -1.0]),
        np.diag([1e-11, 1e-12]),
        np.array([[math.cos(1.0), -math.sin(1.0)], [math.sin(1.0), math.cos(1.0)]]),
        jordan(-2.0, 2),
        sla.block_diag(jordan(-1.0, 2), jordan(-1.0, 2)),
        conjugated(sla.block_diag(jordan(-2.0, 3), jordan(-2.0, 2)), 4),
    ],
)
def test_has_real_logarithm_is_scale_invariant(M):
    expected = lm.has_real_logarithm(M)
    for c in (1e-8, 1e-4, 0.3, 7.0, 1e4, 1e8):
        assert lm.has_real_logarithm(c * M) is expected


def test_has_real_logarithm_singular_is_false():
    M = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [5.0, 7.0, 9.0]])
    assert lm.has_real_logarithm(M) is False
    assert lm.has_real_logarithm(np.diag([2.0, 1e-20])) is False


def test_has_real_logarithm_undecidable_pair_follows_tol():
    """[[-1, d], [0, -1]] (one Jordan block, no real log) is d away from -I_2 (which has one)."""
    block = np.array([[-1.0, 1e-12], [0.0, -1.0]])
    assert lm.has_real_logarithm(-np.eye(2)) is True
    assert lm.has_real_logarithm(block) is False
    assert lm.has_real_logarithm(block, tol=1e-10) is True
    assert lm.has_real_logarithm(-np.eye(2), tol=1e-10) is True
    # Two distinct negative eigenvalues 1e-11 apart: no real log, unless tol merges them into -I_2.
    assert lm.has_real_logarithm(np.diag([-1.0, -1.0 - 1e-11])) is False
    assert lm.has_real_logarithm(np.diag([-1.0, -1.0 - 1e-11]), tol=1e-10) is True
    # Below the rounding level the off-diagonal entry is not seen.
    assert lm.has_real_logarithm(np.array([[-1.0, 1e-16], [0.0, -1.0]])) is True


@pytest.mark.parametrize("tol", [-1e-10, 0.0, math.inf, math.nan])
def test_has_real_logarithm_validates_tol(tol):
    with pytest.raises(ValueError, match="tol"):
        lm.has_real_logarithm(-np.eye(2), tol=tol)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    A=st.integers(1, 5).flatmap(
        lambda n: arrays(
            np.float64, (n, n), elements=st.floats(-2, 2, allow_nan=False, allow_subnormal=False)
        )
    )
)
def test_expm_of_moderate_matrices_has_real_logarithm(A):
    assert lm.has_real_logarithm(sla.expm(A))


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (np.ones((2, 3)), ValueError),
        (np.ones(3), ValueError),
        (np.ones((2, 2)) * 1j, TypeError),
        (np.array([[1.0, np.nan], [0.0, 1.0]]), ValueError),
        (np.array([["a"]]), TypeError),
    ],
)
def test_matrix_validation_names_the_argument(bad, error):
    with pytest.raises(error, match="M"):
        lm.has_real_logarithm(bad)
    with pytest.raises(error, match="D"):
        lm.momentum_logarithm(bad, EPS)
    with pytest.raises(error, match="A"):
        lm.momentum_flow_matrix(bad, EPS)


@pytest.mark.parametrize("eps", [0.0, -1.0, math.inf, math.nan])
def test_eps_validation(eps):
    for call in (
        lambda: lm.psi(1.0, eps),
        lambda: lm.m_eps(eps),
        lambda: lm.momentum_flow_matrix(np.eye(2), eps),
        lambda: lm.momentum_logarithm(np.eye(2), eps),
        lambda: lm.max_reachable_scale(np.eye(2), eps),
    ):
        with pytest.raises(ValueError, match="eps"):
            call()


# ------------------------------------------------------------------ reachability and the inverse


@pytest.mark.parametrize(
    "D",
    [
        -3.0 * np.eye(2),
        -100.0 * np.eye(2),
        conjugated(sla.block_diag(jordan(-1.0, 2), jordan(-1.0, 2)), 1),
        conjugated(sla.block_diag(jordan(-2.0, 3), jordan(-2.0, 3)), 2),
        M_HALF * np.eye(3),
        conjugated(sla.block_diag(jordan(M_HALF, 3), jordan(M_HALF, 2)), 3),
        conjugated(sla.block_diag(jordan(M_HALF, 3), jordan(M_HALF, 3), jordan(M_HALF, 1)), 3),
        np.zeros((3, 3)),
        jordan(0.0, 4),
        conjugated(sla.block_diag([[0.5, -1.0], [1.0, 0.5]], [[0.5, -1.0], [1.0, 0.5]]) + np.eye(4, k=2), 5),
        0.2 * jordan(-1.0, 2),
        np.diag([M_HALF + 1e-7, 2.0, -4.0, -4.0]),
    ],
)
def test_momentum_logarithm_reachable(D):
    A = lm.momentum_logarithm(D, EPS)
    assert A.dtype == float and A.shape == D.shape
    assert residual(A, D) < 1e-8


@pytest.mark.parametrize(
    "D",
    [
        -np.eye(3),
        np.diag([-1.0, -2.0]),
        jordan(-1.0, 2),
        jordan(M_HALF, 2),
        sla.block_diag(jordan(M_HALF, 3), [[M_HALF]]),
        sla.block_diag(jordan(-1.0, 3), jordan(-1.0, 2)),
    ],
)
def test_momentum_logarithm_unreachable_reports_scale(D):
    scale = lm.max_reachable_scale(D, EPS)
    with pytest.raises(ValueError, match="max_reachable_scale") as info:
        lm.momentum_logarithm(D, EPS)
    assert f"{scale:.6g}" in str(info.value)
    A = lm.momentum_logarithm(0.9 * scale * D, EPS)
    assert residual(A, 0.9 * scale * D) < 1e-8


def test_max_reachable_scale_values_and_endpoint():
    m = lm.m_eps(EPS)
    assert lm.max_reachable_scale(-np.eye(2), EPS) == math.inf
    assert lm.max_reachable_scale(np.zeros((2, 2)), EPS) == math.inf
    assert lm.max_reachable_scale(-np.eye(3), EPS) == pytest.approx(-m, rel=1e-12)
    assert lm.max_reachable_scale(np.diag([-1.0, -2.0]), EPS) == pytest.approx(-m / 2, rel=1e-12)
    assert lm.max_reachable_scale(jordan(-1.0, 2), EPS) == pytest.approx(-m, rel=1e-12)
    # Endpoint: simple eigenvalue reaches m_eps exactly (reachable); a 2x2 Jordan block there is not.
    s = lm.max_reachable_scale(np.diag([-1.0, -2.0]), EPS)
    assert residual(lm.momentum_logarithm(s * np.diag([-1.0, -2.0]), EPS), s * np.diag([-1.0, -2.0])) < 1e-8
    with pytest.raises(ValueError):
        lm.momentum_logarithm(-m * jordan(-1.0, 2), EPS)


def test_momentum_logarithm_result_integrates_to_target():
    D = conjugated(np.diag([-0.2, 0.5, 3.0]), 7)
    A = lm.momentum_logarithm(D, EPS)
    n = 3

    def rhs(_, y):
        X, V = y[: n * n].reshape(n, n), y[n * n :].reshape(n, n)
        return np.concatenate([V.ravel(), ((A @ X - V) / EPS).ravel()])

    y0 = np.concatenate([np.eye(n).ravel(), np.zeros(n * n)])
    end = solve_ivp(rhs, (0, T), y0, rtol=1e-12, atol=1e-14, method="DOP853").y[: n * n, -1].reshape(n, n)
    np.testing.assert_allclose(end, D, atol=1e-9)


def test_gauss_newton_polish_lowers_the_residual():
    rng = np.random.default_rng(2)
    A = rng.standard_normal((3, 3))
    D = lm.momentum_flow_matrix(A, EPS)
    start = A + 1e-5 * rng.standard_normal((3, 3))
    polished = lm._gauss_newton_polish(start, D, EPS, T)
    assert residual(polished, D) < 1e-3 * residual(start, D)


# ------------------------------------------------------------------ properties

small_matrices = st.integers(1, 4).flatmap(
    lambda n: arrays(
        np.float64, (n, n), elements=st.floats(-0.6, 0.6, allow_nan=False, allow_subnormal=False)
    )
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(A=small_matrices, eps=st.floats(0.05, 5.0), T=st.floats(0.5, 2.0))
def test_momentum_logarithm_inverts_psi(A, eps, T):
    D = lm.momentum_flow_matrix(A, eps, T)
    B = lm.momentum_logarithm(D, eps, T)
    assert residual(B, D, eps, T) < 1e-9


@settings(max_examples=40, deadline=None)
@given(A=small_matrices)
def test_exponentials_have_real_logarithms(A):
    assert lm.has_real_logarithm(sla.expm(3 * A))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    D=st.integers(1, 4).flatmap(
        lambda n: arrays(
            np.float64, (n, n), elements=st.floats(-2, 2, allow_nan=False, allow_subnormal=False)
        )
    ),
    fraction=st.floats(0.05, 0.95),
)
def test_every_matrix_is_reachable_up_to_scale(D, fraction):
    s = fraction * min(lm.max_reachable_scale(D, EPS), 1.0)
    assert residual(lm.momentum_logarithm(s * D, EPS), s * D) < 1e-8


def test_public_names_of_the_theory_api():
    import mode.theory

    assert mode.theory.has_real_logarithm(-np.eye(2)) and not mode.theory.has_real_logarithm(-np.eye(3))
    D = mode.theory.momentum_flow_matrix(np.array([[0.0, -1.0], [1.0, 0.0]]), 0.5)
    A = mode.theory.momentum_logarithm(D, 0.5)
    np.testing.assert_allclose(mode.theory.momentum_flow_matrix(A, 0.5), D, atol=1e-8)
    assert mode.theory.max_reachable_scale(-np.eye(3), 0.5) < 1
