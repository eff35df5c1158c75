r"""Discretization: orders of the schemes, the :math:`\varepsilon \to 0` limit and depth as time
(``theory/discretization.md``).

Every rate here is measured against a solution obtained by a different code path: SciPy's DOP853 at
``rtol = 1e-12`` for the schemes and the first-order limit, torchdiffeq (:func:`mode.odeint`) for
MomentumNet.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.integrate import solve_ivp

from mode.continuous import odeint
from mode.exact import compiling
from mode.integrate import integrate
from mode.nn import MomentumNet
from mode.schemes import SCHEMES
from mode.theory.fields import TanhField, frozen
from mode.theory.registry import Verdict, claim

__all__ = ["fitted_order", "reference_solution"]

DOC = "theory/discretization.md"
_D = 3
_FIELD = TanhField(_D, seed=21, scale=1.5)
_X0 = np.array([0.6, -0.3, 0.9])


def _field_np(x: np.ndarray, t: float) -> np.ndarray:
    with torch.no_grad():
        return _FIELD(torch.from_numpy(x), torch.tensor(t, dtype=torch.float64)).numpy()


def reference_solution(
    x0: np.ndarray, eps: float, T: float = 1.0, v0: np.ndarray | None = None, method: str = "DOP853"
) -> np.ndarray:
    r""":math:`x(T)` for :math:`\varepsilon \ddot x + \dot x = f(x, t)` (:math:`\dot x = f` if ``eps == 0``)
    by SciPy's ``solve_ivp`` at ``rtol = 1e-12``, ``atol = 1e-14``, for the module's test field :math:`f`.

    ``v0`` defaults to zero; it must be ``None`` for ``eps == 0``. ``method`` is DOP853 by default; the
    system is stiff for small ``eps``, where LSODA (which switches to a stiff method) is much cheaper.
    """
    options = dict(method=method, rtol=1e-12, atol=1e-14)
    if eps == 0:
        return solve_ivp(lambda t, x: _field_np(x, t), (0.0, T), x0, **options).y[:, -1]
    d = x0.size

    def rhs(t, y):
        return np.concatenate([y[d:], (_field_np(y[:d], t) - y[d:]) / eps])

    v0 = np.zeros(d) if v0 is None else v0
    return solve_ivp(rhs, (0.0, T), np.concatenate([x0, v0]), **options).y[:d, -1]


def fitted_order(sizes, errors) -> float:
    r"""Least-squares slope :math:`p` of :math:`\log(\text{error}) = p \log(\text{size}) + c`."""
    return float(np.polyfit(np.log(np.asarray(sizes, float)), np.log(np.asarray(errors, float)), 1)[0])


@claim(
    "DISC-1",
    "Each scheme of mode.SCHEMES has the global order it declares (momentum, exp-momentum, euler: 1; "
    "leapfrog, heun: 2; rk4: 4) on eps x'' + x' = f(x, t), eps > 0.",
    DOC,
)
def check_scheme_orders() -> Verdict:
    """Errors at T = 1 for L = 20 ... 160 steps against DOP853; fitted slope against h = 1/L."""
    eps, steps = 0.5, (20, 40, 80, 160)
    reference = reference_solution(_X0, eps)
    x0 = torch.from_numpy(_X0)
    worst = 0.0
    for name, scheme in SCHEMES.items():
        errors = [
            float(np.abs(integrate(_FIELD, x0, eps=eps, steps=L, scheme=name)[0].numpy() - reference).max())
            for L in steps
        ]
        worst = max(worst, abs(fitted_order(1 / np.array(steps), errors) - scheme.order))
    return Verdict(worst, "max |fitted order - declared order| <= 0.1", worst <= 0.1)


@claim(
    "DISC-2",
    "As eps -> 0 the solution of eps x'' + x' = f(x, t) with bounded v(0) converges on [0, T] to that of "
    "x' = f(x, t) with the same x(0), at rate O(eps).",
    DOC,
)
def check_small_mass_limit() -> Verdict:
    r""":math:`|x_\varepsilon(1) - x_0(1)|`, :math:`x_\varepsilon` by LSODA and :math:`x_0` by
    :func:`mode.odeint` (dopri5), for :math:`v(0) = 0` and :math:`(1, 1, 1)`."""
    masses = np.array([0.04, 0.02, 0.01])
    limit = odeint(_FIELD, torch.from_numpy(_X0), eps=0.0, rtol=1e-12, atol=1e-14).x.numpy()
    worst = 0.0
    for v0 in (None, np.ones(_D)):
        gaps = [
            float(np.abs(reference_solution(_X0, e, v0=v0, method="LSODA") - limit).max()) for e in masses
        ]
        worst = max(worst, abs(fitted_order(masses, gaps) - 1))
    return Verdict(worst, "|fitted order in eps - 1| <= 0.1", worst <= 0.1)


@claim(
    "DISC-3",
    "MomentumNet with blocks f_i = f(., i h), step h = T/L and gamma = 1 - h/eps converges, as L grows, to "
    "the solution of eps x'' + x' = f(x, t), x'(0) = 0, at T, with error O(1/L).",
    DOC,
)
def check_depth_limit() -> Verdict:
    """MomentumNet (backprop='autograd') against torchdiffeq's dopri5 at rtol 1e-11."""
    eps, T = 0.5, 1.0
    x0 = torch.from_numpy(_X0)
    limit = odeint(_FIELD, x0, eps=eps, T=T, rtol=1e-11, atol=1e-13).x
    depths = (16, 32, 64, 128, 256)
    errors = []
    for L in depths:
        h = T / L
        net = MomentumNet([frozen(_FIELD, i * h) for i in range(L)], eps=eps, step=h, backprop="autograd")
        with torch.no_grad():
            errors.append(float((net(x0) - limit).abs().max()))
    order = -fitted_order(depths, errors)
    return Verdict(order, "|fitted order in 1/L - 1| <= 0.1", abs(order - 1) <= 0.1)


