"""Fixed-step integration of the second- (``eps > 0``) or first-order (``eps = 0``) model over a scheme."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from mode.ode import check_eps, check_positive, check_state, check_steps, checked_vector_field
from mode.schemes import Scheme, get_scheme


def integrate(
    f: Callable[..., Any],
    x0: torch.Tensor,
    v0: torch.Tensor | None = None,
    *,
    eps: float,
    T: float = 1.0,
    steps: int,
    scheme: str | Scheme = "momentum",
    return_trajectory: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Integrate :math:`\varepsilon \ddot x + \dot x = f(x, t)` on :math:`[0, T]` with ``steps`` equal steps.

    Parameters
    ----------
    f : callable
        Vector field ``f(x)`` or ``f(x, t)`` on batched tensors (a function or an ``nn.Module``), returning
        a tensor of the shape, dtype and device of ``x`` (checked at the first evaluation).
    x0 : Tensor
        Initial position, any shape.
    v0 : Tensor, optional
        Initial velocity :math:`\dot x(0)` (zeros by default). Must be ``None`` when ``eps = 0``.
    eps : float
        :math:`\varepsilon \ge 0`. ``eps = 0`` integrates the first-order ODE :math:`\dot x = f(x, t)`;
        the momentum schemes then reduce to the ResNet rule :math:`x \leftarrow x + h f(x)`.
    T : float
        Horizon; the step is :math:`h = T / \text{steps}`.
    steps : int
        Number of steps :math:`L \ge 1` (the depth).
    scheme : str or Scheme
        A key of :data:`mode.SCHEMES`.
    return_trajectory : bool
        Return the states at every step, stacked along a new leading dimension of size ``steps + 1``.

    Returns
    -------
    (x, v) : tuple of Tensor
        The state at :math:`T` (or the trajectories). For ``eps = 0``, ``v`` is the mean velocity of the
        last step.

    Raises
    ------
    TypeError, ValueError
        On invalid arguments, or when the first value of ``f`` is not a tensor of the shape, dtype and
        device of ``x`` (see :func:`mode.ode.check_force`).
    """
    field = checked_vector_field(f)
    eps = check_eps(eps)
    T = check_positive("T", T)
    steps = check_steps(steps)
    rule = get_scheme(scheme)
    v = check_state(x0, v0, eps)
    h = T / steps
    x = x0
    if v is None:
        v = torch.zeros_like(x0)
    xs, vs = [x], [v]
    for n in range(steps):
        t = torch.as_tensor(n * h, dtype=x0.dtype, device=x0.device)
        x, v = rule.step(field, x, v, t, h, eps)
        if return_trajectory:
            xs.append(x)
            vs.append(v)
    if return_trajectory:
        return torch.stack(xs), torch.stack(vs)
    return x, v
