r"""Time-:math:`T` maps of linear first-order and momentum (second-order) flows.

A first-order linear flow :math:`x' = Ax` has time-:math:`T` map :math:`e^{TA}`; the matrices reached
this way are the real matrices with a real logarithm (Culver 1966, :func:`has_real_logarithm`).

The continuous Momentum ResNet with a linear field, :math:`\varepsilon x'' + x' = Ax`, :math:`x(0) = x_0`,
:math:`x'(0) = 0`, has time-:math:`T` map :math:`x(T) = \Psi_\varepsilon(A)\,x_0`, the matrix function of
the entire function :func:`psi`. This module evaluates that map (:func:`momentum_flow_matrix`), its
scalar minimum :func:`m_eps`, decides which real matrices it reaches and inverts it
(:func:`momentum_logarithm`, :func:`max_reachable_scale`). The mathematics, with proofs, is in
``theory/linear_maps.md``; the machine checks registered at the bottom of this file re-derive every
claim independently of the code they check (ODE integration with :func:`scipy.integrate.solve_ivp`,
exact rational ranks).
"""

from __future__ import annotations

import functools
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla
from numpy.typing import ArrayLike
from scipy.integrate import solve_ivp
from scipy.optimize import brentq, minimize_scalar

from mode.theory.registry import Verdict, claim

__all__ = [
    "has_real_logarithm",
    "m_eps",
    "m_eps_table",
    "max_reachable_scale",
    "momentum_flow_matrix",
    "momentum_logarithm",
    "psi",
]

DOC = "theory/linear_maps.md"

#: Relative tolerance of the structural decisions of :func:`max_reachable_scale` and
#: :func:`momentum_logarithm` (rank of a power, eigenvalue clustering).
DEFAULT_TOL = 1e-10
_MACHINE_EPS = float(np.finfo(float).eps)
#: has_real_logarithm ignores structure below ROUNDING_FACTOR * n * 2^-52 * ||M||_2 by default:
#: a backward-stable computation of an n x n matrix (a product, an exponential, a similarity transform
#: by a matrix of condition number up to about this factor) leaves an error of that order.
ROUNDING_FACTOR = 100.0
# Number of terms of the Maclaurin series of cosh(sqrt z) and sinh(sqrt z)/sqrt z used for |z| < 1:
# the first omitted term is below 1/28! ~ 3e-30.
_SERIES_TERMS = 14
_SERIES_K = np.arange(_SERIES_TERMS)
_COSH_COEF = np.array([1.0 / math.factorial(2 * k) for k in range(_SERIES_TERMS)])
_SINHC_COEF = np.array([1.0 / math.factorial(2 * k + 1) for k in range(_SERIES_TERMS)])
# The damping b = T/(2 eps) is capped here: past b ~ 750 every term it damps, at most e^{-b}(1 + b) times
# 1/|w| <= 1e8, is below the smallest subnormal, and a finite b keeps b * (...) free of inf * 0.
_DAMPING_CAP = 2000.0
# exp of anything below this is exactly 0 in float64.
_EXP_UNDERFLOW = math.log(float(np.finfo(float).smallest_subnormal)) - 1.0
_FLOAT_MAX = float(np.finfo(float).max)
# Largest psi momentum_logarithm inverts: _psi_taylor sums 64 samples of up to e^{1/2} times it, and the
# velocity block of the phase-space exponential that verifies the result is ~sqrt(lam / eps) times it
# (~700 times at T = 1 near overflow); 2^-12 of the float64 maximum leaves room for both. The same bound
# applies to psi's scale in lam, eps / T^2 (the Cauchy radius of _psi_taylor; lam* ~ -20 eps / T^2).
_FLOAT_LIMIT = _FLOAT_MAX * 2.0**-12
# Gauss-Newton polishing of momentum_logarithm runs only when the direct construction leaves a relative
# residual above this level.
_POLISH_TRIGGER = 1e-12
# Where 2^-52 ||T M||_F, M the phase-space matrix, exceeds this fraction of rtol, the float64 exponential
# that verifies momentum_logarithm's result can no longer be trusted to the digits rtol asks for, and the
# residual is evaluated again in multiple precision.
_CERTIFY_FRACTION = 1e-3
_U = 2.0**-52


# --------------------------------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------------------------------


def _as_real_square(M, name: str) -> np.ndarray:
    arr = np.asarray(M)
    if np.iscomplexobj(arr):
        raise TypeError(f"{name} must be a real matrix, got complex dtype {arr.dtype}")
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"{name} must be a real numeric matrix, got dtype {arr.dtype}")
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty square matrix, got shape {arr.shape}")
    arr = arr.astype(float)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must have finite entries")
    return arr


def _positive(value, name: str) -> float:
    if isinstance(value, complex | np.complexfloating) or not np.isscalar(value):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite positive number, got {value!r}")
    return value


def _tolerance(tol, default: float = DEFAULT_TOL) -> float:
    return default if tol is None else _positive(tol, "tol")


# --------------------------------------------------------------------------------------------------
# The scalar function psi
# --------------------------------------------------------------------------------------------------


def _half_root(lam: np.ndarray, eps: float) -> np.ndarray:
    r"""Return :math:`h = \sqrt{1 + 4\varepsilon\lambda}/2`, the principal root.

    :math:`\operatorname{Re} h \ge 0`, so :math:`1/2 + h` never vanishes. Formed as
    :math:`\sqrt{1/4 + \varepsilon\lambda}` for :math:`\varepsilon < 1` and as
    :math:`\sqrt\varepsilon\,\sqrt{\lambda + 1/(4\varepsilon)}` otherwise: :math:`\varepsilon\lambda` can
    overflow only in the second case and :math:`1/(4\varepsilon)` only in the first.
    """
    if eps < 1:
        return np.sqrt(0.25 + eps * lam)
    return math.sqrt(eps) * np.sqrt(lam + 0.25 / eps)


def _weighted_exponentials(r_plus, r_minus, c_plus, c_minus, log_scale: float = 0.0) -> np.ndarray:
    r"""Return :math:`e^{\ell}(c_+ e^{r_+} + c_- e^{r_-})` with :math:`\ell` = ``log_scale``.

    Each term is formed as :math:`\exp(r + \ell + \log c)`: a term that fits in float64 is then finite
    even where :math:`e^{r}` or :math:`e^{\ell}` alone overflows, and one that does not is an infinity
    (a zero coefficient gives :math:`\log 0 = -\infty`, an exact 0), never the NaN of
    :math:`\infty \cdot 0`.
    """
    total = np.zeros(np.shape(r_plus), dtype=complex)
    for r, c in ((r_plus, c_plus), (r_minus, c_minus)):
        with np.errstate(divide="ignore", over="ignore"):
            exponent = r + (np.log(c) + log_scale)
        # A term below the smallest subnormal is 0 whatever its phase, which can lie beyond the float
        # range (an infinite imaginary part, for which exp gives NaN).
        seen = exponent.real > _EXP_UNDERFLOW
        # Overflow gives the infinity that the term is; NaN is left where the imaginary part (the phase)
        # is itself beyond the float range, and psi reports it.
        with np.errstate(over="ignore", invalid="ignore"):
            total[seen] += np.exp(exponent[seen])
    return total


def _psi_and_slope(lam, eps: float, T: float) -> tuple[np.ndarray, np.ndarray]:
    r"""Return :math:`\psi_\varepsilon(\lambda)` and :math:`\psi_\varepsilon'(\lambda)` (complex arrays).

    With :math:`b = T/(2\varepsilon)`, :math:`w = 2h = \sqrt{1 + 4\varepsilon\lambda}` and :math:`s = bw`
    (so :math:`z = s^2 = T^2(1 + 4\varepsilon\lambda)/(4\varepsilon^2)`), the exponents of the characteristic
    roots are :math:`r_\pm T = \pm s - b`, and

    .. math:: \psi = \frac{1 + w^{-1}}{2}e^{r_+T} + \frac{1 - w^{-1}}{2}e^{r_-T}, \qquad
              \psi' = \frac{T}{2w}\Big[\Big(1 + \frac{1 - s^{-1}}{w}\Big)e^{r_+T}
              - \Big(1 - \frac{1 + s^{-1}}{w}\Big)e^{r_-T}\Big],

    evaluated as :func:`_weighted_exponentials` for :math:`|s| \ge 1`; for :math:`|s| < 1`,
    :math:`\psi = e^{-b}G(z)`, :math:`G(z) = \cosh\sqrt z + b\,\sinh\sqrt z/\sqrt z`, by its Maclaurin
    series, and :math:`\psi' = e^{-b}G'(z)\,T^2/\varepsilon`. Every intermediate is formed from
    :math:`\varepsilon`, :math:`T` and :math:`\lambda` so that it stays finite wherever the result does,
    for any finite :math:`\varepsilon, T > 0`.
    """
    lam = np.asarray(lam, dtype=complex)
    h = _half_root(lam, eps)
    # T / (2 eps) would be 0 for eps > ~9e307, where 2 eps overflows.
    b = min(T / eps / 2, _DAMPING_CAP)
    value = np.empty_like(h)
    slope = np.empty_like(h)
    # |s| < 1, where s = (T/eps) h. eps/T may underflow to 0 (and T/eps overflow) while h = 0 exactly:
    # the double root, which belongs to the series.
    small = (np.abs(h) < eps / T) | (h == 0)
    if small.any():
        # Near the double root 1 + 4 eps lam = 0 the closed form is 0/0; the Maclaurin series in z
        # of the entire function G is exact there.
        s = np.divide(h[small], eps / T, out=np.zeros_like(h[small]), where=h[small] != 0)
        powers = (s * s)[..., None] ** _SERIES_K
        a = _COSH_COEF + b * _SINHC_COEF
        value[small] = math.exp(-b) * (powers @ a)
        # T^2/eps = 2 b T, with the damping applied to 2 b before T so that no product is inf * 0.
        slope[small] = (2 * b * math.exp(-b)) * T * (powers[..., :-1] @ (_SERIES_K[1:] * a[1:]))
    big = ~small
    if big.any():
        h, lam = h[big], lam[big]
        with np.errstate(over="ignore"):
            # r_+ T = s - b = T lam / (1/2 + h) and r_- T = -(s + b) = -2b (1/2 + h): the first without the
            # cancellation of s - b (large b), the second with the capped b (e^{r_- T} is 0 beyond it).
            r_plus = T * (lam / (0.5 + h))
            r_minus = -2 * b * (0.5 + h)
        inv_w, inv_s = 0.5 / h, (eps / T) / h
        value[big] = _weighted_exponentials(r_plus, r_minus, 0.5 * (1 + inv_w), 0.5 * (1 - inv_w))
        slope[big] = _weighted_exponentials(
            r_plus,
            r_minus,
            0.5 * inv_w * (1 + inv_w * (1 - inv_s)),
            -0.5 * inv_w * (1 - inv_w * (1 + inv_s)),
            math.log(T),
        )
    return value, slope


