r"""The models and their parameters, validated once, at the boundary.

Second-order model (the continuous Momentum ResNet)

.. math::  \varepsilon \ddot x + \dot x = f(x, t)
   \quad\Longleftrightarrow\quad \dot x = v,\;\; \varepsilon \dot v = f(x, t) - v,

also written :math:`\ddot x = g(x, t) - \dot x / \varepsilon` with :math:`g = f / \varepsilon`, and the
first-order model :math:`\dot x = f(x, t)` it tends to as :math:`\varepsilon \to 0`.

Discrete parameters: depth :math:`L`, horizon :math:`T`, step :math:`h = T / L` and the momentum
:math:`\gamma = 1 - h / \varepsilon`; the paper's
form is :math:`h = 1`, :math:`\varepsilon = 1 / (1 - \gamma)`.

Vector fields are torch callables (functions or ``nn.Module``) on batched tensors of any shape, called as
``f(x, t)`` when they have two required positional parameters and ``f(x)`` otherwise
(see :func:`as_vector_field`).
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable
from typing import Any, Protocol, cast

import torch

#: A time ``t``: a scalar tensor, or a float where a caller steps a scheme by hand.
Time = torch.Tensor | float
VectorField = Callable[[torch.Tensor, Time], torch.Tensor]


class _MarkedField(Protocol):
    """A vector field ``F(x, t)`` made by :func:`as_vector_field`, with the marks that make it idempotent."""

    _mode_vector_field: bool
    _mode_checked: bool
    wrapped: Any

    def __call__(self, x: torch.Tensor, t: Time, /) -> torch.Tensor: ...


def _real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def check_gamma(gamma: float) -> float:
    """Validate the momentum :math:`\\gamma \\in [0, 1)` and return it as a float."""
    gamma = _real("gamma", gamma)
    if not 0.0 <= gamma < 1.0:
        raise ValueError(f"gamma must lie in [0, 1), got {gamma}")
    return gamma


def check_eps(eps: float, *, allow_zero: bool = True) -> float:
    """Validate :math:`\\varepsilon \\ge 0` (``> 0`` when ``allow_zero`` is false)."""
    eps = _real("eps", eps)
    if eps < 0 or (eps == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"eps must be {bound}, got {eps}")
    return eps


def check_positive(name: str, value: float) -> float:
    """Validate a strictly positive finite real (a step ``h`` or a horizon ``T``)."""
    value = _real(name, value)
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def check_steps(steps: int, name: str = "steps") -> int:
    """Validate a number of steps (a depth) :math:`L \\ge 1`."""
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= 1, got {type(steps).__name__}")
    if steps < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {steps}")
    return int(steps)


def gamma_from_eps(eps: float, step: float) -> float:
    r"""Momentum of the semi-implicit Euler step: :math:`\gamma = 1 - h / \varepsilon`.

    ``eps = 0`` gives :math:`\gamma = 0` (the ResNet limit). Raises ``ValueError`` when
    :math:`h > \varepsilon`, which would make :math:`\gamma < 0`.
    """
    eps = check_eps(eps)
    step = check_positive("step", step)
    if eps == 0:
        return 0.0
    if step > eps:
        raise ValueError(
            f"step h = {step} exceeds eps = {eps}: gamma = 1 - h/eps = {1 - step / eps} is outside [0, 1); "
            "use more steps (h = T / L) or a larger eps"
        )
    return 1.0 - step / eps


def eps_from_gamma(gamma: float, step: float = 1.0) -> float:
    r""":math:`\varepsilon = h / (1 - \gamma)`; the paper's :math:`h = 1` gives :math:`1 / (1 - \gamma)`."""
    return check_positive("step", step) / (1.0 - check_gamma(gamma))


def step_from_depth(T: float, depth: int) -> float:
    """Step size :math:`h = T / L` of a depth-:math:`L` discretization of the horizon :math:`T`."""
    return check_positive("T", T) / check_steps(depth, "depth")


def depth_from_step(T: float, step: float) -> int:
    """Depth :math:`L = T / h`; raises ``ValueError`` unless :math:`T / h` is an integer."""
    T, step = check_positive("T", T), check_positive("step", step)
    depth = round(T / step)
    if depth < 1 or not math.isclose(depth * step, T, rel_tol=1e-12):
        raise ValueError(f"T / step must be a positive integer, got T = {T}, step = {step}")
    return depth


