"""The interface every one-step scheme implements."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from mode.ode import (
    Time,
    VectorField,
    check_eps,
    check_position,
    check_positive,
    check_velocity,
    checked_vector_field,
)


class NotInvertibleError(ValueError):
    """Raised when the inverse of a step that has none is asked for."""


class Scheme:
    """A one-step discretization of :math:`\\varepsilon \\ddot x + \\dot x = f(x, t)` in phase space.

    Attributes
    ----------
    name : str
        Registry name.
    order : int
        Global order of accuracy for ``eps > 0``.
    invertible : bool
        Whether :meth:`inverse` exists in closed form (for ``eps > 0``; see each scheme for the
        parameter values where it does not).
    evals_per_step : int
        Evaluations of ``f`` per step.
    """

    name: str
    order: int
    invertible: bool
    evals_per_step: int

    def step(
        self, f: Callable[..., Any], x: Tensor, v: Tensor | None, t: Time, h: float, eps: float
    ) -> tuple[Tensor, Tensor]:
        """Advance ``(x, v)`` at time ``t`` by one step ``h``; returns ``(x, v)``.

        ``v=None`` is zero velocity, as ``v0=None`` in :func:`mode.integrate`; otherwise ``v`` must have
        the shape, dtype and device of ``x``. At ``eps = 0`` the step ignores ``v``.
        """
        f, x, v, h, eps = self._validated(f, x, v, h, eps)
        return self._step(f, x, v, t, h, eps)

    def inverse(
        self, f: Callable[..., Any], x: Tensor, v: Tensor | None, t: Time, h: float, eps: float
    ) -> tuple[Tensor, Tensor]:
        """Undo :meth:`step`: given the state at ``t + h`` return the state at ``t`` (``v`` as in
        :meth:`step`)."""
        f, x, v, h, eps = self._validated(f, x, v, h, eps)
        if not self.invertible:
            raise NotInvertibleError(
                f"the {self.name!r} scheme has no closed-form inverse; invertible schemes: "
                "'momentum', 'exp-momentum', 'leapfrog'"
            )
        return self._inverse(f, x, v, t, h, eps)

    def _validated(
        self, f: Callable[..., Any], x: Tensor, v: Tensor | None, h: float, eps: float
    ) -> tuple[VectorField, Tensor, Tensor, float, float]:
        x = check_position(x, "x")
        v = check_velocity(x, v, names=("x", "v"))
        return checked_vector_field(f), x, v, check_positive("h", h), check_eps(eps)

    def _step(
        self, f: VectorField, x: Tensor, v: Tensor, t: Time, h: float, eps: float
    ) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _inverse(
        self, f: VectorField, x: Tensor, v: Tensor, t: Time, h: float, eps: float
    ) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<scheme {self.name!r}: order {self.order}, invertible={self.invertible}>"


def first_order_velocity(x_new: torch.Tensor, x: torch.Tensor, h: float) -> torch.Tensor:
    """Velocity reported by a first-order (``eps = 0``) step: the mean slope :math:`(x_{n+1} - x_n)/h`."""
    return (x_new - x) / h