def psi(lam: ArrayLike, eps: float, T: float = 1.0) -> np.ndarray | float:
    r"""Time-:math:`T` value of the scalar momentum flow started at rest.

    :math:`\psi_\varepsilon(\lambda) = y(T)` where :math:`\varepsilon y'' + y' = \lambda y`,
    :math:`y(0) = 1`, :math:`y'(0) = 0`. With the characteristic roots
    :math:`r_\pm = (-1 \pm \sqrt{1 + 4\varepsilon\lambda})/(2\varepsilon)`,

    .. math:: \psi_\varepsilon(\lambda) = \frac{r_+ e^{r_- T} - r_- e^{r_+ T}}{r_+ - r_-}
              = e^{-b}\Big(\cosh s + b\,\frac{\sinh s}{s}\Big),\quad
              b = \frac{T}{2\varepsilon},\ s = \frac{T\sqrt{1 + 4\varepsilon\lambda}}{2\varepsilon},

    an entire function of :math:`\lambda` (even in :math:`s`); the double root
    :math:`1 + 4\varepsilon\lambda = 0` is handled by the power series of the right-hand side.

    Every finite :math:`\lambda` and finite :math:`\varepsilon, T > 0` is accepted. Each term is evaluated
    as :math:`\exp(rT + \log c)`, so a value beyond the float64 range is ``inf`` (for real
    :math:`\lambda \gtrsim 5\cdot 10^{5}` at :math:`\varepsilon = 1/2`, :math:`T = 1`, for example), one below
    it underflows to 0, and every value in between is finite, also where :math:`e^{r_+T}` alone overflows.

    Parameters
    ----------
    lam : float, complex or array_like
        Eigenvalue(s) :math:`\lambda`, finite; real input gives real output.
    eps : float
        Mass :math:`\varepsilon > 0`, finite.
    T : float, optional
        Horizon :math:`T > 0`, finite.

    Returns
    -------
    numpy scalar or ndarray
        :math:`\psi_\varepsilon(\lambda)`, same shape as ``lam``.

    Raises
    ------
    TypeError
        If ``lam`` is not numeric, or ``eps`` or ``T`` not a real number.
    ValueError
        If ``lam`` has a non-finite entry or ``eps`` or ``T`` is not finite and positive; or where the
        value is not representable: an oscillation whose phase, about :math:`T\sqrt{|\lambda|/\varepsilon}`,
        exceeds the float64 range while its amplitude does not underflow (:math:`T` and
        :math:`|\lambda|` near :math:`10^{308}`).
    """
    eps, T = _positive(eps, "eps"), _positive(T, "T")
    arr = np.asarray(lam)
    if not (np.issubdtype(arr.dtype, np.number) and arr.dtype != np.bool_):
        raise TypeError(f"lam must be numeric, got dtype {arr.dtype}")
    finite = np.isfinite(arr)
    if not finite.all():
        raise ValueError(f"lam must be finite (real or complex), got {arr[~finite].flat[0].item()!r}")
    value, _ = _psi_and_slope(arr, eps, T)
    undetermined = np.isnan(value)
    if undetermined.any():
        raise ValueError(
            f"psi(lam={arr[undetermined].flat[0].item()!r}, eps={eps:g}, T={T:g}) is not representable in "
            "float64: the phase of its oscillation, about T * sqrt(|lam| / eps), exceeds the float64 range"
        )
    if not np.iscomplexobj(arr):
        value = value.real
    return value[()]


@functools.lru_cache(maxsize=128)
def _critical_point(eps: float, T: float) -> tuple[float, float, float]:
    r"""Return :math:`(\lambda^*, m_\varepsilon, \theta^*)`: real minimiser of psi, its value, its angle.

    On :math:`\lambda < -1/(4\varepsilon)` write :math:`s = i\theta`; then
    :math:`\psi = e^{-b} g(\theta)`, :math:`g = \cos\theta + b\sin\theta/\theta`, whose global minimum on
    :math:`\theta > 0` is the unique zero in :math:`(\pi, 3\pi/2)` of
    :math:`\sin\theta(\theta^2 + b) - b\theta\cos\theta` (LM-3).

    Every finite :math:`\varepsilon, T > 0` is accepted: :math:`b` may overflow to inf (the equation is
    then divided by :math:`b`, its limit being :math:`\tan\theta = \theta`), and :math:`\lambda^*` is
    ``-inf`` where it lies beyond the float64 range.
    """
    # Not T / (2 eps): 2 eps overflows for eps > ~9e307.
    b = T / eps / 2
    if b <= 1:

        def equation(t):
            return math.sin(t) * (t * t + b) - b * t * math.cos(t)
    else:

        def equation(t):
            return math.sin(t) * (t * t / b + 1) - t * math.cos(t)

    theta = brentq(equation, math.pi, 1.5 * math.pi, xtol=1e-15, rtol=4 * _MACHINE_EPS)
    damping = math.exp(-b)
    # Past b ~ 745 the factor e^{-b} underflows and m_eps with it (to -0.0, as sin(theta) < 0); b itself
    # may then be inf, and 0 * inf is NaN.
    value = damping * (math.cos(theta) + b * math.sin(theta) / theta) if damping else -0.0
    # Expanded so that no intermediate raises OverflowError: (2 eps theta / T) ** 2 does for eps/T >~ 1e153.
    lam = -(0.25 / eps + (eps * theta / T) * (theta / T))
    return lam, value, theta


def m_eps(eps: float, T: float = 1.0) -> float:
    r"""Minimum of :math:`\psi_\varepsilon` over the real line.

    .. math:: m_\varepsilon = \min_{\lambda \in \mathbb R}\psi_\varepsilon(\lambda)
              = e^{-b}\Big(\cos\theta^* + b\,\frac{\sin\theta^*}{\theta^*}\Big),
              \qquad b = \frac{T}{2\varepsilon},

    where :math:`\theta^*` is the unique root in :math:`(\pi, 3\pi/2)` of
    :math:`\tan\theta = b\theta/(\theta^2 + b)`; the minimiser is
    :math:`\lambda^* = -(1 + 4\varepsilon^2\theta^{*2}/T^2)/(4\varepsilon) < -1/(4\varepsilon)`, in the
    oscillatory (underdamped) regime. :math:`-(1+b)e^{-b} < m_\varepsilon < -e^{-b}`, so
    :math:`-1 < m_\varepsilon < 0` (LM-3). It depends on :math:`(\varepsilon, T)` through
    :math:`T/\varepsilon` only. For :math:`T/\varepsilon \gtrsim 1400` the value underflows to ``-0.0``;
    for :math:`T/\varepsilon \lesssim 10^{-16}` it rounds to ``-1.0``. Every finite positive
    :math:`\varepsilon, T` gives a value.

    Parameters
    ----------
    eps : float
        Mass :math:`\varepsilon > 0`.
    T : float, optional
        Horizon :math:`T > 0`.

    Returns
    -------
    float
        :math:`m_\varepsilon`.
    """
    return _critical_point(_positive(eps, "eps"), _positive(T, "T"))[1]


def m_eps_table(
    eps_values: Iterable[float] = (0.05, 0.1, 0.2, 0.5, 1, 2, 5), T: float = 1.0
) -> list[tuple[float, float, float]]:
    r"""Tabulate :math:`(\varepsilon, m_\varepsilon, \lambda^*_\varepsilon)` for the given masses.

    Parameters
    ----------
    eps_values : iterable of float
        Masses :math:`\varepsilon > 0`.
    T : float, optional
        Horizon :math:`T > 0`.

    Returns
    -------
    list of tuple
        ``(eps, m_eps, argmin)`` with ``psi(argmin, eps, T) == m_eps``; ``argmin`` is ``-inf`` where it
        lies beyond the float64 range (:math:`\varepsilon \theta^{*2} / T^2 \gtrsim 10^{308}`).
    """
    T = _positive(T, "T")
    rows = []
    for eps in eps_values:
        lam, value, _ = _critical_point(_positive(eps, "eps"), T)
        rows.append((float(eps), value, lam))
    return rows


# --------------------------------------------------------------------------------------------------
# The matrix function Psi
# --------------------------------------------------------------------------------------------------


def _phase_matrix(A: np.ndarray, eps: float) -> np.ndarray:
    n = A.shape[0]
    eye, zero = np.eye(n), np.zeros((n, n))
    return np.block([[zero, eye], [A / eps, -eye / eps]])


def momentum_flow_matrix(A: ArrayLike, eps: float, T: float = 1.0) -> np.ndarray:
    r"""Time-:math:`T` map of :math:`\varepsilon x'' + x' = Ax` started at rest.

    .. math:: \Psi_\varepsilon(A) = \begin{bmatrix} I & 0\end{bmatrix}
              \exp\!\Big(T\begin{bmatrix} 0 & I\\ A/\varepsilon & -I/\varepsilon\end{bmatrix}\Big)
              \begin{bmatrix} I \\ 0\end{bmatrix},

    so that :math:`x(T) = \Psi_\varepsilon(A)x(0)` whenever :math:`x'(0) = 0`; it is the primary matrix
    function of :func:`psi` (LM-2).

    Parameters
    ----------
    A : (n, n) array_like
        Real matrix of the linear field.
    eps : float
        Mass :math:`\varepsilon > 0`.
    T : float, optional
        Horizon :math:`T > 0`.

    Returns
    -------
    (n, n) ndarray
        :math:`\Psi_\varepsilon(A)`.
    """
    A = _as_real_square(A, "A")
    return _flow(A, _positive(eps, "eps"), _positive(T, "T"))


def _flow(A: np.ndarray, eps: float, T: float) -> np.ndarray:
    """Psi_eps(A) without input validation."""
    n = A.shape[0]
    return sla.expm(T * _phase_matrix(A, eps))[:n, :n]


def _precise_residual(A: np.ndarray, D: np.ndarray, eps: float, T: float, phase_norm: float) -> float:
    r""":math:`\|\Psi_\varepsilon(A) - D\|_F` for the float64 entries of ``A`` taken as exact, with the
    phase-space exponential in multiple precision (mpmath).

    Evaluating :math:`\exp(TM)` for :math:`\|TM\| \gg 1` loses about :math:`\log_{10}\|TM\|` digits to
    each of the scaling and the squaring, so the working precision grows by twice that over the 30
    digits the residual needs; ``phase_norm`` is :math:`\|TM\|_F`.
    """
    import mpmath

    n = A.shape[0]
    digits = 30 + 2 * math.ceil(math.log10(max(phase_norm, 10.0)))
    with mpmath.workdps(digits):
        # mpf of a float is exact: A, D, eps and T enter as the binary numbers the caller has.
        scale = mpmath.mpf(T) / mpmath.mpf(eps)
        M = mpmath.zeros(2 * n, 2 * n)
        for i in range(n):
            M[i, n + i] = mpmath.mpf(T)
            M[n + i, n + i] = -scale
            for j in range(n):
                M[n + i, j] = mpmath.mpf(float(A[i, j])) * scale
        E = mpmath.expm(M)
        return float(
            mpmath.sqrt(
                mpmath.fsum((E[i, j] - mpmath.mpf(float(D[i, j]))) ** 2 for i in range(n) for j in range(n))
            )
        )


