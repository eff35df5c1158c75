r"""Invertibility, volume and symplectic structure of one step of each scheme (``theory/invertibility.md``).

Write :math:`\Phi` for one step :math:`z_n = (x_n, v_n) \mapsto z_{n+1}` of a scheme on
:math:`\varepsilon \ddot x + \dot x = f(x, t)`. The damped invertible schemes have

.. math:: \det D\Phi = c^d, \qquad D\Phi^\top \Omega\, D\Phi = c\,\Omega \ \text{ when } f = -\nabla V,

with :math:`c` = :func:`conformal_factor`; RevNet couplings and undamped Stormer-Verlet have
:math:`c = 1`; explicit Runge-Kutta steps are not even injective for some :math:`f`
(:func:`singular_linear_field`, :func:`euler_collision`). Every check measures Jacobians by autograd.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from mode.ode import from_acceleration, gamma_from_eps
from mode.schemes import SCHEMES, NotInvertibleError, get_scheme
from mode.theory.fields import GradientField, TanhField, frozen
from mode.theory.phase_maps import (
    additive_coupling,
    jacobian,
    scheme_map,
    split,
    symplectic_form,
    verlet_map,
)
from mode.theory.registry import Verdict, claim

__all__ = ["conformal_factor", "euler_collision", "singular_linear_field", "stability_polynomial"]

DOC = "theory/invertibility.md"
INVERTIBLE = ("momentum", "exp-momentum", "leapfrog")
EXPLICIT_RUNGE_KUTTA = ("euler", "heun", "rk4")
# (h, eps) pairs with h <= eps (the momentum scheme needs gamma >= 0), from mild to strong damping.
_STEPS = ((0.1, 0.3), (0.25, 1.0), (0.5, 0.6))


def conformal_factor(scheme, h: float, eps: float) -> float:
    r"""The factor :math:`c` by which one step scales the symplectic form (and each 2-D phase area).

    .. math:: c = \gamma = 1 - h/\varepsilon \ (\texttt{momentum}), \qquad
              c = e^{-h/\varepsilon} \ (\texttt{exp-momentum}, \texttt{leapfrog}).

    Parameters
    ----------
    scheme : str or Scheme
        One of ``momentum``, ``exp-momentum``, ``leapfrog``.
    h, eps : float
        Step and :math:`\varepsilon > 0`.

    Returns
    -------
    float
        :math:`c`, so that :math:`\det D\Phi = c^d` for every :math:`f` (INV-3).

    Raises
    ------
    ValueError
        For an explicit Runge-Kutta scheme, whose Jacobian determinant depends on :math:`f` and the state.
    """
    scheme = get_scheme(scheme)
    if scheme.name == "leapfrog":
        # Each of the two half relaxations multiplies v by c = exp(-h / (2 eps)) (made exact) at fixed x.
        return scheme.coefficients(h, eps).gamma ** 2
    if scheme.name in ("momentum", "exp-momentum"):
        return scheme.gamma(h, eps)
    raise ValueError(f"the {scheme.name!r} step has no f-independent volume factor")


def stability_polynomial(scheme) -> np.ndarray:
    r"""Coefficients, highest degree first, of the stability polynomial of an explicit Runge-Kutta scheme.

    .. math:: R(z) = 1 + z\,b^\top (I - zA)^{-1}\mathbf 1
              = 1 + \sum_{j \ge 1} (b^\top A^{j-1}\mathbf 1)\, z^j,

    a polynomial because the Butcher matrix :math:`A` is strictly lower triangular. For a linear system
    :math:`\dot y = My` one step is :math:`y_{n+1} = R(hM)\,y_n`.
    """
    scheme = get_scheme(scheme)
    s = len(scheme.b)
    A = np.zeros((s, s))
    for i, row in enumerate(scheme.a):
        A[i, : len(row)] = row
    b = np.asarray(scheme.b, dtype=float)
    power = np.ones(s)
    coefficients = [1.0]
    for _ in range(s):
        coefficients.append(float(b @ power))
        power = A @ power
    return np.trim_zeros(np.array(coefficients[::-1]), "f")


def singular_linear_field(scheme, h: float) -> tuple[float, float]:
    r"""A linear force :math:`f(x) = ax` and a mass :math:`\varepsilon` for which one step is singular.

    With :math:`z_0` a root of the stability polynomial with :math:`\operatorname{Re} z_0 < 0`, the
    phase matrix :math:`M = \begin{bmatrix}0 & 1\\ a/\varepsilon & -1/\varepsilon\end{bmatrix}` has
    eigenvalues :math:`z_0/h, \bar z_0/h` (trace :math:`-1/\varepsilon`, determinant
    :math:`-a/\varepsilon`) when

    .. math:: \varepsilon = -\frac{h}{2\operatorname{Re} z_0}, \qquad a = -\varepsilon\,\frac{|z_0|^2}{h^2},

    and then :math:`R(hM)` has the eigenvalue :math:`R(z_0) = 0`.

    Returns
    -------
    (a, eps) : tuple of float
    """
    roots = np.roots(stability_polynomial(scheme))
    root = min((r for r in roots if r.real < 0), key=lambda r: abs(r.imag))
    eps = -h / (2 * root.real)
    return float(-eps * abs(root) ** 2 / h**2), float(eps)


def euler_collision(h: float, eps: float):
    r"""Two distinct states that one explicit Euler step maps to the same state.

    For :math:`f(x) = \kappa x^2` with :math:`\kappa = \gamma / ((1 - \gamma) h^2)`,
    :math:`\gamma = 1 - h/\varepsilon`, the states :math:`(0, 0)` and :math:`(h, -1)` both map to
    :math:`(0, 0)`: :math:`x + hv = 0` and :math:`\gamma v + (1 - \gamma)\kappa x^2 = -\gamma + \gamma = 0`.

    Returns
    -------
    (f, z1, z2)
        The force (a callable of ``x``) and the two states as tensors ``(x, v)`` of shape ``(2,)``.
    """
    gamma = gamma_from_eps(eps, h)
    kappa = gamma / ((1 - gamma) * h**2)
    z1 = torch.tensor([0.0, 0.0], dtype=torch.float64)
    z2 = torch.tensor([h, -1.0], dtype=torch.float64)
    return (lambda x: kappa * x**2), z1, z2


def _points(d: int, count: int, seed: int) -> torch.Tensor:
    return torch.randn(count, 2 * d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@claim(
    "INV-1",
    "The momentum, exp-momentum and leapfrog steps are bijections of phase space for every f (eps > 0, "
    "and h < eps for momentum), with the closed-form inverses of theory/invertibility.md.",
    DOC,
)
def check_closed_form_inverses() -> Verdict:
    """inverse(step(z)) = z and step(inverse(z)) = z on a nonlinear time-dependent field, float64."""
    f = TanhField(4, seed=1, scale=1.5)
    t = torch.tensor(0.3, dtype=torch.float64)
    z = _points(4, 64, seed=2)
    worst = 0.0
    flags_match = all(SCHEMES[name].invertible for name in INVERTIBLE)
    for name in INVERTIBLE:
        scheme = SCHEMES[name]
        for h, eps in _STEPS:
            before = torch.cat(scheme.inverse(f, *split(z), t, h, eps), -1)
            back = torch.cat(scheme.step(f, *split(before), t, h, eps), -1)
            after = torch.cat(scheme.step(f, *split(z), t, h, eps), -1)
            again = torch.cat(scheme.inverse(f, *split(after), t, h, eps), -1)
            scale = z.abs().max()
            worst = max(worst, float((back - z).abs().max() / scale), float((again - z).abs().max() / scale))
    return Verdict(
        worst,
        "max relative round-trip error <= 1e-13 and SCHEMES flags them invertible",
        worst <= 1e-13 and flags_match,
    )


def _linear(a: float):
    # A one-argument closure: a default argument would make as_vector_field pass t into it.
    return lambda x: a * x


def _refuses_inverse(name: str) -> bool:
    scheme = SCHEMES[name]
    try:
        scheme.inverse(lambda x: x, torch.zeros(1), torch.zeros(1), 0.0, 0.1, 1.0)
    except NotInvertibleError:
        return not scheme.invertible
    return False


@claim(
    "INV-2",
    "Explicit Euler, Heun and RK4 steps have no inverse for some f: for f(x) = a x with suitable eps the "
    "step matrix R(hM) is singular, and Euler maps (0,0) and (h,-1) to one state for f(x) = kappa x^2.",
    DOC,
)
def check_runge_kutta_not_injective() -> Verdict:
    """Null vectors of the autograd Jacobian give distinct states with equal images."""
    h = 0.2
    worst = 0.0
    z1 = torch.tensor([0.7, -0.4], dtype=torch.float64)
    for name in EXPLICIT_RUNGE_KUTTA:
        a, eps = singular_linear_field(name, h)
        phi = scheme_map(name, _linear(a), 0.0, h, eps)
        _, _, vh = torch.linalg.svd(jacobian(phi, z1))
        z2 = z1 + vh[-1]
        worst = max(worst, float((phi(z1) - phi(z2)).norm() / (z1 - z2).norm()))
    eps = 1.0
    f, s1, s2 = euler_collision(0.5, eps)
    phi = scheme_map("euler", f, 0.0, 0.5, eps)
    worst = max(worst, float((phi(s1) - phi(s2)).norm() / (s1 - s2).norm()))
    return Verdict(
        worst,
        "|Phi(z1) - Phi(z2)| / |z1 - z2| <= 1e-12 for each scheme, and the library refuses their inverse",
        worst <= 1e-12 and all(_refuses_inverse(name) for name in EXPLICIT_RUNGE_KUTTA),
    )


@claim(
    "INV-3",
    "For every C^1 field f, det DPhi = c^d with c = gamma = 1 - h/eps (momentum) or exp(-h/eps) "
    "(exp-momentum, leapfrog): each step contracts phase-space volume by c^d.",
    DOC,
)
def check_volume_contraction() -> Verdict:
    """Autograd Jacobian determinants on a non-gradient, time-dependent field in d = 5."""
    d = 5
    f = TanhField(d, seed=3, scale=1.5)
    worst = 0.0
    for name in INVERTIBLE:
        for (h, eps), z in zip(_STEPS, _points(d, len(_STEPS), seed=4), strict=True):
            det = torch.linalg.det(jacobian(scheme_map(name, f, 0.7, h, eps), z))
            worst = max(worst, abs(float(det) / conformal_factor(name, h, eps) ** d - 1))
    return Verdict(worst, "max |det DPhi / c^d - 1| <= 1e-12", worst <= 1e-12)


@claim(
    "INV-4",
    "A RevNet additive coupling (a, b) -> (a + F(b), b + G(a + F(b))) and an undamped Stormer-Verlet step "
    "for x'' = g(x) have det DPhi = 1 for every F, G, g: they preserve phase-space volume.",
    DOC,
)
def check_volume_preservation() -> Verdict:
    """Autograd Jacobian determinants with non-gradient F, G, g."""
    d = 4
    F, G, g = (frozen(TanhField(d, seed=s, scale=2.0)) for s in (5, 6, 7))
    maps = [additive_coupling(F, G), verlet_map(g, 0.3)]
    worst = max(
        abs(float(torch.linalg.det(jacobian(phi, z))) - 1) for phi in maps for z in _points(d, 3, seed=8)
    )
    return Verdict(worst, "max |det DPhi - 1| <= 1e-12", worst <= 1e-12)


@claim(
    "INV-5",
    "The undamped Stormer-Verlet step is the eps -> infinity limit of the damped leapfrog step applied to "
    "f = eps g, with distance O(h/eps); at finite eps the leapfrog step is not volume preserving.",
    DOC,
)
def check_undamped_limit() -> Verdict:
    """The leapfrog-Verlet distance, fitted against eps on a log-log scale, has slope -1."""
    d, h = 3, 0.3
    g = frozen(TanhField(d, seed=9, scale=2.0))
    z = _points(d, 16, seed=10)
    verlet = verlet_map(g, h)(z)
    masses = np.array([1e1, 1e2, 1e3, 1e4])
    gaps = [
        float((scheme_map("leapfrog", from_acceleration(g, e), 0.0, h, e)(z) - verlet).abs().max())
        for e in masses
    ]
    slope = float(np.polyfit(np.log(masses), np.log(gaps), 1)[0])
    return Verdict(
        slope, "fitted slope of log distance against log eps within 0.05 of -1", abs(slope + 1) <= 0.05
    )


@claim(
    "INV-6",
    "If f = -grad V (V may depend on t), the momentum, exp-momentum and leapfrog steps are conformally "
    "symplectic, DPhi^T Omega DPhi = c Omega with c as in INV-3 (and Verlet is symplectic, c = 1); "
    "for a non-gradient f the identity fails.",
    DOC,
)
def check_conformal_symplecticity() -> Verdict:
    """Autograd Jacobians against c Omega; the premise f = -grad V is itself checked by autograd."""
    d = 3
    omega = symplectic_form(d)
    potential = GradientField(d, seed=11)
    z = _points(d, 3, seed=12)
    t = torch.tensor(0.4, dtype=torch.float64)
    x = split(z)[0].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(potential.potential(x, t).sum(), x)
    premise = float((potential(x.detach(), t) + grad).abs().max())

    def deviation(phi, point, c):
        J = jacobian(phi, point)
        return float((J.T @ omega @ J - c * omega).abs().max() / c)

    worst, violation = premise, math.inf
    for name in INVERTIBLE:
        for (h, eps), point in zip(_STEPS, z, strict=True):
            c = conformal_factor(name, h, eps)
            worst = max(worst, deviation(scheme_map(name, potential, 0.4, h, eps), point, c))
            non_gradient = scheme_map(name, TanhField(d, seed=13, scale=1.5), 0.4, h, eps)
            violation = min(violation, deviation(non_gradient, point, c))
    verlet = verlet_map(frozen(potential, 0.4), 0.3)
    worst = max(worst, *(deviation(verlet, point, 1.0) for point in z))
    return Verdict(
        worst,
        "max |J^T Omega J - c Omega| / c <= 1e-12 for f = -grad V (|f + grad V| <= 1e-12); "
        ">= 1e-2 for the non-gradient f",
        worst <= 1e-12 and violation >= 1e-2,
    )
