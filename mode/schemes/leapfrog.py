r"""A damped Stormer-Verlet (leapfrog) scheme: second order and explicitly invertible.

Derivation. Split the phase-space field of :math:`\varepsilon \ddot x + \dot x = f(x, t)` into

* the drift :math:`D`: :math:`\dot x = v,\ \dot v = 0,\ \dot t = 1`, with exact flow
  :math:`D_h(x, v, t) = (x + h v,\ v,\ t + h)`;
* the relaxation :math:`R`: :math:`\dot x = 0,\ \varepsilon \dot v = f(x, t) - v`, with :math:`x, t` frozen, a
  linear ODE in :math:`v` with exact flow
  :math:`R_\tau(x, v, t) = (x,\ f(x, t) + (v - f(x, t))\, e^{-\tau/\varepsilon},\ t)`.

Strang's symmetric composition :math:`\Phi_h = R_{h/2} \circ D_h \circ R_{h/2}` of two exact flows is
consistent, symmetric (:math:`\Phi_{-h} = \Phi_h^{-1}`) and therefore of even order, hence second order:

.. math::
   v_{n+1/2} &= f(x_n, t_n) + (v_n - f(x_n, t_n))\, e^{-h/(2\varepsilon)}, \\
   x_{n+1}   &= x_n + h\, v_{n+1/2}, \\
   v_{n+1}   &= f(x_{n+1}, t_{n+1}) + (v_{n+1/2} - f(x_{n+1}, t_{n+1}))\, e^{-h/(2\varepsilon)}.

Each sub-flow is inverted by running it backwards in time (:math:`\tau \to -\tau`), so for
:math:`\varepsilon > 0` the inverse is :math:`R_{-h/2} \circ D_{-h} \circ R_{-h/2}`, explicit for any ``f``.
With :math:`\varepsilon = 0` the relaxation is instantaneous (:math:`v = f(x, t)`) and the scheme reduces to
the ResNet rule, first order and not invertible. Like Stormer-Verlet, the last evaluation of one step is
the first of the next; this implementation does not cache it, so a step costs two evaluations.
"""

from __future__ import annotations

import math

from torch import Tensor

from mode.ode import Time, VectorField
from mode.schemes.base import NotInvertibleError, Scheme


def _relax(f: VectorField, x: Tensor, v: Tensor, t: Time, tau: float, eps: float) -> Tensor:
    force = f(x, t)
    if eps == 0:
        return force
    return force + (v - force) * math.exp(-tau / eps)


class LeapfrogScheme(Scheme):
    """Strang splitting :math:`R_{h/2} D_h R_{h/2}` of drift and exact relaxation; order 2, invertible."""

    name = "leapfrog"
    order = 2
    invertible = True
    evals_per_step = 2

    def _step(
        self, f: VectorField, x: Tensor, v: Tensor, t: Time, h: float, eps: float
    ) -> tuple[Tensor, Tensor]:
        v = _relax(f, x, v, t, h / 2, eps)
        x = x + h * v
        return x, _relax(f, x, v, t + h, h / 2, eps)

    def _inverse(
        self, f: VectorField, x: Tensor, v: Tensor, t: Time, h: float, eps: float
    ) -> tuple[Tensor, Tensor]:
        if eps == 0:
            raise NotInvertibleError("leapfrog at eps = 0 is the ResNet rule: it forgets v, no inverse")
        v = _relax(f, x, v, t + h, -h / 2, eps)
        x = x - h * v
        return x, _relax(f, x, v, t, -h / 2, eps)