def _frobenius(M: np.ndarray) -> float:
    """Frobenius norm without overflow: BLAS ``nrm2`` scales, where ``np.linalg.norm`` squares entries and
    turns a matrix with entries past ~1e154 into inf. Non-finite entries give inf or NaN (which fail every
    residual check) rather than scipy's finiteness error."""
    return float(sla.norm(np.ravel(M), check_finite=False))


# --------------------------------------------------------------------------------------------------
# Spectral clusters and Jordan structure
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Cluster:
    """A group of numerically coincident eigenvalues with its invariant subspace and Jordan structure.

    ``weyr[j - 1]`` is the number of Jordan blocks of size >= j. A cluster that is not closed under
    conjugation (``real`` false) has positive imaginary centre and stands for itself and its conjugate.
    """

    center: complex
    real: bool
    basis: np.ndarray | None
    block: np.ndarray | None
    weyr: tuple[int, ...]


def _components(z: np.ndarray, threshold: float) -> list[np.ndarray]:
    """Connected components of the graph joining eigenvalues at distance <= threshold (single linkage)."""
    dist = np.abs(z[:, None] - z[None, :])
    label = -np.ones(len(z), dtype=int)
    for start in range(len(z)):
        if label[start] >= 0:
            continue
        label[start] = start
        stack = [start]
        while stack:
            i = stack.pop()
            for j in np.flatnonzero((dist[i] <= threshold) & (label < 0)):
                label[j] = start
                stack.append(j)
    return [np.flatnonzero(label == lab) for lab in np.unique(label)]


def _longest_linkage(z: np.ndarray) -> float:
    """Longest edge of a minimum spanning tree of the points z: the threshold that splits them first."""
    dist = np.abs(z[:, None] - z[None, :])
    visited = np.zeros(len(z), dtype=bool)
    visited[0] = True
    best = dist[0].copy()
    longest = 0.0
    for _ in range(len(z) - 1):
        best[visited] = np.inf
        j = int(np.argmin(best))
        longest = max(longest, best[j])
        visited[j] = True
        best = np.minimum(best, dist[j])
    return longest


def _weyr(N: np.ndarray, tol: float) -> tuple[int, ...] | None:
    r"""Weyr characteristic of a numerically nilpotent N (already divided by ||M||), or None.

    The number of Jordan blocks of size :math:`\ge j` is
    :math:`\operatorname{rank} N^{j-1} - \operatorname{rank} N^j`; ranks count singular values above
    ``tol``. None means the ranks do not describe a nilpotent matrix (N^size not negligible, or the
    counts increase), i.e. the cluster holds more than one eigenvalue at this tolerance.
    """
    size = N.shape[0]
    ranks = [size]
    power = np.eye(size, dtype=N.dtype)
    while ranks[-1] > 0 and len(ranks) <= size:
        power = power @ N
        ranks.append(int(np.sum(np.linalg.svd(power, compute_uv=False) > tol)))
    if ranks[-1] > 0:
        return None
    weyr = tuple(ranks[j - 1] - ranks[j] for j in range(1, len(ranks)))
    if any(weyr[j] > weyr[j - 1] for j in range(1, len(weyr))):
        return None
    return weyr


def _invariant_basis(M: np.ndarray, inside, size: int, real: bool) -> np.ndarray:
    """Orthonormal basis of the invariant subspace of the eigenvalues selected by ``inside``."""
    if real:
        _, Z, sdim = sla.schur(M, output="real", sort=lambda x, y: inside(complex(x, y)))
    else:
        _, Z, sdim = sla.schur(M.astype(complex), output="complex", sort=inside)
    if sdim != size:
        raise np.linalg.LinAlgError("the eigenvalue clusters could not be separated by Schur reordering")
    return Z[:, :size]


def _spectral_clusters(M: np.ndarray, tol: float, with_bases: bool) -> tuple[list[_Cluster], float]:
    r"""Partition the spectrum of a real M into clusters that are single eigenvalues at tolerance ``tol``.

    Eigenvalues are grouped by single linkage at :math:`\|M\|\,\mathrm{tol}^{1/k}`, the spread that
    rounding at level tol gives a Jordan block of size :math:`k = \min(n, 8)`; a group whose restriction
    is not numerically :math:`\mu I + \text{nilpotent}` (see :func:`_weyr`) is split at its longest
    linkage until every group is. Returns the clusters (one per conjugate pair) and :math:`\|M\|_2`.
    Without ``with_bases``, simple eigenvalues get no basis or block (the criteria do not need them).
    """
    n = M.shape[0]
    scale = float(np.linalg.norm(M, 2)) or 1.0
    eigenvalues = np.linalg.eigvals(M)
    threshold = scale * tol ** (1.0 / min(n, 8))
    pending = [(group, threshold) for group in _components(eigenvalues, threshold)]
    clusters = []
    while pending:
        group, threshold = pending.pop()
        z = eigenvalues[group]
        center = complex(z.mean())
        # A component either contains the conjugate of its members or lies at distance > threshold from it.
        real = bool(np.min(np.abs(np.conj(z[0]) - z)) <= threshold)
        if not real and center.imag < 0:
            continue
        if real:
            # A numerically zero eigenvalue is snapped to 0 so that its sign, which rounding decides,
            # cannot make it "negative" (Culver, LM-6) or "below m_eps" when |m_eps| is tiny.
            center = complex(center.real if abs(center.real) > tol * scale else 0.0, 0.0)
        if len(group) == 1 and not with_bases:
            clusters.append(_Cluster(center=center, real=real, basis=None, block=None, weyr=(1,)))
            continue
        others = np.delete(eigenvalues, group)

        def inside(w, z=z, others=others):
            return bool(others.size == 0 or np.min(np.abs(w - z)) < np.min(np.abs(w - others)))

        basis = _invariant_basis(M, inside, len(group), real)
        block = basis.conj().T @ M @ basis
        if real:
            block = block.real
        weyr = (1,) if len(group) == 1 else _weyr((block - center * np.eye(len(group))) / scale, tol)
        if weyr is None:
            split = _longest_linkage(z) * (1 - 1e-9)
            if split <= 0:
                raise np.linalg.LinAlgError(
                    f"could not resolve the Jordan structure of the eigenvalue {center:.6g}; try a larger tol"
                )
            pending.extend((group[part], split) for part in _components(z, split))
            continue
        clusters.append(_Cluster(center=center, real=real, basis=basis, block=block, weyr=weyr))
    return clusters, scale


def _block_counts(weyr: tuple[int, ...]) -> dict[int, int]:
    """Number of Jordan blocks of each size, from the Weyr characteristic."""
    padded = (*weyr, 0)
    return {k: padded[k - 1] - padded[k] for k in range(1, len(weyr) + 1) if padded[k - 1] > padded[k]}


def _paired(weyr: tuple[int, ...]) -> bool:
    """Every Jordan block size occurs an even number of times."""
    return all(count % 2 == 0 for count in _block_counts(weyr).values())


def _critical_admissible(weyr: tuple[int, ...]) -> bool:
    r"""Jordan blocks at the critical value split into groups {1}, {k, k}, {k+1, k} (LM-5, condition (b)).

    Equivalent to: whenever :math:`N_j` (blocks of size :math:`\ge j`) is odd for some :math:`j \ge 2`,
    there is a block of size :math:`j - 1`.
    """
    return all(not (weyr[j - 1] % 2 == 1 and weyr[j - 2] == weyr[j - 1]) for j in range(2, len(weyr) + 1))


def _sizes(weyr: tuple[int, ...]) -> list[int]:
    return sorted((k for k, count in _block_counts(weyr).items() for _ in range(count)), reverse=True)


# --------------------------------------------------------------------------------------------------
# Culver's criterion
# --------------------------------------------------------------------------------------------------


def has_real_logarithm(M: ArrayLike, tol: float | None = None) -> bool:
    r"""Whether a real matrix is :math:`e^{L}` for a real :math:`L` (Culver 1966).

    :math:`M = e^L` with :math:`L` real iff :math:`M` is nonsingular and, for every negative real
    eigenvalue :math:`\mu`, the Jordan blocks of each size occur an even number of times (LM-1). The
    Jordan structure at :math:`\mu` comes from ranks,
    :math:`\#\{\text{blocks of size} \ge j\} = \operatorname{rank}(M - \mu I)^{j-1}
    - \operatorname{rank}(M - \mu I)^j`, computed on the invariant subspace of the cluster of eigenvalues
    around :math:`\mu` (so that a defective eigenvalue split by rounding is recognised).

    Every decision is relative to :math:`\|M\|_2`, so the verdict for :math:`cM`, :math:`c > 0`, is that
    for :math:`M`: :math:`M` counts as singular when :math:`\sigma_{\min}(M) \le \mathrm{tol}\,\|M\|_2`,
    a rank counts the singular values of :math:`(N/\|M\|_2)^j` above ``tol`` (:math:`N` the nilpotent part
    on a cluster), and eigenvalues are clustered at :math:`\|M\|_2\,\mathrm{tol}^{1/\min(n, 8)}` (the
    spread that a perturbation of relative size ``tol`` gives a Jordan block of that size).

    Numerically undecidable input: existence of a real logarithm is not continuous in :math:`M`. Every
    neighbourhood of :math:`-I_2` (which has one) contains matrices without one, e.g.
    :math:`\begin{bmatrix}-1 & \delta\\ 0 & -1\end{bmatrix}` (one Jordan block) and
    :math:`\operatorname{diag}(-1, -1-\delta)`, and matrices with one, e.g. the pair
    :math:`-1 \pm i\delta`; likewise a nonsingular matrix is within :math:`\sigma_{\min}` of a singular
    one. The verdict is therefore that of the structured matrix within relative distance about ``tol``:
    :math:`\begin{bmatrix}-1 & 10^{-12}\\ 0 & -1\end{bmatrix}` is ``False`` at the default ``tol``
    (:math:`4.4\cdot 10^{-14}` for :math:`n = 2`) and ``True`` at ``tol=1e-10``, which treats it as
    :math:`-I_2`. Set ``tol`` at least to the relative error already in :math:`M` (e.g. from its
    computation, or from a similarity transform by an ill-conditioned matrix); a ``tol`` below the
    rounding level lets rounding noise decide.

    Parameters
    ----------
    M : (n, n) array_like
        Real matrix.
    tol : float, optional
        Positive relative tolerance of the decisions above; default :data:`.ROUNDING_FACTOR` :math:`\cdot\,
        n \cdot 2^{-52}`, i.e. :math:`2.2\cdot 10^{-14}\,n`: float64 rounding of a computed matrix, so
        that, e.g., ``diag(1, 1e-11)`` counts as nonsingular.

    Returns
    -------
    bool

    Raises
    ------
    ValueError
        If ``tol`` is not a finite positive number, or ``M`` is not a finite non-empty square matrix.
    """
    M = _as_real_square(M, "M")
    tol = _tolerance(tol, ROUNDING_FACTOR * M.shape[0] * _MACHINE_EPS)
    singular_values = np.linalg.svd(M, compute_uv=False)
    if singular_values[-1] <= tol * singular_values[0]:
        return False
    clusters, _ = _spectral_clusters(M, tol, with_bases=False)
    return all(_paired(c.weyr) for c in clusters if c.real and c.center.real < 0)


