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
the ResNet rule, first order and not invertible.

The relaxation is the momentum scheme's velocity update with :math:`c = e^{-h/(2\varepsilon)}`:
:math:`R_{h/2}(x, v, t) = (x,\ c\, v + (1 - c) f(x, t),\ t)`. So a step is two momentum sub-steps
(:class:`~mode.schemes.momentum.MomentumSplitting`), :math:`R_{h/2}` then :math:`D_h` with
:math:`\gamma = c`, then :math:`R_{h/2}` alone at :math:`t + h`, and it inherits their exact integer
arithmetic: :func:`mode.odeint` with ``backprop="reversible"`` runs it exactly reversibly. :math:`c` is
the exact dyadic rational of :meth:`~mode.schemes.momentum.MomentumCoefficients.from_gamma`, in the
float step too. Like Stormer-Verlet, the last evaluation of one step is the first of the next, at the
same point; the sub-steps do not share it, so a step costs two evaluations.
"""

from __future__ import annotations

import math

from mode.schemes.momentum import MomentumCoefficients, MomentumSplitting, Substep


class LeapfrogScheme(MomentumSplitting):
    """Strang splitting :math:`R_{h/2} D_h R_{h/2}` of drift and exact relaxation; order 2, invertible."""

    name = "leapfrog"
    order = 2
    evals_per_step = 2

    def coefficients(self, h: float, eps: float) -> MomentumCoefficients:
        r"""The half relaxation and drift :math:`R_{h/2}, D_h`: :math:`\gamma = c = e^{-h/(2\varepsilon)}`
        (0 at :math:`\varepsilon = 0`) made exact, step :math:`h`."""
        return MomentumCoefficients.from_gamma(math.exp(-h / (2 * eps)) if eps > 0 else 0.0, h)

    def substeps(self, h: float, eps: float) -> tuple[Substep, ...]:
        half = self.coefficients(h, eps)
        return (Substep(half, 0.0), Substep(MomentumCoefficients(half.n, half.k, 0.0), h))
