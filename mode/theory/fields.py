r"""Seeded smooth vector fields on which the machine checks evaluate their claims.

A check of a statement "for every :math:`f`" is only as good as the fields it tries, so these are generic:
dense random weights, a nonlinearity, a time dependence, and no symmetry unless one is asked for.
"""

from __future__ import annotations

import math

import torch


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class TanhField(torch.nn.Module):
    r"""A generic non-gradient field :math:`f(x, t) = s \tanh(Wx + b + \cos(t)\,c)`.

    Its Jacobian :math:`D_xf = s\,\mathrm{diag}(\tanh')W` is not symmetric, so :math:`f` is not a
    gradient field, and :math:`\|D_xf\|_2 \le s\|W\|_2`.

    Parameters
    ----------
    d : int
        Dimension.
    seed : int
        Seed of the weights.
    scale : float
        :math:`s`.
    lipschitz : float, optional
        If given, :math:`W` is rescaled to spectral norm ``lipschitz / scale``, so that
        :math:`\sup_x \|D_xf\|_2 \le` ``lipschitz``.
    """

    def __init__(self, d: int, seed: int, scale: float = 1.0, lipschitz: float | None = None):
        super().__init__()
        g = _generator(seed)
        W = torch.randn(d, d, generator=g, dtype=torch.float64) / math.sqrt(d)
        if lipschitz is not None:
            W = W * (lipschitz / scale / torch.linalg.matrix_norm(W, ord=2))
        self.register_buffer("W", W)
        self.register_buffer("b", torch.randn(d, generator=g, dtype=torch.float64))
        self.register_buffer("c", torch.randn(d, generator=g, dtype=torch.float64))
        self.scale = scale

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        W, b, c = (p.to(x.dtype) for p in (self.W, self.b, self.c))
        return self.scale * torch.tanh(x @ W.T + b + torch.cos(t) * c)


class GradientField(torch.nn.Module):
    r"""A generic gradient field :math:`f = -\nabla_x V(\cdot, t)`, with its potential.

    .. math:: V(x, t) = \sum_j a_j \log\cosh(w_j^\top x + b_j + t\,c_j) + \tfrac12 x^\top S x,
              \qquad f(x, t) = -W^\top\big(a \odot \tanh(Wx + b + tc)\big) - Sx,

    with :math:`S` symmetric, so that :math:`D_xf = -W^\top\mathrm{diag}(a \odot \tanh')W - S` is symmetric.

    Parameters
    ----------
    d : int
        Dimension.
    seed : int
        Seed of the weights.
    """

    def __init__(self, d: int, seed: int):
        super().__init__()
        g = _generator(seed)
        S = torch.randn(d, d, generator=g, dtype=torch.float64) / math.sqrt(d)
        self.register_buffer("W", torch.randn(2 * d, d, generator=g, dtype=torch.float64) / math.sqrt(d))
        self.register_buffer("a", torch.rand(2 * d, generator=g, dtype=torch.float64) + 0.5)
        self.register_buffer("b", torch.randn(2 * d, generator=g, dtype=torch.float64))
        self.register_buffer("c", torch.randn(2 * d, generator=g, dtype=torch.float64))
        self.register_buffer("S", (S + S.T) / 2)

    def potential(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """:math:`V(x, t)`, summed over the last dimension."""
        z = x @ self.W.T + self.b + t * self.c
        return (self.a * torch.log(torch.cosh(z))).sum(-1) + 0.5 * ((x @ self.S) * x).sum(-1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        z = x @ self.W.T + self.b + t * self.c
        return -(self.a * torch.tanh(z)) @ self.W - x @ self.S


def frozen(field, t: float = 0.0):
    """The autonomous field ``x -> field(x, t)`` as a one-argument callable.

    One positional parameter and no default: :func:`mode.ode.as_vector_field` then calls it as ``f(x)``.
    """
    time = torch.tensor(t, dtype=torch.float64)
    return lambda x: field(x, time)
