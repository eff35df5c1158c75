"""Continuous-time solves with torchdiffeq, with function-evaluation counts.

Solves the phase-space system :math:`\\dot x = v,\\ \\varepsilon \\dot v = f(x, t) - v` (``eps > 0``) or
:math:`\\dot x = f(x, t)` (``eps = 0``) with any torchdiffeq method, by direct backpropagation through the
solver (``adjoint=False``) or by the adjoint method (``adjoint=True``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torchdiffeq

from mode.ode import VectorField, check_eps, check_positive, check_state, checked_vector_field, phase_space

#: Dtypes torchdiffeq's step-size control works in: in half precision it fails ("underflow in dt"), hangs or
#: stops early with a wrong answer.
SOLVER_DTYPES = (torch.float32, torch.float64)


class CountingField(torch.nn.Module):
    """The phase-space right-hand side, counting its evaluations.

    ``f`` is registered as a submodule when it is one, so that ``odeint_adjoint`` finds its parameters.
    ``vector_field`` is ``f(x, t)``, its first value checked by :func:`mode.ode.check_force`.
    """

    def __init__(self, f: Callable[..., Any], eps: float) -> None:
        super().__init__()
        if isinstance(f, torch.nn.Module):
            self.f = f
        self.vector_field = checked_vector_field(f)
        self.rhs = phase_space(self.vector_field, eps)
        self.nfe = 0

    def forward(self, t: torch.Tensor, state: Any) -> Any:
        self.nfe += 1
        return self.rhs(t, state)


@dataclass
class ODESolution:
    """Result of :func:`odeint`.

    Attributes
    ----------
    x, v : Tensor
        Position and velocity at the last time (or at every time of ``t`` when given); ``v`` is ``None``
        for the first-order model.
    t : Tensor
        The output times.
    nfe_forward : int
        Evaluations of ``f`` during the forward solve.
    """

    x: torch.Tensor
    v: torch.Tensor | None
    t: torch.Tensor
    nfe_forward: int
    field: CountingField

    @property
    def nfe_backward(self) -> int:
        """Evaluations of ``f`` made by the backward pass so far (0 for direct backpropagation, which
        differentiates the stored evaluations instead of making new ones)."""
        return self.field.nfe - self.nfe_forward


def odeint(
    f: Callable[..., Any],
    x0: torch.Tensor,
    v0: torch.Tensor | None = None,
    *,
    eps: float,
    T: float | None = None,
    t: torch.Tensor | None = None,
    method: str = "dopri5",
    rtol: float = 1e-7,
    atol: float = 1e-9,
    adjoint: bool = False,
    options: Mapping[str, Any] | None = None,
    adjoint_params: Iterable[torch.Tensor] | None = None,
) -> ODESolution:
    r"""Solve :math:`\varepsilon \ddot x + \dot x = f(x, t)` (or :math:`\dot x = f` for ``eps = 0``).

    Parameters
    ----------
    f, x0, v0, eps
        As in :func:`mode.integrate`; ``x0`` must be float32 or float64 (torchdiffeq's step-size control
        fails in half precision; :func:`mode.integrate` takes any floating dtype).
    T : float, optional
        Horizon (default 1) when ``t`` is not given. With ``t`` it is redundant: it may be given only if
        it equals ``t[-1]``.
    t : Tensor, optional
        Increasing output times starting at 0; the solution is returned at every one. Default ``[0, T]``,
        returning the final state only.
    method, rtol, atol, options
        Passed to torchdiffeq (any of its methods; fixed-step ones need ``options={"step_size": h}``).
    adjoint : bool
        Use ``torchdiffeq.odeint_adjoint`` (memory constant in the number of steps).
    adjoint_params : sequence of Tensor, optional
        Parameters to differentiate with the adjoint method when ``f`` is not an ``nn.Module``. Required
        when such an ``f`` reads tensors that require grad (parameters captured by a closure): the adjoint
        method differentiates only the parameters it is given.

    Returns
    -------
    ODESolution

    Raises
    ------
    TypeError, ValueError
        On invalid arguments; when the first value of ``f`` is not a tensor of the shape, dtype and device
        of ``x`` (see :func:`mode.ode.check_force`); when ``T`` and ``t`` disagree; and, with
        ``adjoint=True`` and no ``adjoint_params``, when an ``f`` without parameters of its own depends on
        tensors that require grad.
    """
    eps = check_eps(eps)
    v0 = check_state(x0, v0, eps)
    if x0.dtype not in SOLVER_DTYPES:
        raise TypeError(
            f"x0 must be float32 or float64 for odeint, got {x0.dtype}: torchdiffeq's step-size control "
            "fails in half precision; convert x0 (and f) with .float(), or use mode.integrate for a "
            "fixed-step solve in this dtype"
        )
    if t is None:
        T = 1.0 if T is None else T
        times = torch.tensor([0.0, check_positive("T", T)], dtype=x0.dtype, device=x0.device)
    else:
        times = torch.as_tensor(t, dtype=x0.dtype, device=x0.device)
        if times.ndim != 1 or times.numel() < 2 or not bool((times[1:] > times[:-1]).all()):
            raise ValueError("t must be a 1-D increasing tensor of at least two times")
        if T is not None:
            _check_horizon(check_positive("T", T), times)
    field = CountingField(f, eps)
    state = x0 if eps == 0 else (x0, v0)
    kwargs = dict(rtol=rtol, atol=atol, method=method, options=options)
    if adjoint:
        params: tuple[torch.Tensor, ...]
        if adjoint_params is None:
            params = tuple(field.parameters())
            if not params:
                _check_no_hidden_parameters(field.vector_field, x0, times[0])
        else:
            params = tuple(adjoint_params)
        solution = torchdiffeq.odeint_adjoint(field, state, times, adjoint_params=params, **kwargs)
    else:
        solution = torchdiffeq.odeint(field, state, times, **kwargs)
    x, v = (solution, None) if eps == 0 else solution
    if t is None:
        x, v = x[-1], (None if v is None else v[-1])
    return ODESolution(x=x, v=v, t=times, nfe_forward=field.nfe, field=field)


def _check_horizon(T: float, times: torch.Tensor) -> None:
    """Refuse a horizon ``T`` that the output times ``t`` would silently override."""
    end = float(times[-1])
    if not math.isclose(T, end, rel_tol=4 * torch.finfo(times.dtype).eps):
        raise ValueError(
            f"T = {T} and t (ending at {end}) are both given and disagree: the solution is returned at "
            "the times t, so give only t (or only T)"
        )


def _check_no_hidden_parameters(vector_field: VectorField, x0: torch.Tensor, t0: torch.Tensor) -> None:
    """Refuse an adjoint solve that would silently leave tensors ``f`` reads without a gradient.

    ``odeint_adjoint`` differentiates only ``adjoint_params``, and builds its output from ``x0`` and them
    alone, so a parameter captured by a closure gets no gradient (or backward fails with "does not
    require grad"). One evaluation of ``f`` at a detached ``x0``, which also checks its output, shows
    whether it depends on such tensors; it is not counted in ``nfe_forward``.
    """
    if not torch.is_grad_enabled():
        return
    if vector_field(x0.detach(), t0).requires_grad:
        raise ValueError(
            "f depends on tensors that require grad (parameters captured by a closure?) that adjoint=True "
            "cannot see: pass them as adjoint_params=[...], or make f an nn.Module that owns them"
        )
