"""Independent reference solutions (scipy) used by several test modules."""

import numpy as np
import torch
from scipy.integrate import solve_ivp

W = np.array([[0.8, -0.6], [0.5, 0.9]])


def force_np(x, t):
    """A smooth non-autonomous, nonlinear force on R^2 (numpy)."""
    return np.tanh(W @ x) - 0.5 * x + 0.3 * np.cos(2 * t)


def force_torch(x, t):
    """The same force on a batch of row vectors (torch)."""
    return torch.tanh(x @ torch.as_tensor(W.T, dtype=x.dtype)) - 0.5 * x + 0.3 * torch.cos(2 * t)


def reference_solution(x0, v0, eps, T, force=force_np):
    """``(x(T), v(T))`` of eps x'' + x' = f(x, t) by DOP853 at rtol 1e-12 (eps = 0: x' = f, v = None)."""
    if eps == 0:
        sol = solve_ivp(lambda t, x: force(x, t), (0, T), x0, method="DOP853", rtol=1e-12, atol=1e-14)
        return sol.y[:, -1], None
    d = len(x0)

    def rhs(t, y):
        x, v = y[:d], y[d:]
        return np.concatenate([v, (force(x, t) - v) / eps])

    sol = solve_ivp(rhs, (0, T), np.concatenate([x0, v0]), method="DOP853", rtol=1e-12, atol=1e-14)
    return sol.y[:d, -1], sol.y[d:, -1]


def fitted_order(steps, errors):
    """Slope of log(error) against log(h) = -log(steps), least squares."""
    return np.polyfit(-np.log(np.asarray(steps, float)), np.log(np.asarray(errors, float)), 1)[0]
