r"""Heavy-ball neural ODEs: the continuous limit of gradient descent with momentum, as a model."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from mode.models.base import ContinuousModel, State, check_nonnegative, check_optional_module
from mode.ode import _real, check_positive


class HBNODE(ContinuousModel):
    r"""Heavy-ball neural ODE (Xia, Suliafu, Ji, Nguyen, Bertozzi, Osher & Wang, NeurIPS 2021).

    .. math::  \dot h = m, \qquad \dot m = -\gamma m + f(h, t) - \xi h, \qquad h(0) = x_0,
       \quad m(0) = u(x_0) \ (\text{default } 0),

    on the state ``(h, m)``, with damping :math:`\gamma` and the correction :math:`\xi \ge 0` (the paper
    introduces :math:`\xi` with the generalized model :class:`GHBNODE`; :math:`\xi = 0` is the paper's
    HBNODE, :math:`\ddot h + \gamma \dot h = f(h, t)`). The prediction is :math:`h(T)` (or
    ``readout(h(T))``).

    With a fixed :math:`\gamma > 0` and :math:`\xi = 0` this is
    :class:`~mode.models.second_order.MomentumODE` with :math:`\varepsilon = 1 / \gamma` and force
    :math:`f / \gamma`: :math:`\dot m = -\gamma m + f \Leftrightarrow \varepsilon \dot m + m = \varepsilon f`.

    Parameters
    ----------
    field : nn.Module
        :math:`f`, called as ``field(h)`` or ``field(h, t)``.
    gamma : float
        The damping :math:`\gamma` (its value at initialisation when learned): in
        :math:`(0, \gamma_{\max})` when learned, :math:`\ge 0` when fixed.
    learn_gamma : bool
        Learn :math:`\gamma = \gamma_{\max}\, \mathrm{sigmoid}(\theta)` through the parameter
        ``gamma_raw`` :math:`= \theta`, which keeps it in :math:`(0, \gamma_{\max})`. The authors'
        released implementation learns the damping as :math:`\mathrm{sigmoid}(\theta)`, which is
        ``gamma_max = 1`` (the default).
    gamma_max : float
        :math:`\gamma_{\max} > 0`, the bound of the learned damping (unused when ``gamma`` is fixed).
    xi : float
        :math:`\xi \ge 0` (fixed).
    initial_momentum : nn.Module, optional
        :math:`u`, a learned map from the input to :math:`m(0)`; ``None`` (default) for :math:`m(0) = 0`.
    T, method, rtol, atol, options, backprop, readout
        As in :class:`~mode.models.base.ContinuousModel`.
    """

    _outside_dynamics = ("readout", "initial_momentum")

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
        gamma: float = 0.5,
        learn_gamma: bool = True,
        gamma_max: float = 1.0,
        xi: float = 0.0,
        initial_momentum: torch.nn.Module | None = None,
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
        if not isinstance(learn_gamma, bool):
            raise TypeError(f"learn_gamma must be a bool, got {type(learn_gamma).__name__}")
        gamma = _real("gamma", gamma)
        self.gamma_max = check_positive("gamma_max", gamma_max)
        if learn_gamma:
            if not 0.0 < gamma < self.gamma_max:
                raise ValueError(
                    f"gamma must lie in (0, gamma_max) = (0, {self.gamma_max}) when learned "
                    f"(gamma = gamma_max * sigmoid(theta)), got {gamma}"
                )
            theta = math.log(gamma) - math.log(self.gamma_max - gamma)
            self.gamma_raw: torch.nn.Parameter | None = torch.nn.Parameter(torch.tensor(theta))
        else:
            self.gamma_raw = None
            check_nonnegative("gamma", gamma)
        self._gamma_fixed = gamma
        self.xi = check_nonnegative("xi", xi)
        self.initial_momentum = check_optional_module("initial_momentum", initial_momentum)

    @property
    def gamma(self) -> torch.Tensor | float:
        r""":math:`\gamma`: ``gamma_max * sigmoid(gamma_raw)`` when learned, else the fixed float."""
        if self.gamma_raw is None:
            return self._gamma_fixed
        return self.gamma_max * torch.sigmoid(self.gamma_raw)

    def extra_repr(self) -> str:
        learned = "learned" if self.gamma_raw is not None else "fixed"
        gamma = float(torch.as_tensor(self.gamma).detach())
        return f"gamma={gamma:.6g} ({learned}), xi={self.xi}, {super().extra_repr()}"

    def initial_state(self, x: torch.Tensor) -> State:
        return (x, self.initial_velocity_from(self.initial_momentum, x, "initial_momentum"))

    def velocity(self, m: torch.Tensor) -> torch.Tensor:
        r""":math:`\dot h` as a function of the momentum: :math:`m` itself."""
        return m

    def dynamics(self, t: torch.Tensor, state: State) -> State:
        h, m = state
        force = self.call_field(h, t=t)
        if self.xi:
            force = force - self.xi * h
        return (self.velocity(m), force - self.gamma * m)


class GHBNODE(HBNODE):
    r"""Generalized heavy-ball neural ODE (Xia et al., NeurIPS 2021).

    .. math::  \dot h = \sigma(m), \qquad \dot m = -\gamma m + f(h, t) - \xi h,

    where the nonlinearity :math:`\sigma` (default :math:`\tanh`) bounds the velocity and
    :math:`-\xi h` acts as a skip connection; :math:`\sigma = \mathrm{id}` is :class:`HBNODE`.

    Parameters
    ----------
    activation : callable
        :math:`\sigma`, applied elementwise to :math:`m` (an ``nn.Module`` is registered, and its
        parameters learned with the field's).
    field, gamma, learn_gamma, gamma_max, xi, initial_momentum
        As in :class:`HBNODE`.
    T, method, rtol, atol, options, backprop, readout
        As in :class:`~mode.models.base.ContinuousModel`.
    """

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
        gamma: float = 0.5,
        learn_gamma: bool = True,
        gamma_max: float = 1.0,
        xi: float = 0.0,
        initial_momentum: torch.nn.Module | None = None,
        activation: Callable[[torch.Tensor], torch.Tensor] = torch.tanh,
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
            gamma=gamma,
            learn_gamma=learn_gamma,
            gamma_max=gamma_max,
            xi=xi,
            initial_momentum=initial_momentum,
        )
        if not callable(activation):
            raise TypeError(f"activation must be a callable sigma(m), got {type(activation).__name__}")
        self.activation = activation

    def velocity(self, m: torch.Tensor) -> torch.Tensor:
        r""":math:`\dot h = \sigma(m)`."""
        return self.activation(m)