def takes_time(f: Callable[..., Any], n_inputs: int = 1, name: str = "f") -> bool:
    """Whether ``f`` is called with the time as its last argument.

    ``f`` takes ``n_inputs`` state arguments (1 for :math:`f(x)`, 2 for :math:`f(x, v)`) and optionally the
    time after them: it is called with the time when it has ``n_inputs + 1`` required positional
    parameters. A defaulted one (``lambda x, a=a: a * x``) is not the time, and a ``*args`` wrapper is
    called with the state alone.

    Raises
    ------
    TypeError
        When ``f`` can be called neither with the state nor with the state and the time.
    """
    target = f.forward if isinstance(f, torch.nn.Module) else f
    try:
        params = list(inspect.signature(target).parameters.values())
    except (TypeError, ValueError):  # builtins such as torch.tanh take the state alone
        return False
    required = [
        p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    variadic = any(p.kind == p.VAR_POSITIONAL for p in params)
    if len(required) == n_inputs + 1:
        return True
    if len(required) <= n_inputs and (variadic or len(positional) >= n_inputs):
        return False
    states = ", ".join(("x", "v")[:n_inputs]) if n_inputs <= 2 else f"{n_inputs} state tensors"
    raise TypeError(
        f"{name} must be called as {name}({states}) or {name}({states}, t), but it takes "
        f"{len(required)} required positional arguments"
    )


def as_vector_field(f: Callable[..., Any]) -> VectorField:
    """Return ``F(x, t)``: ``f(x, t)`` if ``f`` has two required positional parameters, else ``f(x)``
    (:func:`mode.ode.takes_time`).

    Idempotent. Raises ``TypeError`` when ``f`` is not callable, or can be called neither as ``f(x)`` nor
    as ``f(x, t)``.
    """
    if getattr(f, "_mode_vector_field", False):
        return cast(VectorField, f)
    if not callable(f):
        raise TypeError(f"f must be a callable vector field f(x) or f(x, t), got {type(f).__name__}")
    if takes_time(f):

        def field(x: torch.Tensor, t: Time) -> torch.Tensor:
            return f(x, t)

    else:

        def field(x: torch.Tensor, t: Time) -> torch.Tensor:
            return f(x)

    marked = cast(_MarkedField, field)
    marked._mode_vector_field = True
    marked.wrapped = f
    return field


def from_acceleration(g: Callable[..., Any], eps: float) -> VectorField:
    r"""The force :math:`f = \varepsilon g` of the form :math:`\ddot x = g(x, t) - \dot x / \varepsilon`."""
    eps = check_eps(eps, allow_zero=False)
    field = as_vector_field(g)
    return as_vector_field(lambda x, t: eps * field(x, t))


def phase_space(f: VectorField, eps: float) -> Callable[[Time, Any], Any]:
    r"""Right-hand side of the phase-space system :math:`(\dot x, \dot v) = (v, (f(x, t) - v)/\varepsilon)`.

    For ``eps = 0`` the first-order system :math:`\dot x = f(x, t)` on ``x`` alone.
    """
    if eps == 0:
        return lambda t, x: f(x, t)
    return lambda t, state: (state[1], (f(state[0], t) - state[1]) / eps)


def check_position(x: object, name: str = "x0") -> torch.Tensor:
    """Validate a position: a floating-point ``torch.Tensor``; returns it."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not torch.is_floating_point(x):
        raise TypeError(f"{name} must have a floating-point dtype, got {x.dtype}")
    return x


def check_velocity(x: torch.Tensor, v: object, *, names: tuple[str, str] = ("x0", "v0")) -> torch.Tensor:
    """Validate a velocity against its position ``x`` and return it (zeros, i.e. at rest, when ``None``).

    ``names`` are the names of ``x`` and ``v`` in the caller's signature, used in the messages.
    """
    x_name, v_name = names
    if v is None:
        return torch.zeros_like(x)
    if not isinstance(v, torch.Tensor):
        raise TypeError(f"{v_name} must be a torch.Tensor or None (zero velocity), got {type(v).__name__}")
    if v.shape != x.shape:
        raise ValueError(
            f"{v_name} must have the shape of {x_name} {tuple(x.shape)}, got {tuple(v.shape)}: pass a "
            f"velocity of {x_name}'s shape, or None for zero velocity"
        )
    if v.dtype != x.dtype or v.device != x.device:
        raise ValueError(
            f"{v_name} must match {x_name}'s dtype and device ({x.dtype}, {x.device}), got "
            f"({v.dtype}, {v.device})"
        )
    return v


def check_state(x0: object, v0: object, eps: float) -> torch.Tensor | None:
    """Validate the initial state and return ``v0`` (zeros when ``None``; ``None`` for ``eps = 0``)."""
    x = check_position(x0)
    if eps == 0:
        if v0 is not None:
            raise ValueError("v0 has no meaning for the first-order ODE (eps = 0): leave it None")
        return None
    return check_velocity(x, v0)


_CALL_ORDER = (
    "f is called as f(x, t) (position first, time second) or f(x); a torchdiffeq-style f(t, x) has its "
    "arguments swapped"
)


def check_force(fx: object, x: torch.Tensor) -> torch.Tensor:
    """Validate a value ``fx = f(x, t)`` of a vector field: a tensor of ``x``'s shape, dtype and device.

    Broadcasting would otherwise turn a wrong shape (a scalar, an extra batch dimension, the time of a
    swapped ``f(t, x)``) into a silently wrong state. Returns ``fx``.
    """
    if not isinstance(fx, torch.Tensor):
        raise TypeError(f"f must return a torch.Tensor, got {type(fx).__name__}; {_CALL_ORDER}")
    for what, got, expected in (
        ("shape", tuple(fx.shape), tuple(x.shape)),
        ("dtype", fx.dtype, x.dtype),
        ("device", fx.device, x.device),
    ):
        if got != expected:
            raise ValueError(
                f"f must return a tensor of the {what} of its input x, expected {expected}, got {got}; "
                f"{_CALL_ORDER}"
            )
    return fx


def checked_vector_field(f: Callable[..., Any]) -> VectorField:
    """:func:`as_vector_field` of ``f`` whose first evaluation is validated by :func:`check_force`.

    Only the first evaluation is checked: one check per solve catches a wrongly shaped ``f`` at no cost
    per step. Idempotent, so that a solver may wrap once and pass the field to per-step code that wraps
    too.
    """
    field = as_vector_field(f)
    if getattr(field, "_mode_checked", False):
        return field
    checked = False

    def first_checked(x: torch.Tensor, t: Time) -> torch.Tensor:
        nonlocal checked
        fx = field(x, t)
        if not checked:
            check_force(fx, x)
            checked = True
        return fx

    marked = cast(_MarkedField, first_checked)
    marked._mode_vector_field = True
    marked._mode_checked = True
    marked.wrapped = getattr(field, "wrapped", field)
    return first_checked