# --------------------------------------------------------------------------------------------------
# Reachability by momentum flows
# --------------------------------------------------------------------------------------------------


def _obstructions(clusters: list[_Cluster], value: float, delta: float) -> list[_Cluster]:
    """Real eigenvalue clusters that violate the reachability criterion of LM-5."""
    bad = []
    for c in clusters:
        if not c.real:
            continue
        mu = c.center.real
        if mu < value - delta and not _paired(c.weyr):
            bad.append(c)
        elif abs(mu - value) <= delta and not _critical_admissible(c.weyr):
            bad.append(c)
    return bad


def _scale_bound(clusters: list[_Cluster], value: float, zero: float) -> float:
    """min m_eps / mu over real eigenvalues mu < -zero with unpaired Jordan blocks (LM-6)."""
    bounds = [
        value / c.center.real for c in clusters if c.real and c.center.real < -zero and not _paired(c.weyr)
    ]
    return min(bounds, default=math.inf)


def max_reachable_scale(D: ArrayLike, eps: float, T: float = 1.0, tol: float | None = None) -> float:
    r"""Supremum of the scales :math:`s` for which :math:`sD` is the time-:math:`T` map of a momentum flow.

    By LM-6 the set of :math:`s > 0` with :math:`sD \in \Psi_\varepsilon(\mathbb R^{n\times n})` is the
    interval :math:`(0, s_{\max})` or :math:`(0, s_{\max}]`, where

    .. math:: s_{\max} = \min\{\, m_\varepsilon/\mu : \mu < 0 \text{ a real eigenvalue of } D
              \text{ whose Jordan block sizes are not all paired} \,\}

    (:math:`+\infty` if there is none). :math:`s_{\max}` itself belongs to the set iff the Jordan
    blocks of the minimising :math:`\mu` satisfy the critical-value condition (b) of LM-5 (for example
    when they are all :math:`1\times 1`). Singular and nilpotent :math:`D` are covered: every real matrix
    is reachable up to a positive scale.

    Parameters
    ----------
    D : (n, n) array_like
        Real matrix.
    eps, T : float
        Mass and horizon, both positive.
    tol : float, optional
        Relative tolerance of the Jordan-structure decisions (see :func:`has_real_logarithm`); default
        :data:`.DEFAULT_TOL`.

    Returns
    -------
    float
        :math:`s_{\max} \in (0, \infty]`.
    """
    D = _as_real_square(D, "D")
    eps, T, tol = _positive(eps, "eps"), _positive(T, "T"), _tolerance(tol)
    clusters, scale = _spectral_clusters(D, tol, with_bases=False)
    return _scale_bound(clusters, _critical_point(eps, T)[1], tol * scale)


def _unreachable_message(bad: list[_Cluster], scale_limit: float, value: float, eps: float, T: float) -> str:
    reasons = []
    for c in bad:
        mu = c.center.real
        if mu < value:
            why = "they are not paired (each size must occur an even number of times below m_eps)"
        else:
            why = "they cannot be grouped as {1}, {k, k}, {k+1, k} at the critical value"
        reasons.append(f"eigenvalue {mu:.6g} with Jordan block sizes {_sizes(c.weyr)}: {why}")
    return (
        f"D is not reachable by a linear momentum flow with eps={eps:g}, T={T:g} "
        f"(m_eps = {value:.6g}): " + "; ".join(reasons) + f". s*D is reachable for every 0 < s < "
        f"{scale_limit:.6g} (max_reachable_scale)."
    )


# --------------------------------------------------------------------------------------------------
# Scalar inverses of psi
# --------------------------------------------------------------------------------------------------


def _newton_step(lam: complex, target: complex, eps: float, T: float) -> complex:
    """(psi(lam) - target) / psi'(lam): inf or NaN where psi' vanishes or underflows, which callers reject."""
    value, slope = _psi_and_slope(lam, eps, T)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        return complex((value - target) / slope)


def _newton_scalar(lam: complex, target: complex, eps: float, T: float) -> complex | None:
    """Newton's method for psi(lam) = target; None if it has not converged in 40 steps."""
    for _ in range(40):
        step = _newton_step(lam, target, eps, T)
        if not np.isfinite(step):
            return None
        lam -= step
        if abs(step) <= 1e-13 * max(1.0, abs(lam)):
            return lam - _newton_step(lam, target, eps, T)
    return None


def _continue_preimage(lam: complex, mu_from: complex, mu_to: complex, eps: float, T: float) -> complex:
    r"""Follow the branch of :math:`\psi^{-1}` through :math:`\lambda` along the segment mu_from -> mu_to.

    Predictor: tangent step; corrector: Newton. A step is accepted only if the corrector lands near the
    predictor, which keeps the continuation on one branch.
    """
    t, h = 0.0, 0.125
    while t < 1.0:
        h = min(h, 1.0 - t)
        target = mu_from + (t + h) * (mu_to - mu_from)
        guess = lam - _newton_step(lam, target, eps, T)
        new = _newton_scalar(guess, target, eps, T)
        if new is not None and abs(new - guess) <= 0.25 * abs(guess - lam) + 1e-12 * max(1.0, abs(lam)):
            lam, t, h = new, t + h, 2 * h
        else:
            h /= 2
            if h < 1e-10:
                raise RuntimeError(f"continuation of psi^-1 from {mu_from} to {mu_to} failed")
    return lam


def _real_branch_inverse(mu: float, eps: float, T: float) -> float:
    r"""The preimage of :math:`\mu > m_\varepsilon` on :math:`(\lambda^*, \infty)`, where psi increases.

    Raises ``ValueError`` when :math:`\mu` lies beyond the largest value psi takes on the float64 range of
    :math:`\lambda` below :data:`_FLOAT_LIMIT`.
    """
    lam_star, _, _ = _critical_point(eps, T)

    def value(lam: float) -> float:
        return float(_psi_and_slope(lam, eps, T)[0].real)

    def unreachable(limit: float) -> ValueError:
        return ValueError(
            f"D has an eigenvalue of size about {mu:.6g}, beyond the largest value psi reaches at "
            f"eps = {eps:g}, T = {T:g} for a float64 lam with room to spare before float64 overflow "
            f"(about {limit:.6g}): scale D down"
        )

    # Bracket the root in [low, high], tripling the width. An upper end where psi exceeds _FLOAT_LIMIT (or
    # is inf) lies above every root that can be used, so it is pulled back to the midpoint. Upper ends stay
    # below the largest float and within _FLOAT_MAX of low, so that high - low (which brentq forms) is
    # finite. The first step can be below the spacing of floats at lam_star (T >~ 1e16 |lam_star|), hence
    # nextafter.
    def upper(candidate: float) -> float:
        return min(candidate, _FLOAT_MAX, low + _FLOAT_MAX)

    low = lam_star
    high = upper(max(low + max(1.0, abs(low)) / T, math.nextafter(low, math.inf)))
    while True:
        top = value(high)
        if not top <= _FLOAT_LIMIT:
            if (middle := low + (high - low) / 2) in (low, high):
                raise unreachable(value(low))
            high = middle
        elif top < mu:
            if high == _FLOAT_MAX:
                raise unreachable(top)
            low, high = high, high + 2 * (high - low)
            high = upper(high)
        else:
            break
    # The scale of the root ranges over the floats with eps and T (about 1/T for T >> eps), so the tolerance
    # is relative, down to the smallest normal float. The bracket can then span the float range from a
    # far-away lam_star (-1/(4 eps) for small eps) to a root near 0: ~2100 halvings, and Brent's method
    # halves the bracket at least every second step.
    return brentq(
        lambda lam: value(lam) - mu,
        low,
        high,
        xtol=float(np.finfo(float).tiny),
        rtol=4 * _MACHINE_EPS,
        maxiter=5000,
    )


def _complex_preimage(c: complex, eps: float, T: float) -> complex:
    """A preimage of a non-real c, continued from the real branch along a segment off the real axis."""
    _, value, _ = _critical_point(eps, T)
    x0 = max(c.real, value + abs(c.imag))
    return _continue_preimage(complex(_real_branch_inverse(x0, eps, T)), x0, c, eps, T)


def _paired_preimage(mu: float, eps: float, T: float) -> complex:
    r"""A preimage with positive imaginary part of a real :math:`\mu < m_\varepsilon`.

    Below :math:`m_\varepsilon` the two real preimages near :math:`\lambda^*` have merged into the pair
    :math:`\lambda^* \pm i\sqrt{(m_\varepsilon - \mu)/c_2}`, :math:`c_2 = \psi''(\lambda^*)/2 > 0`;
    that pair is followed down to :math:`\mu` along the real axis, which contains no critical value
    below :math:`m_\varepsilon`.
    """
    lam_star, value, _ = _critical_point(eps, T)
    if value == 0:
        raise RuntimeError(
            f"momentum_logarithm cannot reach the eigenvalue {mu:.6g} < m_eps at eps = {eps:g}, T = {T:g}: "
            "its preimage is continued from the minimum of psi, and m_eps underflows to -0 for T/eps >~ 1400"
        )
    coefficients, radius = _psi_taylor(lam_star, eps, T, 2)
    start = value - min(value - mu, 1e-3 * abs(value))
    # c_2 rho^2 is the scaled coefficient: (m_eps - start) / c_2 = rho^2 (m_eps - start) / (c_2 rho^2).
    lam = _newton_scalar(
        lam_star + 1j * radius * math.sqrt((value - start) / coefficients[2].real), start, eps, T
    )
    if lam is None:
        raise RuntimeError(f"no complex preimage of {start} found near the critical point")
    return _continue_preimage(lam, start, mu, eps, T)


# --------------------------------------------------------------------------------------------------
# Power series
# --------------------------------------------------------------------------------------------------


def _psi_taylor(lam0: complex, eps: float, T: float, order: int) -> tuple[np.ndarray, float]:
    r"""Return the scaled Taylor coefficients of psi at :math:`\lambda_0`, up to ``order``, and their radius.

    The coefficients :math:`\psi^{(j)}(\lambda_0)\rho^j/j!` are those of :math:`\psi(\lambda_0 + \rho\xi)` in
    powers of :math:`\xi`, by Cauchy's formula on the circle :math:`|\xi| = 1`: the trapezoidal rule there is
    spectrally accurate for the entire psi. The radius :math:`\rho` is the :math:`\lambda`-distance over
    which :math:`s` moves by about 1/2, so the samples stay of one size, and so do the scaled
    coefficients, whereas the unscaled ones under- or overflow when :math:`\rho` is far from 1
    (:math:`\rho = \varepsilon/T^2` near the double root).
    """
    # (eps / T^2) max(|s|, 1) with s = (T / eps) h, formed without T**2 or eps**2 (which overflow).
    radius = max(abs(complex(_half_root(np.asarray(lam0, dtype=complex), eps))), eps / T) / T
    nodes = max(64, 4 * order)
    samples, _ = _psi_and_slope(lam0 + radius * np.exp(2j * np.pi * np.arange(nodes) / nodes), eps, T)
    return np.fft.fft(samples)[: order + 1] / nodes, radius


