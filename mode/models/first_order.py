r"""First-order models: the neural ODE and the augmented neural ODE."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

import torch

from mode.models.base import ContinuousModel, State


class NODE(ContinuousModel):
    r"""Neural ODE (Chen, Rubanova, Bettencourt & Duvenaud, NeurIPS 2018).

    .. math::  \dot h = f(h, t), \qquad h(0) = x, \qquad \text{prediction } h(T)
       \text{ (or } \mathrm{readout}(h(T))\text{)}.

    Parameters
    ----------
    field : nn.Module
        :math:`f`, called as ``field(h)`` or ``field(h, t)``; returns a tensor of ``h``'s shape.
    T, method, rtol, atol, options, backprop, readout
        As in :class:`~mode.models.base.ContinuousModel`.

    The state is ``(h,)``.
    """

    def initial_state(self, x: torch.Tensor) -> State:
        return (x,)

    def dynamics(self, t: torch.Tensor, state: State) -> State:
        return (self.call_field(state[0], t=t),)


class ANODE(ContinuousModel):
    r"""Augmented neural ODE (Dupont, Doucet & Teh, NeurIPS 2019).

    The input is lifted to :math:`z = [h; a] \in \mathbb R^{d + p}` by ``augment_dim`` :math:`= p` extra
    coordinates on the last dimension, which start at zero:

    .. math::  \dot z = f(z, t), \qquad z(0) = [x; 0],

    so that trajectories may pass each other in the extra dimensions, which the flow of a first-order ODE
    on :math:`\mathbb R^d` cannot do. The prediction is ``readout(z(T))`` (the whole augmented state) with
    a readout, else the first :math:`d` coordinates :math:`h(T)`.

    Parameters
    ----------
    field : nn.Module
        :math:`f` on the augmented state (last dimension :math:`d + p`), called as ``field(z)`` or
        ``field(z, t)``.
    augment_dim : int
        :math:`p \ge 0`; ``0`` is the neural ODE :class:`NODE`.
    T, method, rtol, atol, options, backprop, readout
        As in :class:`~mode.models.base.ContinuousModel`.

    The state is ``(z,)``.
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
        augment_dim: int = 1,
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
        if isinstance(augment_dim, bool) or not isinstance(augment_dim, numbers.Integral):
            raise TypeError(f"augment_dim must be an integer >= 0, got {type(augment_dim).__name__}")
        if augment_dim < 0:
            raise ValueError(f"augment_dim must be an integer >= 0, got {augment_dim}")
        self.augment_dim: int = int(augment_dim)

    def extra_repr(self) -> str:
        return f"augment_dim={self.augment_dim}, {super().extra_repr()}"

    def initial_state(self, x: torch.Tensor) -> State:
        if x.ndim == 0:
            raise ValueError("x must have at least one dimension: ANODE augments its last dimension")
        zeros = x.new_zeros((*x.shape[:-1], self.augment_dim))
        return (torch.cat([x, zeros], dim=-1),)

    def dynamics(self, t: torch.Tensor, state: State) -> State:
        return (self.call_field(state[0], t=t),)

    def position(self, state: State) -> torch.Tensor:
        """The first :math:`d` coordinates :math:`h` of the augmented state."""
        z = state[0]
        return z[..., : z.shape[-1] - self.augment_dim]

    def readout_input(self, state: State) -> torch.Tensor:
        """The whole augmented state :math:`z = [h; a]`."""
        return state[0]
