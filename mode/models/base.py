r"""The machinery every continuous-time model shares: validation, counted solve, backprop dispatch.

A model is an initial state :math:`s(0) = s_0(x)` built from the input :math:`x`, a right-hand side
:math:`\dot s = F(s, t)` that calls the network ``field``, and a prediction read from :math:`s(T)`. A
subclass of :class:`ContinuousModel` states these three pieces
(:meth:`~ContinuousModel.initial_state`, :meth:`~ContinuousModel.dynamics` and
:meth:`~ContinuousModel.position` or :meth:`~ContinuousModel.readout_input`); the solve with torchdiffeq,
the count of function evaluations and the choice between direct backpropagation and the adjoint method are
done here once for all of them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torchdiffeq

from mode.continuous import SOLVER_DTYPES, TORCHDIFFEQ_METHODS
from mode.ode import _real, check_force, check_position, check_positive, check_velocity, takes_time

BACKPROP_MODES = ("autograd", "adjoint")
# A state: a tuple of tensors (torchdiffeq integrates tuples component by component).
State = tuple[torch.Tensor, ...]


@dataclass
class ModelOutput:
    """What a continuous-time model returns: from ``forward``, at the final time; from
    :meth:`ContinuousModel.trajectory`, at every output time, along a leading dimension.

    Attributes
    ----------
    prediction : Tensor
        ``readout(z)`` of the final state's readout input ``z`` when the model has a readout, else the
        position part of the final state (:math:`h(T)` or :math:`x(T)`).
    state : tuple of Tensor
        The final full state: ``(h,)`` for NODE, ``(z,)`` (the augmented state) for ANODE, ``(x, v)`` for
        the second-order models, ``(h, m)`` for the heavy-ball ones.
    nfe_forward : int
        Evaluations of the right-hand side (each one calls ``field`` once) during the forward solve.
    """

    prediction: torch.Tensor
    state: State
    nfe_forward: int


class CountingDynamics:
    """The right-hand side ``F(t, s)`` in torchdiffeq's argument order, counting its evaluations.

    One is made per forward solve; the adjoint method evaluates it again during the backward pass, so the
    count after backward minus the count after forward is the backward pass's number of evaluations.
    """

    def __init__(self, dynamics: Callable[[torch.Tensor, State], State]) -> None:
        self.dynamics = dynamics
        self.nfe = 0

    def __call__(self, t: torch.Tensor, state: State) -> State:
        self.nfe += 1
        return self.dynamics(t, state)


def check_module(name: str, module: object) -> torch.nn.Module:
    """Validate an ``nn.Module`` argument and return it."""
    if not isinstance(module, torch.nn.Module):
        raise TypeError(
            f"{name} must be a torch.nn.Module, got {type(module).__name__}: wrap a function in an "
            "nn.Module that owns its parameters, so that the adjoint method sees them"
        )
    return module


def check_optional_module(name: str, module: object) -> torch.nn.Module | None:
    """Validate an ``nn.Module`` argument that may be ``None`` and return it."""
    if module is None:
        return None
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module or None, got {type(module).__name__}")
    return module


def check_nonnegative(name: str, value: float) -> float:
    """Validate a finite real :math:`\\ge 0` and return it as a float."""
    value = _real(name, value)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def inverse_softplus(y: float) -> float:
    r"""The :math:`\rho` with :math:`\log(1 + e^\rho) = y` for :math:`y > 0`, as
    :math:`y + \log(1 - e^{-y})` (no overflow for large :math:`y`)."""
    return y + math.log(-math.expm1(-y))


class ContinuousModel(torch.nn.Module):
    """Base class of the continuous-time models: solve :math:`\\dot s = F(s, t)` on :math:`[0, T]`.

    Parameters
    ----------
    field : nn.Module
        The network of the model's equations. Called with the time as its last argument when its
        ``forward`` has one more required positional parameter than the model's state arguments (see
        :func:`mode.ode.takes_time`); its first output of each solve is checked by
        :func:`mode.ode.check_force`.
    T : float
        Horizon, ``> 0``.
    method, rtol, atol, options
        torchdiffeq's solver, tolerances (``> 0``) and solver options (fixed-step methods need
        ``options={"step_size": h}``).
    backprop : {"autograd", "adjoint"}
        ``"autograd"`` differentiates through the solver's operations (``torchdiffeq.odeint``);
        ``"adjoint"`` solves the adjoint system backwards in time (``torchdiffeq.odeint_adjoint``, memory
        constant in the number of steps) with :meth:`dynamics_parameters` as its parameters.
    readout : nn.Module, optional
        Applied to :meth:`readout_input` of the final state to make the prediction.

    Raises
    ------
    TypeError, ValueError
        On an invalid argument, naming it and the values it accepts.
    """

    #: Children that act outside the right-hand side (on the initial or the final state): the adjoint
    #: method leaves their parameters to ordinary backpropagation.
    _outside_dynamics: tuple[str, ...] = ("readout",)
    #: Number of state tensors ``field`` is called with before the optional time.
    _field_inputs = 1

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
    ) -> None:
        super().__init__()
        self.field = check_module("field", field)
        self._field_takes_time = takes_time(field, self._field_inputs, name="field")
        self.T = check_positive("T", T)
        if not isinstance(method, str) or method not in TORCHDIFFEQ_METHODS:
            raise ValueError(
                f"method must be one of torchdiffeq's {sorted(TORCHDIFFEQ_METHODS)}, got {method!r}"
            )
        self.method = method
        self.rtol = check_positive("rtol", rtol)
        self.atol = check_positive("atol", atol)
        if options is not None and not isinstance(options, Mapping):
            raise TypeError(
                f"options must be a mapping of solver options or None, got {type(options).__name__}"
            )
        self.options = dict(options) if options is not None else None
        self.backprop = backprop
        self.readout = check_optional_module("readout", readout)
        self._field_checked = False
        self._last_solve: CountingDynamics | None = None
        self._nfe_forward = 0

    @property
    def backprop(self) -> str:
        """``"autograd"`` or ``"adjoint"``; it may be switched between solves, and is checked each time."""
        return self._backprop

    @backprop.setter
    def backprop(self, value: str) -> None:
        if value not in BACKPROP_MODES:
            raise ValueError(f"backprop must be one of {BACKPROP_MODES}, got {value!r}")
        self._backprop = value

    def extra_repr(self) -> str:
        solver = f"method={self.method!r}, rtol={self.rtol}, atol={self.atol}"
        return f"T={self.T}, {solver}, backprop={self.backprop!r}"

    def initial_state(self, x: torch.Tensor) -> State:
        """The state :math:`s(0)` the solve starts from, built from the input ``x``."""
        raise NotImplementedError

    def dynamics(self, t: torch.Tensor, state: State) -> State:
        """The right-hand side :math:`\\dot s = F(s, t)`."""
        raise NotImplementedError

    def position(self, state: State) -> torch.Tensor:
        """The part of the state that is the prediction when there is no readout (its first tensor)."""
        return state[0]

    def readout_input(self, state: State) -> torch.Tensor:
        """What ``readout`` is applied to: the position (ANODE overrides it with the augmented state)."""
        return self.position(state)

    def call_field(self, *inputs: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``field(*inputs, t)`` or ``field(*inputs)``; the first value of each solve is checked to have
        the shape, dtype and device of ``inputs[0]`` (broadcasting would hide a wrong shape)."""
        out = self.field(*inputs, t) if self._field_takes_time else self.field(*inputs)
        if not self._field_checked:
            check_force(out, inputs[0])
            self._field_checked = True
        return out

    def initial_velocity_from(
        self, module: torch.nn.Module | None, x: torch.Tensor, name: str
    ) -> torch.Tensor:
        """``module(x)``, checked to be a velocity of ``x``'s shape, dtype and device; zeros when
        ``module`` is ``None``."""
        v = None if module is None else module(x)
        return check_velocity(x, v, names=("x", f"{name}(x)"))

    def dynamics_parameters(self) -> tuple[torch.Tensor, ...]:
        """The parameters the right-hand side reads: the model's own (damping, ``eps``) and those of every
        child but the ones in ``_outside_dynamics``, without repeats."""
        children = (m.parameters() for name, m in self.named_children() if name not in self._outside_dynamics)
        seen: set[int] = set()
        params = []
        for p in itertools.chain(self.parameters(recurse=False), *children):
            if id(p) not in seen:
                seen.add(id(p))
                params.append(p)
        return tuple(params)

    @property
    def nfe_backward(self) -> int:
        """Evaluations of the right-hand side made by backward passes through the last forward solve
        (0 with ``backprop="autograd"``, which differentiates the stored evaluations instead)."""
        if self._last_solve is None:
            return 0
        return self._last_solve.nfe - self._nfe_forward

    def _solve(self, x: torch.Tensor, times: torch.Tensor) -> State:
        """The counted solve from :meth:`initial_state` of ``x`` at ``times[0]``: the states at ``times``,
        each with the time as its leading dimension."""
        check_position(x, "x")
        if x.dtype not in SOLVER_DTYPES:
            raise TypeError(f"x must be float32 or float64 for the torchdiffeq solve, got {x.dtype}")
        state0 = self.initial_state(x)
        counter = CountingDynamics(self.dynamics)
        self._field_checked = False
        kwargs: dict[str, Any] = dict(
            rtol=self.rtol, atol=self.atol, method=self.method, options=self.options
        )
        if self.backprop == "adjoint":
            path = torchdiffeq.odeint_adjoint(
                counter, state0, times, adjoint_params=self.dynamics_parameters(), **kwargs
            )
        else:
            path = torchdiffeq.odeint(counter, state0, times, **kwargs)
        self._last_solve, self._nfe_forward = counter, counter.nfe
        return tuple(path)

    def _predict(self, state: State) -> torch.Tensor:
        if self.readout is None:
            return self.position(state)
        return self.readout(self.readout_input(state))

    def forward(self, x: torch.Tensor) -> ModelOutput:
        """Solve from :meth:`initial_state` of ``x`` to time ``T`` and read the prediction out.

        Raises
        ------
        TypeError
            When ``x`` is not a float32 or float64 tensor (torchdiffeq's step-size control fails in half
            precision).
        """
        times = torch.tensor([0.0, self.T], dtype=x.dtype, device=x.device)
        final = tuple(s[-1] for s in self._solve(x, times))
        return ModelOutput(prediction=self._predict(final), state=final, nfe_forward=self._nfe_forward)

    def trajectory(self, x: torch.Tensor, times: torch.Tensor) -> ModelOutput:
        r"""Solve from :meth:`initial_state` of ``x``, placed at time ``times[0]``, and read the prediction
        out at every time of ``times``: :math:`s(t_0) = s_0(x)`, :math:`\dot s = F(s, t)`, output
        :math:`(\mathrm{prediction}(s(t_k)))_k`. The horizon ``T`` is not used.

        The adaptive solvers choose their steps by the tolerances alone and interpolate at ``times``, so the
        output grid does not change the steps taken; ``nfe_forward`` and :attr:`nfe_backward` count as in
        :meth:`forward` (the adjoint's backward pass also restarts at each output time).

        Parameters
        ----------
        x : Tensor
            The input, as for :meth:`forward`.
        times : Tensor
            Strictly increasing 1-D tensor of at least two times.

        Returns
        -------
        ModelOutput
            ``prediction`` and every tensor of ``state`` with a leading dimension of ``len(times)``; the
            first entry is the initial state's.

        Raises
        ------
        TypeError, ValueError
            When ``x`` is as :meth:`forward` refuses it, or ``times`` is not a strictly increasing 1-D
            floating-point tensor of at least two entries.
        """
        if not isinstance(times, torch.Tensor) or not times.is_floating_point():
            raise TypeError(f"times must be a floating-point tensor, got {type(times).__name__}")
        if times.ndim != 1 or len(times) < 2 or not bool((times.diff() > 0).all()):
            raise ValueError("times must be a strictly increasing 1-D tensor of at least two times")
        path = self._solve(x, times.to(dtype=x.dtype, device=x.device))
        return ModelOutput(prediction=self._predict(path), state=path, nfe_forward=self._nfe_forward)