def _inverse_series(lam0: complex, eps: float, T: float, order: int, real: bool) -> np.ndarray:
    r"""Taylor coefficients :math:`\lambda_0, d_1, \dots, d_{\text{order}}` of the local inverse of psi.

    :math:`\psi^{-1}(\psi(\lambda_0) + y) = \lambda_0 + \sum_k d_k y^k` near a non-critical
    :math:`\lambda_0` (LM-4), by reverting the scaled series of :func:`_psi_taylor` in :math:`\xi` and
    multiplying by :math:`\rho` (:math:`\lambda - \lambda_0 = \rho\xi`); ``real`` keeps real parts (a real
    :math:`\lambda_0`, where the series is real).
    """
    coefficients, radius = _psi_taylor(lam0, eps, T, order)
    if real:
        coefficients, lam0 = coefficients.real, lam0.real
    return np.concatenate(([lam0], radius * _revert_series(coefficients[1:])))


def _revert_series(c: np.ndarray) -> np.ndarray:
    r"""Compositional inverse: given :math:`y = \sum_{j\ge1} c_j x^j` (c[0] = c_1 != 0), the coefficients
    :math:`d_1..d_K` of :math:`x = \sum_{j \ge 1} d_j y^j`."""
    order = len(c)
    d = np.zeros(order, dtype=np.result_type(c, float))
    d[0] = 1 / c[0]
    for n in range(2, order + 1):
        x = np.concatenate(([0], d[: n - 1]))
        power, total = np.ones(1, dtype=d.dtype), 0
        for j in range(1, n + 1):
            power = np.convolve(power, x)[: n + 1]
            if len(power) > n:
                total = total + c[j - 1] * power[n]
        d[n - 1] = -total / c[0]
    return d


def _series_sqrt(u: np.ndarray) -> np.ndarray:
    """Coefficients of sqrt(sum u_j g^j) for u_0 > 0."""
    root = np.zeros_like(u)
    root[0] = math.sqrt(u[0])
    for n in range(1, len(u)):
        root[n] = (u[n] - np.dot(root[1:n], root[n - 1 : 0 : -1])) / (2 * root[0])
    return root


def _matrix_series(coefficients: np.ndarray, N: np.ndarray) -> np.ndarray:
    """sum_k coefficients[k] N^k, by Horner's rule.

    Its partial sums stay on the scale of the terms, where the powers N^k alone can overflow: N is the
    rounding noise of a cluster (~1e-16 times its eigenvalue, up to ~1e288) and the coefficients of the
    inverse of psi shrink as fast.
    """
    eye = np.eye(N.shape[0], dtype=np.result_type(coefficients, N))
    result = coefficients[-1] * eye
    for coefficient in coefficients[-2::-1]:
        result = result @ N + coefficient * eye
    return result


# --------------------------------------------------------------------------------------------------
# Jordan chains and the per-cluster logarithms
# --------------------------------------------------------------------------------------------------


def _jordan_chains(N: np.ndarray, weyr: tuple[int, ...]) -> tuple[np.ndarray, list[tuple[int, int]]]:
    r"""A real Jordan basis of the nilpotent N with the given Weyr characteristic.

    Returns :math:`V` and the chains as (first column, length); a chain with head :math:`h` of length
    :math:`k` occupies the columns :math:`N^{k-1}h, \dots, Nh, h`, so that :math:`NV = VJ` with
    :math:`J` the direct sum of upper Jordan blocks. Heads of length-:math:`k` chains are taken in
    :math:`\ker N^k`, orthogonally to :math:`\ker N^{k-1}` plus the level-:math:`k` vectors of the
    longer chains (the classical construction, with kernels of prescribed dimension from the SVD).
    """
    size, depth = N.shape[0], len(weyr)
    kernels, power = [np.zeros((size, 0))], np.eye(size)
    for j in range(1, depth + 1):
        power = power @ N
        _, _, vh = np.linalg.svd(power)
        kernels.append(vh[size - sum(weyr[:j]) :].T)
    vectors: list[list[np.ndarray]] = []
    for k in range(depth, 0, -1):
        count = weyr[k - 1] - (weyr[k] if k < depth else 0)
        if count == 0:
            continue
        # Level-k vectors N^(l-k) h of the longer chains already chosen.
        used = np.column_stack([kernels[k - 1], *(chain[len(chain) - k] for chain in vectors)])
        span = np.linalg.qr(used)[0] if used.shape[1] else used
        free = kernels[k] - span @ (span.T @ kernels[k])
        heads = np.linalg.svd(free)[0][:, :count]
        for head in heads.T:
            chain = [head]
            for _ in range(k - 1):
                chain.append(N @ chain[-1])
            vectors.append(chain)
    columns, chains = [], []
    for chain in vectors:
        chains.append((len(columns), len(chain)))
        columns.extend(reversed(chain))
    return np.column_stack(columns), chains


def _jordan_matrix(size: int, chains: list[tuple[int, int]]) -> np.ndarray:
    J = np.zeros((size, size))
    for first, length in chains:
        for i in range(first + 1, first + length):
            J[i - 1, i] = 1.0
    return J


def _similar(V: np.ndarray, F: np.ndarray) -> np.ndarray:
    """V F V^-1."""
    return np.linalg.solve(V.T, (V @ F).T).T


def _group_chains(chains: list[tuple[int, int]], critical: bool) -> list[tuple[tuple[int, int], ...]]:
    r"""Pair equal-length Jordan chains; at the critical value use {k+1, k} pairs and singletons too.

    Greedy from the longest chains down: a leftover chain of length k must take a partner of length k-1
    (LM-5). At the critical value, chains of length 1 left over stay single: :math:`\lambda^*` itself
    serves them, whereas a pair would need :math:`h_1 = c_2^{-1/2}`, large when psi is flat there.
    Admissibility was checked beforehand (``_paired`` / ``_critical_admissible``).
    """
    by_length = defaultdict(list)
    for chain in chains:
        by_length[chain[1]].append(chain)
    groups, carry = [], None
    for k in range(max(by_length), 0, -1):
        pool = by_length[k]
        if carry is not None:
            groups.append((carry, pool.pop()))
            carry = None
        if critical and k == 1:
            groups.extend((chain,) for chain in pool)
            break
        while len(pool) >= 2:
            groups.append((pool.pop(), pool.pop()))
        if pool:
            carry = pool.pop()
    return groups


def _regular_block(cluster: _Cluster, lam0: complex, eps: float, T: float) -> np.ndarray:
    r"""Primary branch: :math:`F = \phi(B) = \sum_k d_k (B - cI)^k` with :math:`\phi = \psi^{-1}` near c.

    The Taylor coefficients :math:`d_k` of the local inverse come from reverting the Taylor series of
    psi at :math:`\lambda_0 = \phi(c)`, which is non-critical (LM-4); the series stops because
    :math:`B - cI` is numerically nilpotent, with three extra terms for the residual spread of the cluster.
    """
    d = _inverse_series(lam0, eps, T, len(cluster.weyr) + 3, cluster.real)
    center = cluster.center.real if cluster.real else cluster.center
    return _matrix_series(d, cluster.block - center * np.eye(cluster.block.shape[0]))


def _paired_block(cluster: _Cluster, eps: float, T: float) -> np.ndarray:
    r"""Real eigenvalue :math:`\mu < m_\varepsilon` with paired Jordan chains.

    A complex structure :math:`K` (:math:`K^2 = -I`) pairing equal chains commutes with :math:`J`; on
    :math:`\mathbb R^{2k} \cong \mathbb C^k` it is multiplication by :math:`i`, so
    :math:`F = \sum_k(\operatorname{Re} d_k + \operatorname{Im} d_k K)J^k` realises the complex primary
    function :math:`\phi(\mu I + J)` of a branch with non-real :math:`\phi(\mu)` and
    :math:`\Psi_\varepsilon(F) = \mu I + J`.
    """
    mu, size = cluster.center.real, cluster.block.shape[0]
    V, chains = _jordan_chains(cluster.block - mu * np.eye(size), cluster.weyr)
    J = _jordan_matrix(size, chains)
    K = np.zeros((size, size))
    for (first_a, length), (first_b, _) in _group_chains(chains, critical=False):
        for i in range(length):
            K[first_b + i, first_a + i] = 1.0
            K[first_a + i, first_b + i] = -1.0
    lam0 = _paired_preimage(mu, eps, T)
    d = _inverse_series(lam0, eps, T, len(cluster.weyr), real=False)
    F = np.zeros((size, size))
    power = np.eye(size)
    for coefficient in d[: len(cluster.weyr)]:
        F += (coefficient.real * np.eye(size) + coefficient.imag * K) @ power
        power = power @ J
    return _similar(V, F)


def _critical_block(cluster: _Cluster, eps: float, T: float) -> np.ndarray:
    r"""Eigenvalue :math:`m_\varepsilon`: Jordan groups {k, k}, {k+1, k}, {1} from :math:`\lambda^*`.

    Near :math:`\lambda^*`, :math:`\psi(\lambda^* + g) - m_\varepsilon = y(g)^2` with
    :math:`y(g) = g\sqrt{c_2 + c_3 g + \dots}` a local coordinate; with :math:`h = y^{-1}` and a
    nilpotent :math:`H` having one Jordan block and :math:`H^2 = J_p \oplus J_q` (interleave the two
    chains), :math:`F = \lambda^* I + h(H)` gives :math:`\Psi_\varepsilon(F) = m_\varepsilon I + H^2`.
    """
    lam_star, value, _ = _critical_point(eps, T)
    size = cluster.block.shape[0]
    V, chains = _jordan_chains(cluster.block - value * np.eye(size), cluster.weyr)
    H = np.zeros((size, size))
    longest = 1
    for group in _group_chains(chains, critical=True):
        if len(group) == 1:
            continue
        (first_a, p), (first_b, q) = group
        longest = max(longest, p + q)
        for i in range(p):
            if i >= 1:
                H[first_b + i - 1, first_a + i] = 1.0
            if i < q:
                H[first_a + i, first_b + i] = 1.0
    # In the scaled variable xi = g / rho of _psi_taylor: y = xi sqrt(c_2 + c_3 xi + ...), and h = rho y^{-1}.
    coefficients, radius = _psi_taylor(lam_star, eps, T, longest + 1)
    y = _series_sqrt(coefficients.real[2:])[: longest - 1] if longest > 1 else np.zeros(0)
    h = radius * _revert_series(y) if y.size else np.zeros(0)
    return _similar(V, _matrix_series(np.concatenate(([lam_star], h)), H))


