r"""Explicit Runge-Kutta methods on the phase-space system (not invertible).

For a Butcher tableau :math:`(a_{ij}, b_i, c_i)` and :math:`y = (x, v)`,
:math:`\dot y = F(t, y) = (v, (f(x, t) - v)/\varepsilon)`:

.. math::  k_i = F\big(t + c_i h,\ y + h \textstyle\sum_{j<i} a_{ij} k_j\big), \qquad
           y_{n+1} = y_n + h \textstyle\sum_i b_i k_i .

With ``eps = 0`` the same tableau integrates :math:`\dot x = f(x, t)`, and the returned velocity is the mean
slope :math:`(x_{n+1} - x_n)/h`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from mode.ode import Time, VectorField, phase_space
from mode.schemes.base import Scheme, first_order_velocity


def _combine(y: Any, h: float, coefficients: Sequence[float], slopes: Sequence[Any]) -> Any:
    """:math:`y + h \\sum_j c_j k_j` on a tensor or on an ``(x, v)`` pair."""
    terms = [(c, k) for c, k in zip(coefficients, slopes, strict=True) if c != 0]
    if isinstance(y, tuple):
        return tuple(y_i + h * sum(c * k[i] for c, k in terms) for i, y_i in enumerate(y))
    return y + h * sum(c * k for c, k in terms)


class ExplicitRungeKutta(Scheme):
    """Explicit Runge-Kutta scheme given by its Butcher tableau."""

    invertible = False

    def __init__(
        self,
        name: str,
        order: int,
        a: Sequence[Sequence[float]],
        b: Sequence[float],
        c: Sequence[float],
    ) -> None:
        self.name, self.order = name, order
        self.a, self.b, self.c = a, b, c
        self.evals_per_step = len(b)

    def _step(
        self, f: VectorField, x: Tensor, v: Tensor, t: Time, h: float, eps: float
    ) -> tuple[Tensor, Tensor]:
        rhs = phase_space(f, eps)
        y = x if eps == 0 else (x, v)
        slopes: list[Any] = []
        for a_i, c_i in zip(self.a, self.c, strict=True):
            slopes.append(rhs(t + c_i * h, _combine(y, h, a_i, slopes)))
        y_new = _combine(y, h, self.b, slopes)
        if eps == 0:
            return y_new, first_order_velocity(y_new, x, h)
        return y_new


EULER = ExplicitRungeKutta("euler", 1, a=[[]], b=[1.0], c=[0.0])
HEUN = ExplicitRungeKutta("heun", 2, a=[[], [1.0]], b=[0.5, 0.5], c=[0.0, 1.0])
RK4 = ExplicitRungeKutta(
    "rk4",
    4,
    a=[[], [0.5], [0.0, 0.5], [0.0, 0.0, 1.0]],
    b=[1 / 6, 1 / 3, 1 / 3, 1 / 6],
    c=[0.0, 0.5, 0.5, 1.0],
)
