"""Continuous-time solves, with function-evaluation counts.

Solves the phase-space system :math:`\\dot x = v,\\ \\varepsilon \\dot v = f(x, t) - v` (``eps > 0``) or
:math:`\\dot x = f(x, t)` (``eps = 0``) with any torchdiffeq method, by direct backpropagation through the
solver or by the adjoint method, or with a fixed-step scheme of :data:`mode.SCHEMES`, by direct
backpropagation, checkpointing or exact reversal (:mod:`mode.fixed_step`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torchdiffeq

# torchdiffeq exports no list of its methods; its registry is the one source that stays in step with the
# installed version.
from torchdiffeq._impl.odeint import SOLVERS as TORCHDIFFEQ_METHODS
from torchdiffeq._impl.solvers import FixedGridODESolver

from mode.fixed_step import SCHEME_ONLY_BACKPROP, solve_fixed
from mode.ode import (
    VectorField,
    check_eps,
    check_positive,
    check_state,
    check_steps,
    checked_vector_field,
    phase_space,
)
from mode.schemes import SCHEMES

#: Dtypes torchdiffeq's step-size control works in: in half precision it fails ("underflow in dt"), hangs or
#: stops early with a wrong answer.
SOLVER_DTYPES = (torch.float32, torch.float64)

#: How :func:`odeint` computes gradients.
ODE_BACKPROP = ("autograd", "adjoint", "checkpoint", "reversible")


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
    method: str | None = None,
    rtol: float = 1e-7,
    atol: float = 1e-9,
    backprop: str | None = None,
    steps: int | None = None,
    adjoint: bool = False,
    options: Mapping[str, Any] | None = None,
    adjoint_params: Iterable[torch.Tensor] | None = None,
) -> ODESolution:
    r"""Solve :math:`\varepsilon \ddot x + \dot x = f(x, t)` (or :math:`\dot x = f` for ``eps = 0``).

    Parameters
    ----------
    f, x0, v0, eps
        As in :func:`mode.integrate`; ``x0`` must be float32 or float64 (torchdiffeq's step-size control
        fails in half precision, and the exact state encodes these two; :func:`mode.integrate` takes any
        floating dtype).
    T : float, optional
        Horizon (default 1) when ``t`` is not given. With ``t`` it is redundant: it may be given only if
        it equals ``t[-1]``.
    t : Tensor, optional
        Increasing output times; the solution is returned at every one. Default ``[0, T]``, returning the
        final state only.
    method : str, optional
        A torchdiffeq method (default ``"dopri5"``) or a scheme of :data:`mode.SCHEMES` (default
        ``"leapfrog"`` for ``backprop="reversible"`` or ``"checkpoint"``, which take schemes only).
        ``"euler"`` and ``"rk4"`` name both: with ``backprop="autograd"`` or ``"adjoint"`` they are
        torchdiffeq's (whose ``rk4`` is the 3/8 rule), with ``"checkpoint"`` the schemes.
    rtol, atol
        Tolerances of torchdiffeq's adaptive methods.
    backprop : {"autograd", "adjoint", "reversible", "checkpoint"}, optional
        How gradients are computed (default ``"autograd"``):

        * ``"autograd"``: backpropagation through the solver's operations; memory grows with the steps.
        * ``"adjoint"``: torchdiffeq's adjoint method, a backward solve of the adjoint ODE; memory flat in
          the steps, gradients of the ODE to the solver's tolerance, not of the forward discretization.
        * ``"checkpoint"``: a fixed-step scheme, recomputed segment by segment in the backward pass
          (:mod:`mode.fixed_step`); autograd's gradients with :math:`O(\sqrt N)` states stored.
        * ``"reversible"``: an invertible fixed-step scheme (``momentum``, ``exp-momentum``,
          ``leapfrog``) in exact integer arithmetic: the forward stores no trajectory, the backward
          rebuilds every state bit for bit, and the gradient is that of the discrete solve (equal to
          autograd's through the same steps to float rounding). Needs ``eps > 0``.
    steps : int, optional
        Number of equal steps from ``t[0]`` to the last time, for a scheme or a fixed-grid torchdiffeq
        method (the alternative to ``options={"step_size": h}``). Every output time must be a whole
        number of steps from ``t[0]``.
    adjoint : bool
        ``True`` is ``backprop="adjoint"``.
    options : mapping, optional
        Passed to torchdiffeq; for a scheme only ``{"step_size": h}`` is understood.
    adjoint_params : sequence of Tensor, optional
        With ``backprop="adjoint"``: the parameters to differentiate when ``f`` is not an ``nn.Module``.
        Required when such an ``f`` reads tensors that require grad (parameters captured by a closure):
        the adjoint method differentiates only the parameters it is given. With ``"reversible"``: tensors
        ``f`` reads that are not leaves (computed from parameters before the call); the parameters of a
        module ``f`` and the leaves a closure reads are found without them.

    Returns
    -------
    ODESolution

    Raises
    ------
    TypeError, ValueError
        On invalid arguments; when the first value of ``f`` is not a tensor of the shape, dtype and device
        of ``x`` (see :func:`mode.ode.check_force`); when ``T`` and ``t`` disagree; when ``backprop`` and
        ``method`` do not go together (an adaptive method with ``"reversible"``, a scheme with
        ``"adjoint"``, a scheme that is not invertible with ``"reversible"``, ``eps = 0`` with
        ``"reversible"``); when an output time is off the step grid; and, with ``backprop="adjoint"`` and
        no ``adjoint_params``, when an ``f`` without parameters of its own depends on tensors that
        require grad.
    """
    eps = check_eps(eps)
    v0 = check_state(x0, v0, eps)
    if x0.dtype not in SOLVER_DTYPES:
        raise TypeError(
            f"x0 must be float32 or float64 for odeint, got {x0.dtype}: torchdiffeq's step-size control "
            "fails in half precision; convert x0 (and f) with .float(), or use mode.integrate for a "
            "fixed-step solve in this dtype"
        )
    backprop = _backprop(backprop, adjoint)
    method = _method(method, backprop)
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
    # "euler" and "rk4" are torchdiffeq's under autograd and the adjoint, the schemes otherwise.
    if backprop in SCHEME_ONLY_BACKPROP or method not in TORCHDIFFEQ_METHODS:
        x, v = _solve_scheme(field, x0, v0, eps, times, method, backprop, steps, options, adjoint_params)
    else:
        x, v = _solve_torchdiffeq(
            field, x0, v0, eps, times, method, backprop, steps, options, adjoint_params, rtol, atol
        )
    if t is None:
        x, v = x[-1], (None if v is None else v[-1])
    return ODESolution(x=x, v=v, t=times, nfe_forward=field.nfe, field=field)


def _backprop(backprop: str | None, adjoint: bool) -> str:
    if adjoint and backprop not in (None, "adjoint"):
        raise ValueError(f"adjoint=True is backprop='adjoint': it contradicts backprop={backprop!r}")
    backprop = "adjoint" if adjoint else "autograd" if backprop is None else backprop
    if backprop not in ODE_BACKPROP:
        raise ValueError(f"backprop must be one of {ODE_BACKPROP}, got {backprop!r}")
    return backprop


def _method(method: str | None, backprop: str) -> str:
    if method is None:
        return "leapfrog" if backprop in SCHEME_ONLY_BACKPROP else "dopri5"
    if not isinstance(method, str):
        raise TypeError(f"method must be a str, got {type(method).__name__}")
    if method not in SCHEMES and method not in TORCHDIFFEQ_METHODS:
        raise ValueError(
            f"method must be a torchdiffeq method, one of {sorted(TORCHDIFFEQ_METHODS)}, or a scheme of "
            f"mode.SCHEMES, one of {sorted(SCHEMES)}; got {method!r}"
        )
    if backprop in SCHEME_ONLY_BACKPROP and method not in SCHEMES:
        raise ValueError(
            f"backprop={backprop!r} runs a fixed-step scheme of mode.SCHEMES, one of {sorted(SCHEMES)}, "
            f"got method={method!r}"
        )
    if backprop == "adjoint" and method not in TORCHDIFFEQ_METHODS:
        raise ValueError(
            f"backprop='adjoint' is torchdiffeq's adjoint method and takes a torchdiffeq method, got "
            f"{method!r}; for a scheme of mode.SCHEMES use backprop='reversible' (exact gradients of the "
            "discrete solve, memory flat in the steps) or 'checkpoint'"
        )
    return method


def _solve_scheme(field, x0, v0, eps, times, method, backprop, steps, options, adjoint_params):
    options = dict(options or {})
    step_size = options.pop("step_size", None)
    if options:
        raise ValueError(f"options for a scheme of mode.SCHEMES take only 'step_size', got {sorted(options)}")
    xs, vs = solve_fixed(
        field,
        x0,
        None if eps == 0 else v0,
        eps,
        times,
        scheme=method,
        backprop=backprop,
        steps=steps,
        step_size=step_size,
        adjoint_params=adjoint_params,
    )
    # The initial state is the first output, as in torchdiffeq's solutions.
    x = torch.stack([x0, *xs])
    v = None if eps == 0 else torch.stack([torch.zeros_like(x0) if v0 is None else v0, *vs])
    return x, v


def _solve_torchdiffeq(
    field, x0, v0, eps, times, method, backprop, steps, options, adjoint_params, rtol, atol
):
    solver = TORCHDIFFEQ_METHODS[method]
    if steps is not None:
        if not issubclass(solver, FixedGridODESolver):
            raise ValueError(
                f"steps is for a fixed-step method; {method!r} is adaptive (it chooses its steps from rtol "
                "and atol): leave steps out, or pick a fixed-grid method such as 'rk4'"
            )
        if options and "step_size" in options:
            raise ValueError("give steps=N or options={'step_size': h}, not both")
        options = {**(options or {}), "step_size": float(times[-1] - times[0]) / check_steps(steps)}
    state = x0 if eps == 0 else (x0, v0)
    kwargs = dict(rtol=rtol, atol=atol, method=method, options=options)
    if backprop == "adjoint":
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
    return (solution, None) if eps == 0 else solution


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
