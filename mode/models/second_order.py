r"""Second-order models: the second-order neural ODE and the continuous Momentum ResNet."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from mode.models.base import ContinuousModel, State, check_optional_module, inverse_softplus
from mode.ode import check_eps


class SONODE(ContinuousModel):
    r"""Second-order neural ODE (Norcliffe, Bodnar, Day, Simidjievski & Liò, NeurIPS 2020).

    .. math::  \ddot x = f(x, \dot x, t), \qquad x(0) = x_0, \qquad \dot x(0) = u(x_0),

    solved as the first-order system :math:`\dot x = v,\ \dot v = f(x, v, t)` on the state ``(x, v)``; the
    prediction is :math:`x(T)` (or ``readout(x(T))``).

    Parameters
    ----------
    field : nn.Module
        :math:`f`, called as ``field(x, v)`` or ``field(x, v, t)``; returns a tensor of ``x``'s shape.
    initial_velocity : nn.Module or None
        :math:`u`, a learned map from the input to the initial velocity (the paper learns
        :math:`\dot x(0)` as a function of :math:`x_0`), or ``None`` for :math:`\dot x(0) = 0`. It is a
        required argument: a default network would have to fix an architecture and the input size, which
        the model does not know before its first call, and a silent zero would drop the paper's learned
        initial velocity.
    T, method, rtol, atol, options, backprop, readout
        As in :class:`~mode.models.base.ContinuousModel`.
    """

    _outside_dynamics = ("readout", "initial_velocity")
    _field_inputs = 2

    def __init__(
        self,
        field: torch.nn.Module,
        *,
        initial_velocity: torch.nn.Module | None,
        T: float = 1.0,
        method: str = "dopri5",
        rtol: float = 1e-7,
        atol: float = 1e-9,
        options: Mapping[str, Any] | None = None,
        backprop: str = "autograd",
        readout: torch.nn.Module | None = None,
    ) -> None:
        super().__init__(
            field,
            T=T,
            method=method,
            rtol=rtol,
            atol=atol,
            options=options,
            backprop=backprop,
            readout=readout,
        )
        self.initial_velocity = check_optional_module("initial_velocity", initial_velocity)

    def initial_state(self, x: torch.Tensor) -> State:
        return (x, self.initial_velocity_from(self.initial_velocity, x, "initial_velocity"))

    def dynamics(self, t: torch.Tensor, state: State) -> State:
        x, v = state
        return (v, self.call_field(x, v, t=t))


class MomentumODE(ContinuousModel):
    r"""The continuous limit of Momentum ResNets (Sander, Ablin, Blondel & Peyré, ICML 2021).

    .. math::  \varepsilon \ddot x + \dot x = f(x, t), \qquad x(0) = x_0, \qquad \dot x(0) = u(x_0)
       \ (\text{default } 0),

    solved as the phase-space system of :func:`~mode.continuous.odeint`,
    :math:`\dot x = v,\ \dot v = (f(x, t) - v) / \varepsilon`, on the state ``(x, v)``; the prediction is
    :math:`x(T)` (or ``readout(x(T))``). The depth-:math:`L` Momentum ResNet with momentum
    :math:`\gamma = 1 - h / \varepsilon` is its semi-implicit Euler discretization with step
    :math:`h = T / L`.

    Parameters
    ----------
    field : nn.Module
        :math:`f`, called as ``field(x)`` or ``field(x, t)``.
    eps : float
        :math:`\varepsilon > 0` (its value at initialisation when learned).
    learn_eps : bool
        Learn :math:`\varepsilon = \log(1 + e^\rho)` (softplus, so it stays positive) through the
        parameter ``eps_raw`` :math:`= \rho`.
    initial_velocity : nn.Module, optional
        :math:`u`, a map from the input to :math:`\dot x(0)`; ``None`` (default) starts at rest, as
        Momentum ResNets do.
    T, method, rtol, atol, options, backprop, readout
        As in :class:`~mode.models.base.ContinuousModel`.
    """

    _outside_dynamics = ("readout", "initial_velocity")

    def __init__(
        self,
        field: torch.nn.Module,
        *,
        T: float = 1.0,
        method: str = "dopri5",
        rtol: float = 1e-7,
        atol: float = 1e-9,
        options: Mapping[str, Any] | None = None,
        backprop: str = "autograd",
        readout: torch.nn.Module | None = None,
        eps: float = 1.0,
        learn_eps: bool = False,
        initial_velocity: torch.nn.Module | None = None,
    ) -> None:
        super().__init__(
            field,
            T=T,
            method=method,
            rtol=rtol,
            atol=atol,
            options=options,
            backprop=backprop,
            readout=readout,
        )
        eps = check_eps(eps, allow_zero=False)
        if not isinstance(learn_eps, bool):
            raise TypeError(f"learn_eps must be a bool, got {type(learn_eps).__name__}")
        self.eps_raw = torch.nn.Parameter(torch.tensor(inverse_softplus(eps))) if learn_eps else None
        self._eps_fixed = eps
        self.initial_velocity = check_optional_module("initial_velocity", initial_velocity)

    @property
    def eps(self) -> torch.Tensor | float:
        r""":math:`\varepsilon`: ``softplus(eps_raw)`` when learned, else the fixed float."""
        if self.eps_raw is None:
            return self._eps_fixed
        return torch.nn.functional.softplus(self.eps_raw)

    def extra_repr(self) -> str:
        learned = "learned" if self.eps_raw is not None else "fixed"
        return f"eps={float(torch.as_tensor(self.eps).detach()):.6g} ({learned}), {super().extra_repr()}"

    def initial_state(self, x: torch.Tensor) -> State:
        return (x, self.initial_velocity_from(self.initial_velocity, x, "initial_velocity"))

    def dynamics(self, t: torch.Tensor, state: State) -> State:
        x, v = state
        return (v, (self.call_field(x, t=t) - v) / self.eps)
