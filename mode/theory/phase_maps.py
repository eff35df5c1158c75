r"""One-step maps of phase space :math:`z = (x, v) \in \mathbb R^{2d}` and their Jacobians.

The library's schemes act on pairs of tensors; the geometric statements of ``theory/invertibility.md`` are
about the map :math:`\Phi: \mathbb R^{2d} \to \mathbb R^{2d}`, :math:`z \mapsto (x_{n+1}, v_{n+1})`, its
Jacobian :math:`D\Phi` (taken here by automatic differentiation, independently of any formula for it) and
the symplectic form :math:`\Omega`. Besides the library's schemes, two maps with no damping at all:
the additive coupling step of RevNets and the undamped Stormer-Verlet step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from mode.schemes import get_scheme

PhaseMap = Callable[[torch.Tensor], torch.Tensor]


def split(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, v)`` from the concatenation ``z = (x, v)`` along the last dimension."""
    d = z.shape[-1] // 2
    return z[..., :d], z[..., d:]


def scheme_map(scheme, f, t: float, h: float, eps: float) -> PhaseMap:
    r"""The one-step map :math:`z_n \mapsto z_{n+1}` of a library scheme at time ``t``.

    Parameters
    ----------
    scheme : str or Scheme
        A key of :data:`mode.SCHEMES`.
    f : callable
        Vector field ``f(x)`` or ``f(x, t)``.
    t, h, eps : float
        Time of the step, step size and :math:`\varepsilon`.

    Returns
    -------
    callable
        :math:`\Phi` on tensors of shape ``(..., 2d)``.
    """
    scheme = get_scheme(scheme)

    def step(z: torch.Tensor) -> torch.Tensor:
        x, v = scheme.step(f, *split(z), torch.as_tensor(t, dtype=z.dtype), h, eps)
        return torch.cat([x, v], dim=-1)

    return step


def jacobian(phi: PhaseMap, z: torch.Tensor) -> torch.Tensor:
    r""":math:`D\Phi(z)` of a map of one unbatched point ``z`` (shape ``(2d,)``), by reverse-mode autograd."""
    return torch.autograd.functional.jacobian(phi, z)


def symplectic_form(d: int, dtype=torch.float64) -> torch.Tensor:
    r"""The canonical symplectic matrix :math:`\Omega = \begin{bmatrix} 0 & I_d \\ -I_d & 0\end{bmatrix}`."""
    eye, zero = torch.eye(d, dtype=dtype), torch.zeros(d, d, dtype=dtype)
    return torch.cat([torch.cat([zero, eye], 1), torch.cat([-eye, zero], 1)], 0)


def additive_coupling(F, G) -> PhaseMap:
    r"""The RevNet step (Gomez et al., 2017) on :math:`z = (a, b)`:

    .. math:: a' = a + F(b), \qquad b' = b + G(a'),

    a composition of two shears, each of Jacobian determinant 1, inverted by
    :math:`b = b' - G(a')`, :math:`a = a' - F(b)`.
    """

    def step(z: torch.Tensor) -> torch.Tensor:
        a, b = split(z)
        a = a + F(b)
        return torch.cat([a, b + G(a)], dim=-1)

    return step


def verlet_map(g, h: float) -> PhaseMap:
    r"""The undamped Stormer-Verlet (kick-drift-kick) step for :math:`\ddot x = g(x)`:

    .. math:: v_{1/2} = v + \tfrac h2 g(x), \qquad x' = x + h\,v_{1/2}, \qquad
              v' = v_{1/2} + \tfrac h2 g(x'),

    three additive couplings. It is the :math:`\varepsilon \to \infty` limit of the library's damped
    ``leapfrog`` applied to the force :math:`f = \varepsilon g` (``mode.from_acceleration(g, eps)``).
    """

    def step(z: torch.Tensor) -> torch.Tensor:
        x, v = split(z)
        v = v + h / 2 * g(x)
        x = x + h * v
        return torch.cat([x, v + h / 2 * g(x)], dim=-1)

    return step
