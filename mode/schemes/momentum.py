r"""The momentum step of Momentum ResNets (semi-implicit Euler in phase space).

.. math::  v_{n+1} = \gamma v_n + (1 - \gamma) f(x_n, t_n), \qquad x_{n+1} = x_n + h\, v_{n+1},

with :math:`\gamma = 1 - h/\varepsilon` (``momentum``: explicit Euler on :math:`v`, then the new velocity
moves :math:`x`) or :math:`\gamma = e^{-h/\varepsilon}` (``exp-momentum``: the damping integrated exactly).
Both are first order. The inverse is closed form for any ``f`` as long as :math:`\gamma \neq 0`:

.. math::  x_n = x_{n+1} - h\, v_{n+1}, \qquad v_n = (v_{n+1} - (1 - \gamma) f(x_n, t_n)) / \gamma.

``eps = 0`` gives :math:`\gamma = 0`: the ResNet rule :math:`x_{n+1} = x_n + h f(x_n)`, not invertible.
"""

from __future__ import annotations

import math

from mode.ode import gamma_from_eps
from mode.schemes.base import NotInvertibleError, Scheme


class MomentumScheme(Scheme):
    """Semi-implicit Euler with :math:`\\gamma = 1 - h/\\varepsilon` (the paper's rule)."""

    name = "momentum"
    order = 1
    invertible = True
    evals_per_step = 1

    def gamma(self, h: float, eps: float) -> float:
        return gamma_from_eps(eps, h)

    def _step(self, f, x, v, t, h, eps):
        gamma = self.gamma(h, eps)
        v = gamma * v + (1 - gamma) * f(x, t) if gamma else f(x, t)
        return x + h * v, v

    def _inverse(self, f, x, v, t, h, eps):
        gamma = self.gamma(h, eps)
        if gamma == 0:
            raise NotInvertibleError(
                f"the {self.name!r} step has gamma = 0 at h = {h}, eps = {eps} (the ResNet rule): "
                "it forgets v and has no inverse"
            )
        x = x - h * v
        return x, (v - (1 - gamma) * f(x, t)) / gamma


class ExpMomentumScheme(MomentumScheme):
    """Momentum step with the damping integrated exactly, :math:`\\gamma = e^{-h/\\varepsilon}`."""

    name = "exp-momentum"

    def gamma(self, h: float, eps: float) -> float:
        return math.exp(-h / eps) if eps > 0 else 0.0