def _loss_gradient(x0: torch.Tensor, v0: torch.Tensor, **kwargs) -> torch.Tensor:
    """The gradient of :math:`\\ell = w^\\top x(T) + w'^\\top v(T)` with respect to :math:`x_0, v_0` and the
    field's parameters, flattened, for one :func:`mode.odeint` solve of the test field."""
    field = TanhField(_D, seed=21, scale=1.5)
    leaves = [x0, v0, *field.parameters()]
    solution = odeint(field, x0, v0, **kwargs)
    weights = torch.linspace(-1.0, 1.5, 2 * _D, dtype=torch.float64)
    loss = (torch.cat([solution.x, solution.v]) * weights).sum()
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, leaves)])


@claim(
    "DISC-4",
    "odeint(backprop='reversible') with the momentum or leapfrog scheme returns the gradient of the discrete "
    "solve it ran (autograd's through the float scheme, to float rounding), and that gradient converges to "
    "the ODE's gradient at the scheme's order (momentum 1, leapfrog 2).",
    DOC,
)
def check_reversible_gradients() -> Verdict:
    """Gradients with respect to :math:`x_0, v_0` and the field's parameters, L = 20 ... 160, against
    autograd through the same steps and against autograd through dopri5 at rtol 1e-12."""
    eps, steps = 0.5, (20, 40, 80, 160)
    x0 = torch.from_numpy(_X0).requires_grad_(True)
    v0 = torch.full((_D,), 0.4, dtype=torch.float64, requires_grad=True)
    reference = _loss_gradient(x0, v0, eps=eps, rtol=1e-12, atol=1e-14)
    discrete_gap, worst = 0.0, 0.0
    # Eager integer kernels: compiling them would take longer than the check (tests/exact/test_fusion.py
    # holds the compiled kernels to the eager ones bit for bit).
    with compiling(False):
        for name in ("momentum", "leapfrog"):
            errors = []
            for L in steps:
                exact = _loss_gradient(x0, v0, eps=eps, method=name, steps=L, backprop="reversible")
                stepped = _loss_gradient(x0, v0, eps=eps, method=name, steps=L, backprop="autograd")
                discrete_gap = max(discrete_gap, float((exact - stepped).norm() / stepped.norm()))
                errors.append(float((exact - reference).norm() / reference.norm()))
            worst = max(worst, abs(fitted_order(1 / np.array(steps), errors) - SCHEMES[name].order))
    return Verdict(
        discrete_gap,
        f"relative gap to autograd through the same steps <= 1e-12 (max |fitted order - declared| = "
        f"{worst:.3f} <= 0.1)",
        discrete_gap <= 1e-12 and worst <= 0.1,
    )