def _psi_jacobian(A: np.ndarray, eps: float, T: float) -> np.ndarray:
    r"""Matrix of the Fréchet derivative :math:`E \mapsto L_\Psi(A, E)` acting on row-major vec(E).

    :math:`L_\Psi(A, E)` is the top-left block of :math:`L_{\exp}(TH, T\,\delta H)` with
    :math:`\delta H = [[0, 0], [E/\varepsilon, 0]]`. All NaN where :math:`TH` overflows (there is no
    derivative to take, and scipy refuses non-finite input).
    """
    n = A.shape[0]
    H = T * _phase_matrix(A, eps)
    if not np.all(np.isfinite(H)):
        return np.full((n * n, n * n), np.nan)
    jacobian = np.empty((n * n, n * n))
    for index in range(n * n):
        direction = np.zeros((2 * n, 2 * n))
        direction[n + index // n, index % n] = T / eps
        jacobian[:, index] = sla.expm_frechet(H, direction, compute_expm=False)[:n, :n].ravel()
    return jacobian


def _gauss_newton_polish(A: np.ndarray, D: np.ndarray, eps: float, T: float, steps: int = 4) -> np.ndarray:
    r"""Gauss-Newton on :math:`\Psi_\varepsilon(A) = D`; keeps a step only if it lowers the residual.

    Least squares rather than a plain solve because the Jacobian is singular exactly in the non-primary
    cases (divided differences :math:`\psi[\lambda, \bar\lambda] = 0` for a real :math:`\mu` reached from a
    conjugate pair), where the solutions form a continuum.
    """
    residual = D - _flow(A, eps, T)
    for _ in range(steps):
        jacobian = _psi_jacobian(A, eps, T)
        if not np.all(np.isfinite(jacobian)):
            break
        trial = A + np.linalg.lstsq(jacobian, residual.ravel(), rcond=1e-12)[0].reshape(A.shape)
        trial_residual = D - _flow(trial, eps, T)
        if not _frobenius(trial_residual) < _frobenius(residual):
            break
        A, residual = trial, trial_residual
    return A


def momentum_logarithm(
    D: ArrayLike, eps: float, T: float = 1.0, *, tol: float | None = None, rtol: float = 1e-8
) -> np.ndarray:
    r"""A real :math:`A` with :math:`\Psi_\varepsilon(A) = D`: the linear field whose momentum flow maps as D.

    Solves :math:`\Psi_\varepsilon(A) = D`, i.e. :math:`x(T) = Dx(0)` for
    :math:`\varepsilon x'' + x' = Ax`, :math:`x'(0) = 0`. Existence is decided by LM-5; the construction
    follows its proof, cluster by cluster on the invariant subspaces of :math:`D`:

    * non-real eigenvalues and real ones above :math:`m_\varepsilon`: a local inverse
      :math:`\phi = \psi^{-1}` (real branch on :math:`(\lambda^*, \infty)` for real eigenvalues), applied as
      a Taylor series in the nilpotent part;
    * real :math:`\mu < m_\varepsilon` (paired Jordan chains): a non-real preimage acting through a
      complex structure that pairs the chains;
    * :math:`\mu = m_\varepsilon`: the critical point :math:`\lambda^*` with its square-root coordinate.

    The result is polished by Gauss-Newton if needed and always verified:
    :math:`\|\Psi_\varepsilon(A) - D\|_F \le \mathrm{rtol}\,\max(\|D\|_F, 1)`.

    Parameters
    ----------
    D : (n, n) array_like
        Real target matrix.
    eps, T : float
        Mass and horizon, both positive.
    tol : float, optional
        Relative tolerance of the Jordan-structure decisions (see :func:`has_real_logarithm`; default
        :data:`.DEFAULT_TOL`); a real
        eigenvalue within ``min(tol * max(||D||_2, |m_eps|), |m_eps| / 2)`` of :math:`m_\varepsilon` is
        treated as equal to it.
    rtol : float, optional
        Verification tolerance on the relative residual.

    Returns
    -------
    (n, n) ndarray
        Real :math:`A`. It is one solution among many (psi is not injective).

    Raises
    ------
    ValueError
        If :math:`D` is not reachable; the message gives :func:`max_reachable_scale`. Also if it is
        reachable only beyond float64: a real eigenvalue above the largest value psi takes with room to
        spare before overflow (:math:`2^{-12}` of the float64 maximum, about :math:`4.4\cdot 10^{304}`, or
        less where :math:`\lambda` reaches the float64 range first; the message gives it), or
        :math:`\varepsilon/T^2`, psi's scale in :math:`\lambda`, beyond that same bound.
    RuntimeError
        If the computed :math:`A` fails the residual check (severely ill-conditioned :math:`D`, or a stiff
        flow, :math:`T/\varepsilon \gtrsim 10^9`, whose phase-space exponential loses accuracy), or if an
        eigenvalue below :math:`m_\varepsilon` meets an :math:`m_\varepsilon` that underflows to ``-0.0``
        (:math:`T/\varepsilon \gtrsim 1400`).

    Notes
    -----
    For Jordan blocks of :math:`D` at eigenvalues near 0 and :math:`T/\varepsilon \gtrsim 30`,
    :math:`|A| \sim 1/|\psi'| \sim e^{T/(2\varepsilon)}` makes :math:`A \mapsto \Psi_\varepsilon(A)` so
    ill-conditioned that a float64 residual can neither certify nor reliably reject the result
    (``theory/linear_maps.md``, Numerical method, Limits: for :math:`J_2(0)` at
    :math:`T/\varepsilon = 64` it reports :math:`4\cdot10^{-10}` where the exact residual is
    :math:`4\cdot10^{-8}`). Wherever :math:`2^{-52}\|TM\|_F` (:math:`M` the phase-space matrix) exceeds
    :math:`10^{-3}` rtol, the residual is therefore evaluated again in multiple precision, with the
    float64 entries of :math:`A` taken as exact: a returned :math:`A` always meets ``rtol`` exactly, and
    where the float64 construction cannot reach it, ``RuntimeError`` is raised.
    """
    D = _as_real_square(D, "D")
    eps, T, tol = _positive(eps, "eps"), _positive(T, "T"), _tolerance(tol)
    rtol = _positive(rtol, "rtol")
    if not (lam_scale := eps / T / T) <= _FLOAT_LIMIT:
        raise ValueError(
            f"eps / T**2 = {lam_scale:.6g} (eps = {eps:g}, T = {T:g}) is beyond {_FLOAT_LIMIT:.6g}: "
            "momentum_logarithm works in lam on psi's scale eps / T**2, which float64 must hold with room to "
            "spare; use a smaller eps or a larger T"
        )
    clusters, scale = _spectral_clusters(D, tol, with_bases=True)
    _, value, _ = _critical_point(eps, T)
    # An eigenvalue within delta of m_eps counts as m_eps; capped at |m_eps|/2 so that 0 (where psi is
    # regular) stays distinct from a tiny m_eps (small eps).
    delta = min(tol * max(scale, abs(value)), abs(value) / 2)
    bad = _obstructions(clusters, value, delta)
    if bad:
        raise ValueError(_unreachable_message(bad, _scale_bound(clusters, value, tol * scale), value, eps, T))
    columns, blocks = [], []
    for cluster in clusters:
        mu = cluster.center
        if not cluster.real:
            F = _regular_block(cluster, _complex_preimage(mu, eps, T), eps, T)
            columns += [cluster.basis, cluster.basis.conj()]
            blocks += [F, F.conj()]
            continue
        if mu.real > value + delta:
            F = _regular_block(cluster, complex(_real_branch_inverse(mu.real, eps, T)), eps, T)
        elif mu.real < value - delta:
            F = _paired_block(cluster, eps, T)
        else:
            F = _critical_block(cluster, eps, T)
        columns.append(cluster.basis)
        blocks.append(F)
    A = _similar(np.hstack(columns), sla.block_diag(*blocks)).real
    norm_d = max(_frobenius(D), 1.0)
    # Huge solutions (psi' ~ e^{-T/(2 eps)} near psi = 0) overflow; non-finite residuals fail the check.
    with np.errstate(over="ignore", invalid="ignore"):
        if np.all(np.isfinite(A)) and not _frobenius(_flow(A, eps, T) - D) <= _POLISH_TRIGGER * norm_d:
            A = _gauss_newton_polish(A, D, eps, T)
        residual = _frobenius(_flow(A, eps, T) - D) / norm_d if np.all(np.isfinite(A)) else np.inf
    if residual <= rtol:
        phase_norm = _frobenius(T * _phase_matrix(A, eps))
        if _U * phase_norm > _CERTIFY_FRACTION * rtol:
            residual = _precise_residual(A, D, eps, T, phase_norm) / norm_d
    if not residual <= rtol:
        raise RuntimeError(
            f"momentum_logarithm could not verify its result: relative residual {residual:.3g} "
            f"> rtol={rtol:g}"
        )
    return A


# --------------------------------------------------------------------------------------------------
# Machine checks (theory/linear_maps.md). Each re-derives its claim by integrating the ODE with
# solve_ivp, by exact rational arithmetic, or by an argument that does not use the code it checks.
# --------------------------------------------------------------------------------------------------

_ODE_RTOL = 1e-12


def _verdict(measured, tolerance: str, passed) -> Verdict:
    return Verdict(float(measured), tolerance, bool(passed))


def _integrated_psi(lam, eps: float, T: float, derivative: bool = False, rtol: float = _ODE_RTOL):
    r"""Integrate :math:`\varepsilon y'' + y' = \lambda y`, :math:`y(0) = 1`, :math:`y'(0) = 0`, for many
    :math:`\lambda` at once; optionally also :math:`w = \partial y/\partial\lambda`, which solves
    :math:`\varepsilon w'' + w' = \lambda w + y`, :math:`w(0) = w'(0) = 0`. Returns :math:`y(T)`
    (and :math:`w(T)`), at relative tolerance ``rtol``.
    """
    lam = np.asarray(lam, dtype=complex).ravel()
    k = lam.size

    def rhs(_, y):
        position, velocity = y[:k], y[k : 2 * k]
        out = [velocity, (lam * position - velocity) / eps]
        if derivative:
            d_position, d_velocity = y[2 * k : 3 * k], y[3 * k :]
            out += [d_velocity, (lam * d_position + position - d_velocity) / eps]
        return np.concatenate(out)

    y0 = np.zeros((4 if derivative else 2) * k, dtype=complex)
    y0[:k] = 1.0
    end = solve_ivp(rhs, (0.0, T), y0, method="DOP853", rtol=rtol, atol=1e-14).y[:, -1]
    return (end[:k], end[2 * k : 3 * k]) if derivative else end[:k]


def _integrated_flow(A: np.ndarray, eps: float, T: float) -> np.ndarray:
    r"""Integrated :math:`X(T)`: :math:`\varepsilon X'' + X' = AX`, :math:`X(0) = I`, :math:`X'(0) = 0`."""
    n = A.shape[0]

    def rhs(_, y):
        X, V = y[: n * n].reshape(n, n), y[n * n :].reshape(n, n)
        return np.concatenate([V.ravel(), ((A @ X - V) / eps).ravel()])

    y0 = np.concatenate([np.eye(n).ravel(), np.zeros(n * n)])
    return (
        solve_ivp(rhs, (0.0, T), y0, method="DOP853", rtol=_ODE_RTOL, atol=1e-14).y[: n * n, -1].reshape(n, n)
    )


def _flow_error(A: np.ndarray, D: np.ndarray, eps: float, T: float) -> float:
    return float(np.linalg.norm(_integrated_flow(A, eps, T) - D) / max(np.linalg.norm(D), 1.0))


def _exact_rank(rows: list[list]) -> int:
    """Rank by Gaussian elimination over the rationals (entries are converted exactly)."""
    from fractions import Fraction

    rows = [[Fraction(x) for x in row] for row in rows]
    rank = 0
    for col in range(len(rows[0])):
        pivot = next((r for r in range(rank, len(rows)) if rows[r][col] != 0), None)
        if pivot is None:
            continue
        rows[rank], rows[pivot] = rows[pivot], rows[rank]
        for r in range(rank + 1, len(rows)):
            factor = rows[r][col] / rows[rank][col]
            rows[r] = [a - factor * b for a, b in zip(rows[r], rows[rank], strict=True)]
        rank += 1
    return rank


def _exact_jordan_counts(M: np.ndarray, mu: float) -> dict[int, int]:
    r"""Jordan block counts at :math:`\mu` from exact ranks of :math:`(M - \mu I)^j` (integer matrices)."""
    from fractions import Fraction

    n = M.shape[0]
    N = [[Fraction(M[i, j]) - (Fraction(mu) if i == j else 0) for j in range(n)] for i in range(n)]
    power = [[Fraction(int(i == j)) for j in range(n)] for i in range(n)]
    ranks = [n]
    while ranks[-1] > 0 and len(ranks) <= n:
        power = [[sum(power[i][k] * N[k][j] for k in range(n)) for j in range(n)] for i in range(n)]
        ranks.append(_exact_rank(power))
    at_least = [ranks[j - 1] - ranks[j] for j in range(1, len(ranks))] + [0]
    return {
        k: at_least[k - 1] - at_least[k] for k in range(1, len(at_least)) if at_least[k - 1] > at_least[k]
    }


def _rotation(angle: float) -> np.ndarray:
    return np.array([[0.0, -angle], [angle, 0.0]])


def random_negative_determinant(n: int, rng: np.random.Generator) -> np.ndarray:
    """A standard normal ``n x n`` matrix with its first row negated if needed so that ``det < 0``: for odd
    ``n`` not a real matrix exponential (Culver), the targets of LM checks and the linear-maps experiment."""
    M = rng.standard_normal((n, n))
    if np.linalg.det(M) > 0:
        M[0] *= -1
    return M


@claim(
    "LM-1",
    "Culver: real M = e^L with L real iff M is nonsingular and at each negative eigenvalue every Jordan "
    "block size occurs an even number of times.",
    DOC,
)
def check_culver() -> Verdict:
    """Verdicts of has_real_logarithm against exhibited real logarithms, exact Jordan counts, and det < 0."""
    rng = np.random.default_rng(20240601)
    wrong, worst = 0, 0.0
    jordan_minus_one = np.array([[-1.0, 1.0], [0.0, -1.0]])
    with_log = {
        "-I_2": (-np.eye(2), _rotation(np.pi)),
        "diag(-1,-1,2)": (np.diag([-1.0, -1.0, 2.0]), sla.block_diag(_rotation(np.pi), [[np.log(2.0)]])),
    }
    for M, L in with_log.values():
        S = rng.standard_normal(M.shape)
        for matrix, log in ((M, L), (S @ M @ np.linalg.inv(S), S @ L @ np.linalg.inv(S))):
            worst = max(worst, float(np.linalg.norm(sla.expm(log) - matrix) / np.linalg.norm(matrix)))
            wrong += not has_real_logarithm(matrix)
    # No real log: an odd count of some Jordan block size at a negative eigenvalue (exact ranks).
    without_log = {
        "-I_3": (-np.eye(3), -1.0),
        "diag(-1,-2)": (np.diag([-1.0, -2.0]), -1.0),
        "J_2(-1)": (jordan_minus_one, -1.0),
    }
    for M, mu in without_log.values():
        odd = any(count % 2 for count in _exact_jordan_counts(M, mu).values())
        wrong += (not odd) + has_real_logarithm(M)
        S = rng.standard_normal(M.shape)
        wrong += has_real_logarithm(S @ M @ np.linalg.inv(S))
    # det(e^L) = e^{tr L} > 0, so a negative determinant excludes a real logarithm.
    for n in (3, 5, 7):
        M = random_negative_determinant(n, rng)
        wrong += (np.linalg.det(M) >= 0) + has_real_logarithm(M)
    # Matrices built as e^L must be accepted.
    for n in (2, 4, 6):
        wrong += not has_real_logarithm(sla.expm(rng.standard_normal((n, n))))
    return _verdict(
        float(wrong) + worst,
        "wrong verdicts == 0 and ||e^L - M|| / ||M|| <= 1e-12",
        wrong == 0 and worst <= 1e-12,
    )


@claim(
    "LM-2",
    "psi_eps(lam) = (r+ e^{r- T} - r- e^{r+ T}) / (r+ - r-) is the time-T value of eps y'' + y' = lam y, "
    "y(0)=1, y'(0)=0, and Psi_eps(A) is the time-T map of eps x'' + x' = A x, x'(0)=0.",
    DOC,
)
def check_psi_closed_form() -> Verdict:
    """Closed form and phase-space exponential against solve_ivp (real, complex and critical lambda)."""
    worst = 0.0
    rng = np.random.default_rng(7)
    for eps, T in ((0.1, 1.0), (0.5, 1.0), (2.0, 2.5)):
        critical = -1 / (4 * eps)
        lam = np.array(
            [critical, critical + 1e-9, critical - 1e-9, -40.0, -7.3, 0.0, 2.0, 1 + 2j, -15 - 4j, -0.2 + 9j]
        )
        exact = _integrated_psi(lam, eps, T)
        worst = max(worst, float(np.max(np.abs(psi(lam, eps, T) - exact) / np.maximum(np.abs(exact), 1.0))))
        A = rng.standard_normal((4, 4))
        worst = max(worst, _flow_error(A, momentum_flow_matrix(A, eps, T), eps, T))
    return _verdict(worst, "relative error <= 1e-8", worst <= 1e-8)


def _grid_minimum(eps: float, T: float) -> tuple[float, float]:
    """min over real lambda of the integrated psi.

    A grid over six oscillations and the monotone side; every local minimum of the grid is resampled
    finely (the minima of successive oscillations can differ by less than the grid error), and the best
    one is refined by a bounded scalar search.
    """
    lam = np.sort(-(1 + (2 * eps * np.linspace(0.0, 12 * np.pi, 401) / T) ** 2) / (4 * eps))
    lam = np.concatenate([lam, np.linspace(lam[-1], 5.0 / T, 41)[1:]])
    values = _integrated_psi(lam, eps, T).real
    local = np.flatnonzero((values[1:-1] <= values[:-2]) & (values[1:-1] <= values[2:])) + 1
    fine = np.concatenate([np.linspace(lam[i - 1], lam[i + 1], 41) for i in local])
    j = int(np.argmin(_integrated_psi(fine, eps, T).real))
    result = minimize_scalar(
        lambda x: float(_integrated_psi([x], eps, T)[0].real),
        bounds=(fine[max(j - 1, 0)], fine[min(j + 1, fine.size - 1)]),
        method="bounded",
        options={"xatol": 1e-10},
    )
    return float(result.fun), float(result.x)


@claim(
    "LM-3",
    "min over real lam of psi_eps is m_eps = e^{-b}(cos t + b sin t / t), b = T/(2 eps), t in (pi, 3pi/2), "
    "attained only at lam* = -(1 + 4 eps^2 t^2/T^2)/(4 eps); -(1+b)e^{-b} < m_eps < -e^{-b}; -1 < m_eps < 0.",
    DOC,
)
def check_m_eps() -> Verdict:
    """m_eps_table against a grid-plus-refinement minimum of the integrated ODE, and the stated bounds."""
    value_error, argmin_error, bounds_hold = 0.0, 0.0, True
    for eps, T in ((0.05, 1.0), (0.5, 1.0), (5.0, 1.0), (0.7, 2.0)):
        ((_, value, argmin),) = m_eps_table((eps,), T)
        found, where = _grid_minimum(eps, T)
        value_error = max(value_error, abs(found - value))
        argmin_error = max(argmin_error, abs(where - argmin) / max(1.0, abs(argmin)))
        b = T / (2 * eps)
        bounds_hold &= -1 < -(1 + b) * math.exp(-b) < value < -math.exp(-b) < 0
    return _verdict(
        value_error,
        "|m_eps - integrated minimum| <= 1e-9, argmin to 1e-5 relative, bounds hold",
        value_error <= 1e-9 and argmin_error <= 1e-5 and bounds_hold,
    )


def _winding_number(values: np.ndarray) -> int | None:
    """Winding number of a closed sampled curve about 0 (None if the sampling is too coarse to tell)."""
    steps = np.angle(np.append(values[1:], values[:1]) / values)
    turns = float(np.sum(steps) / (2 * np.pi))
    if np.max(np.abs(steps)) > np.pi / 2 or abs(turns - round(turns)) > 1e-6:
        return None
    return round(turns)


def _sign_changes(values: np.ndarray) -> int:
    """Number of sign changes along a real sequence (exact zeros skipped)."""
    signs = np.sign(values)
    signs = signs[signs != 0]
    return int(np.sum(signs[1:] != signs[:-1]))


@claim(
    "LM-4",
    "psi_eps is entire of order 1/2 with only real zeros and only real critical points (all left of "
    "-1/(4 eps)); it has a simple real zero lam0, so Psi_eps(lam0 I) = 0: singular maps are reached.",
    DOC,
)
def check_critical_points_real() -> Verdict:
    r"""Argument principle for psi and psi' on disks, against their real sign changes (integrated ODE).

    On the circle :math:`|z| = R`, i.e. :math:`|\lambda - \lambda_c| = R\varepsilon/T^2`, the winding
    number of the integrated :math:`\psi` (of :math:`\psi'`, from the variational equation) is the number
    of its zeros in the disk, with multiplicity. It must equal the number of sign changes along the real
    diameter, all left of :math:`\lambda_c`: then every zero in the disk is real, simple and below
    :math:`\lambda_c`. The radii :math:`R = ((k + 1/4)\pi)^2` put :math:`\theta = \sqrt{-z}` between a
    critical point of :math:`g` (just above :math:`k\pi`) and a zero (in :math:`((k + 1/2)\pi, (k+1)\pi)`);
    a circle that passes too close to a zero makes ``_winding_number`` undecided, and the check fails.
    """
    counts_match, zero_residual, simple = True, 0.0, True
    radii = [((k + 0.25) * math.pi) ** 2 for k in (4, 9, 17)]
    for eps in (0.3, 1.0):
        center = -1 / (4 * eps)
        # The phase of psi turns at about sqrt(R)/2 per radian of the circle: 8 sqrt(R) samples keep each
        # step near 0.4 rad, well inside the pi/2 that _winding_number accepts.
        circles = [
            center + R * eps * np.exp(2j * np.pi * np.arange(count) / count)
            for R in radii
            for count in [int(8 * math.sqrt(R))]
        ]
        # The real diameter of the largest disk, uniform in theta (zeros of psi, and of psi', are about pi
        # apart there: ~25 samples); psi is increasing right of the centre (LM-3), few samples suffice.
        theta = np.linspace(0.0, math.sqrt(radii[-1]), int(8 * math.sqrt(radii[-1])))
        right = center + np.linspace(0.0, radii[-1] * eps, 41)[1:]
        diameter = np.concatenate([center - eps * theta[::-1] ** 2, right])
        # rtol 1e-9: only phases and signs are read, and it halves the steps of the oscillatory flow.
        values, slopes = _integrated_psi(np.concatenate([*circles, diameter]), eps, 1.0, True, rtol=1e-9)
        on_diameter = (values[-diameter.size :].real, slopes[-diameter.size :].real)
        offset = 0
        for R, circle in zip(radii, circles, strict=True):
            windings = [_winding_number(f[offset : offset + circle.size]) for f in (values, slopes)]
            offset += circle.size
            inside = np.abs(diameter - center) < R * eps
            left = inside & (diameter < center)
            for winding, f in zip(windings, on_diameter, strict=True):
                counts_match &= winding is not None and winding == _sign_changes(f[left])
                counts_match &= _sign_changes(f[inside & ~left]) == 0
        # The real zero: theta0 in (pi/2, pi) solving theta cos theta + b sin theta = 0, mapped to lambda.
        b = 1 / (2 * eps)
        theta0 = brentq(lambda t, b=b: t * math.cos(t) + b * math.sin(t), math.pi / 2, math.pi)
        lam0 = -(1 + (2 * eps * theta0) ** 2) / (4 * eps)
        value, slope = _integrated_psi([lam0], eps, 1.0, derivative=True)
        simple &= abs(slope[0]) > 1e-3
        # Psi(lam0 I) = 0, and the zero matrix is also what momentum_logarithm(0) must integrate to.
        collapse = _integrated_flow(lam0 * np.eye(3), eps, 1.0)
        from_log = _integrated_flow(momentum_logarithm(np.zeros((3, 3)), eps, 1.0), eps, 1.0)
        zero_residual = max(zero_residual, abs(value[0]), np.abs(collapse).max(), np.abs(from_log).max())
    return _verdict(
        zero_residual,
        "on |z| = R, 178 <= R <= 2937: windings of psi, psi' == their real sign changes, all left of "
        "lam_c; |psi(lam0)|, ||Psi(lam0 I)|| <= 1e-9; psi'(lam0) != 0",
        counts_match and zero_residual <= 1e-9 and simple,
    )


def _jordan_block(mu: float, k: int) -> np.ndarray:
    return mu * np.eye(k) + np.diag(np.ones(k - 1), 1)


@claim(
    "LM-5",
    "D = Psi_eps(A) for a real A iff (a) at each real eigenvalue mu < m_eps every Jordan block size "
    "occurs an even number of times and (b) the blocks at m_eps split into groups {1}, {k,k}, {k+1,k}.",
    DOC,
)
def check_reachable_set() -> Verdict:
    """momentum_logarithm on both sides of the criterion; every returned A is integrated with solve_ivp."""
    eps, T = 0.5, 1.0
    rng = np.random.default_rng(11)
    value, _ = _grid_minimum(eps, T)

    def conj(M):
        S = rng.standard_normal(M.shape)
        return S @ M @ np.linalg.inv(S)

    reachable = [
        -3.0 * np.eye(2),
        conj(sla.block_diag(_jordan_block(-1.0, 2), _jordan_block(-1.0, 2))),
        value * np.eye(3),
        conj(sla.block_diag(_jordan_block(value, 3), _jordan_block(value, 2))),
        conj(sla.block_diag(_jordan_block(value, 2), _jordan_block(value, 2), [[value]])),
        np.zeros((3, 3)),
        conj(_jordan_block(0.0, 3)),
        conj(sla.block_diag([[0.4, -2.0], [2.0, 0.4]], _jordan_block(2.0, 2))),
    ]
    unreachable = [
        [[1.01 * value]],
        _jordan_block(value, 2),
        sla.block_diag(_jordan_block(value, 3), [[value]]),
        sla.block_diag(_jordan_block(-1.0, 2), [[-1.0]]),
        np.diag([-1.0, -1.0, -2.0]),
    ]
    worst, wrong = 0.0, 0
    for D in reachable:
        worst = max(worst, _flow_error(momentum_logarithm(D, eps, T), D, eps, T))
    for D in unreachable:
        try:
            momentum_logarithm(D, eps, T)
            wrong += 1
        except ValueError as error:
            wrong += "max_reachable_scale" not in str(error)
    return _verdict(
        worst + wrong,
        "ODE residual <= 1e-7 on reachable D; every unreachable D raises",
        worst <= 1e-7 and wrong == 0,
    )


@claim(
    "LM-6",
    "Every real D is reachable up to scale: {s > 0 : sD reachable} is (0, s_max) or (0, s_max], "
    "s_max = min m_eps/mu over negative real eigenvalues mu with unpaired Jordan blocks (inf if none).",
    DOC,
)
def check_up_to_scale() -> Verdict:
    """max_reachable_scale against eigenvalues and an integrated m_eps; logs below it, errors above it."""
    eps, T = 0.5, 1.0
    rng = np.random.default_rng(5)
    value, _ = _grid_minimum(eps, T)
    cases = [
        (-np.eye(2), math.inf),
        (-np.eye(3), -value),
        (np.diag([-1.0, -2.0]), -value / 2),
        (_jordan_block(-1.0, 2), -value),
        (np.array([[0.0, 1.0], [0.0, 0.0]]), math.inf),
    ]
    for n in (3, 5):
        D = random_negative_determinant(n, rng)
        eigenvalues = np.linalg.eigvals(D)
        real_negative = eigenvalues[(np.abs(eigenvalues.imag) < 1e-12) & (eigenvalues.real < 0)].real
        cases.append((D, value / real_negative.min()))
    singular = random_negative_determinant(3, rng)
    singular[2] = singular[0] + singular[1]
    eigenvalues = np.linalg.eigvals(singular)
    real_negative = eigenvalues[(np.abs(eigenvalues.imag) < 1e-12) & (eigenvalues.real < -1e-9)].real
    cases.append((singular, value / real_negative.min() if real_negative.size else math.inf))
    worst, wrong = 0.0, 0
    for D, expected in cases:
        limit = max_reachable_scale(D, eps, T)
        worst = max(worst, 0.0 if limit == expected else abs(limit - expected) / expected)
        for s in (0.5 * limit, 0.99 * limit) if np.isfinite(limit) else (1.0, 4.0):
            worst = max(worst, _flow_error(momentum_logarithm(s * D, eps, T), s * D, eps, T))
        if np.isfinite(limit):
            try:
                momentum_logarithm(1.01 * limit * D, eps, T)
                wrong += 1
            except ValueError:
                pass
    return _verdict(
        worst + wrong, "scale and ODE residuals <= 1e-7; 1.01 s_max raises", worst <= 1e-7 and wrong == 0
    )


@claim(
    "LM-7",
    "Every matrix reached by a first-order linear flow (a real exponential) is reached by the momentum "
    "flow for every eps > 0 and T > 0.",
    DOC,
)
def check_exponentials_reachable() -> Verdict:
    r"""e^L with negative eigenvalues below m_eps, built from a chosen real Jordan form of L.

    :math:`L = S B S^{-1}` with :math:`B` a direct sum of rotation-by-:math:`\pi` blocks
    :math:`C(a) = aI + \pi J` (:math:`e^{C(a)} = -e^a I_2`), so :math:`D = e^L` has the negative eigenvalue
    :math:`-e^a` with two Jordan blocks: semisimple (:math:`n = 2`), two blocks of size 2 (:math:`n = 4`,
    :math:`B = [[C, I], [0, C]]`), or two distinct such eigenvalues and a positive one (:math:`n = 5`).
    Each case is confirmed from ``numpy.linalg.eigvals`` and an SVD rank (eigenvalue multiplicity and
    number of Jordan blocks), and every scale :math:`s` tried puts each :math:`s\mu` below
    :math:`-1 < m_\varepsilon` (LM-3 (5)), where LM-5 (a) is the binding condition.
    """
    rng = np.random.default_rng(3)
    rotation = {a: a * np.eye(2) + _rotation(np.pi) for a in (0.3, -0.4)}
    designs = [
        # (B, {negative eigenvalue of e^B: algebraic multiplicity}); each has exactly two Jordan blocks.
        (rotation[0.3], {-math.exp(0.3): 2}),
        (np.block([[rotation[0.3], np.eye(2)], [np.zeros((2, 2)), rotation[0.3]]]), {-math.exp(0.3): 4}),
        (sla.block_diag(rotation[0.3], rotation[-0.4], [[0.5]]), {-math.exp(0.3): 2, -math.exp(-0.4): 2}),
    ]
    worst, wrong = 0.0, 0
    for eps, T in ((0.2, 1.0), (1.0, 2.0)):
        for B, negative in designs:
            n = B.shape[0]
            S = rng.standard_normal((n, n))
            D = S @ sla.expm(B) @ np.linalg.inv(S)
            eigenvalues = np.linalg.eigvals(D)
            for mu, multiplicity in negative.items():
                near = int(np.sum(np.abs(eigenvalues - mu) < 1e-4 * abs(mu)))
                singular_values = np.linalg.svd(D - mu * np.eye(n), compute_uv=False)
                blocks = int(np.sum(singular_values <= 1e-8 * np.linalg.norm(D, 2)))
                wrong += near != multiplicity or blocks != 2
            wrong += not np.isinf(max_reachable_scale(D, eps, T))
            for s in (2.0, 5.0):
                wrong += not s * max(negative) < -1.0
                worst = max(worst, _flow_error(momentum_logarithm(s * D, eps, T), s * D, eps, T))
    return _verdict(
        worst + wrong,
        "cases have paired eigenvalues s*mu < -1 < m_eps; ODE residual <= 1e-7; max_reachable_scale == inf",
        worst <= 1e-7 and wrong == 0,
    )
