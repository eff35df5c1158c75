"""Continuous-time solves with torchdiffeq, with function-evaluation counts.

Solves the phase-space system :math:`\\dot x = v,\\ \\varepsilon \\dot v = f(x, t) - v` (``eps > 0``) or
:math:`\\dot x = f(x, t)` (``eps = 0``) with any torchdiffeq method, by direct backpropagation through the
solver (``adjoint=False``) or by the adjoint method (``adjoint=True``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torchdiffeq

from mode.ode import as_vector_field, check_eps, check_positive, check_state, phase_space


class CountingField(torch.nn.Module):
    """The phase-space right-hand side, counting its evaluations.

    ``f`` is registered as a submodule when it is one, so that ``odeint_adjoint`` finds its parameters.
    """

    def __init__(self, f, eps: float):
        super().__init__()
        if isinstance(f, torch.nn.Module):
            self.f = f
        self.rhs = phase_space(as_vector_field(f), eps)
        self.nfe = 0

    def forward(self, t, state):
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
    f,
    x0,
    v0=None,
    *,
    eps,
    T=1.0,
    t=None,
    method="dopri5",
    rtol=1e-7,
    atol=1e-9,
    adjoint=False,
    options=None,
    adjoint_params=None,
) -> ODESolution:
    r"""Solve :math:`\varepsilon \ddot x + \dot x = f(x, t)` (or :math:`\dot x = f` for ``eps = 0``).

    Parameters
    ----------
    f, x0, v0, eps, T
        As in :func:`mode.integrate`.
    t : Tensor, optional
        Increasing output times starting at 0; the solution is returned at every one. Default ``[0, T]``,
        returning the final state only.
    method, rtol, atol, options
        Passed to torchdiffeq (any of its methods; fixed-step ones need ``options={"step_size": h}``).
    adjoint : bool
        Use ``torchdiffeq.odeint_adjoint`` (memory constant in the number of steps).
    adjoint_params : sequence of Tensor, optional
        Parameters to differentiate with the adjoint method when ``f`` is not an ``nn.Module``.

    Returns
    -------
    ODESolution
    """
    eps = check_eps(eps)
    v0 = check_state(x0, v0, eps)
    if t is None:
        times = torch.tensor([0.0, check_positive("T", T)], dtype=x0.dtype, device=x0.device)
    else:
        times = torch.as_tensor(t, dtype=x0.dtype, device=x0.device)
        if times.ndim != 1 or times.numel() < 2 or not bool((times[1:] > times[:-1]).all()):
            raise ValueError("t must be a 1-D increasing tensor of at least two times")
    field = CountingField(f, eps)
    state = x0 if eps == 0 else (x0, v0)
    kwargs = dict(rtol=rtol, atol=atol, method=method, options=options)
    if adjoint:
        params = tuple(field.parameters()) if adjoint_params is None else tuple(adjoint_params)
        solution = torchdiffeq.odeint_adjoint(field, state, times, adjoint_params=params, **kwargs)
    else:
        solution = torchdiffeq.odeint(field, state, times, **kwargs)
    x, v = (solution, None) if eps == 0 else solution
    if t is None:
        x, v = x[-1], (None if v is None else v[-1])
    return ODESolution(x=x, v=v, t=times, nfe_forward=field.nfe, field=field)
