"""A higher-precision reference for the precision tests of ``MomentumNet`` (``test_precision.py``).

float32 runs are judged against float64 autograd on the same weights. float64 runs need something more
precise than float64, so this module computes the same net, forward and backward, in numpy
``np.longdouble``: the x87 extended format on x86-64, whose 64-bit significand carries 11 bits more than
float64's, so its rounding errors are about 2000 times smaller than those of the float64 runs it judges.
The backward pass is the adjoint recursion of the momentum step written out by hand, not a replay of
torch's autograd, so the reference shares no code path with the modes it checks.

Where ``np.longdouble`` is just float64 (see :data:`EXTENDED`), the same code runs on exact rationals
(``fractions.Fraction``), which is affordable for small nets of linear layers only: ``tanh`` of a rational
is not rational. The exact mode also measures the longdouble reference's own error.

Weights and inputs enter exactly: float32 and float64 values are representable in ``np.longdouble`` and
as fractions, and so is the momentum the net multiplies by, the dyadic rational ``gamma = n / 2**k`` with
``n < 2**53``.

The supported blocks are ``nn.Linear`` (with or without bias), ``nn.Tanh`` and ``nn.Sequential`` of
those: enough for the homogeneous and ``tanh`` families of the precision tests, and small enough to
check by eye.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import NamedTuple

import numpy as np
import torch

#: Whether ``np.longdouble`` has at least 63 explicit mantissa bits (x87 extended or better). Where it is
#: plain float64 (MSVC, some ARM builds) it is no reference for float64 runs, and the tests using it skip.
EXTENDED = np.finfo(np.longdouble).nmant >= 63


class Pass(NamedTuple):
    """Outputs and gradients of one forward and backward pass through a ``MomentumNet``.

    Attributes
    ----------
    output, velocity : Tensor or ndarray
        :math:`x_L` and :math:`v_L`.
    grad_x : Tensor or ndarray
        Gradient of :func:`loss` with respect to the input :math:`x_0`.
    grad_params : list of Tensor or ndarray
        Gradients with respect to the block parameters, in the order of :func:`parameters`.
    """

    output: object
    velocity: object
    grad_x: object
    grad_params: list


def loss(x, v):
    r"""The loss every precision test differentiates: :math:`\tfrac12 (\|x_L\|^2 + \|v_L\|^2)`.

    Its gradient with respect to :math:`(x_L, v_L)` is :math:`(x_L, v_L)` itself, so the input gradient
    scales with the input and depends on the forward pass: a forward that flushes small activations to
    zero also zeroes the gradients, where a loss linear in the output would hide it in ``grad_x``.

    Parameters
    ----------
    x, v : Tensor or ndarray
        The net's outputs :math:`x_L, v_L`.

    Returns
    -------
    Tensor or ndarray
        The scalar loss.
    """
    return 0.5 * ((x * x).sum() + (v * v).sum())


def parameters(blocks) -> list:
    """The trainable parameters of ``blocks``, each once, in order of first appearance.

    This is the order of ``MomentumNet(blocks).parameters()``, shared blocks included.

    Parameters
    ----------
    blocks : sequence of nn.Module
        The residual blocks.

    Returns
    -------
    list of nn.Parameter
    """
    return [p for p in dict.fromkeys(p for block in blocks for p in block.parameters()) if p.requires_grad]


def to_longdouble(a) -> np.ndarray:
    """``a`` (a tensor, an array or a scalar) as an ``np.longdouble`` array, without rounding.

    float32 and float64 values pass through float64, which holds both exactly.

    Parameters
    ----------
    a : Tensor, ndarray or float

    Returns
    -------
    ndarray of np.longdouble
    """
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().to(torch.float64).numpy()
    if isinstance(a, np.ndarray) and a.dtype == np.longdouble:
        return a
    return np.asarray(a, dtype=np.float64).astype(np.longdouble)


def to_fractions(a) -> np.ndarray:
    """``a`` (a tensor or an array of floats) as an object array of exact ``Fraction`` values.

    Parameters
    ----------
    a : Tensor or ndarray

    Returns
    -------
    ndarray of object
    """
    if isinstance(a, np.ndarray) and a.dtype == object:
        return a
    values = to_longdouble(a)
    # longdouble -> Fraction goes through as_integer_ratio, exact for every finite value.
    return np.array([Fraction(*v.as_integer_ratio()) for v in values.ravel()], dtype=object).reshape(
        values.shape
    )


def _layers(block) -> list:
    """The ``nn.Linear`` and ``nn.Tanh`` layers that make up ``block``, in call order."""
    layers = list(block) if isinstance(block, torch.nn.Sequential) else [block]
    for layer in layers:
        if not isinstance(layer, (torch.nn.Linear, torch.nn.Tanh)):
            raise TypeError(
                f"the longdouble reference knows Linear and Tanh layers, not {type(layer).__name__}"
            )
    return layers


def _block_forward(layers, x, weights):
    """Run one block on ``x``; return its output and what its backward needs (each layer's saved value)."""
    saved = []
    for layer in layers:
        if isinstance(layer, torch.nn.Linear):
            saved.append(x)  # the input, for the weight gradient
            x = x @ weights[layer.weight].T
            if layer.bias is not None:
                x = x + weights[layer.bias]
        else:
            if x.dtype == object:
                raise TypeError("the exact (rational) reference has no tanh: use the longdouble one")
            x = np.tanh(x)
            saved.append(x)  # the output: tanh' = 1 - tanh**2
    return x, saved


def _block_backward(layers, saved, grad_out, weights, grads):
    """Vector-Jacobian product of one block: accumulate parameter gradients, return the input gradient."""
    g = grad_out
    for layer, value in zip(reversed(layers), reversed(saved), strict=True):
        if isinstance(layer, torch.nn.Linear):
            if layer.weight.requires_grad:
                grads[layer.weight] = grads[layer.weight] + g.T @ value
            if layer.bias is not None and layer.bias.requires_grad:
                grads[layer.bias] = grads[layer.bias] + g.sum(axis=0)
            g = g @ weights[layer.weight]
        else:
            g = g * (1 - value * value)
    return g


def reference_pass(blocks, x0, n: int, k: int, step: float, exact: bool = False) -> Pass:
    r"""Forward and backward pass of ``MomentumNet(blocks)`` in ``np.longdouble``, adjoint by hand.

    Forward, from :math:`v_0 = 0`:

    .. math:: v_{i+1} = \gamma v_i + (1 - \gamma) f_i(x_i), \qquad x_{i+1} = x_i + h v_{i+1}.

    Backward, from :math:`(\bar x, \bar v) = (x_L, v_L)`, the gradient of :func:`loss`:

    .. math::
       \tilde v = \bar v + h \bar x, \qquad
       \bar x \leftarrow \bar x + (1 - \gamma) J_{f_i}(x_i)^\top \tilde v, \qquad
       \bar v \leftarrow \gamma \tilde v,

    and each block's parameters collect :math:`(1 - \gamma) (\partial_\theta f_i)^\top \tilde v`.

    Parameters
    ----------
    blocks : sequence of nn.Module
        ``nn.Linear``, ``nn.Tanh`` or ``nn.Sequential`` of those, acting on the last dimension of a
        ``(batch, features)`` input. A block may appear several times (shared weights).
    x0 : Tensor
        The input, of shape ``(batch, features)``.
    n, k : int
        The momentum :math:`\gamma = n / 2^k`, as ``net.n, net.k``.
    step : float
        :math:`h`.
    exact : bool
        Compute in exact rationals instead (object arrays of ``Fraction``): linear layers only, and slow
        (every layer adds the bits of a weight and of gamma to the denominators), so meant for a few
        layers and features.

    Returns
    -------
    Pass
        ``np.longdouble`` arrays, or object arrays of ``Fraction`` where ``exact``.
    """
    if x0.dim() != 2:
        raise ValueError(f"the reference takes a (batch, features) input, got shape {tuple(x0.shape)}")
    convert = to_fractions if exact else to_longdouble
    if exact:
        gamma, one_minus_gamma, h = Fraction(n, 2**k), Fraction(2**k - n, 2**k), Fraction(step)
    else:
        # Scaling by 2**-k is exact, and n, 2**k - n < 2**53 fit any significand of 53 bits or more.
        gamma = np.ldexp(np.longdouble(n), -k)
        one_minus_gamma = np.ldexp(np.longdouble(2**k - n), -k)
        h = np.longdouble(step)
    params = parameters(blocks)
    weights = {p: convert(p) for p in params}
    for block in blocks:  # frozen parameters are constants, but still enter the forward
        for p in block.parameters():
            if p not in weights:
                weights[p] = convert(p)
    layers = [_layers(block) for block in blocks]

    x = convert(x0)
    v = np.zeros_like(x)
    tape = []
    for block_layers in layers:
        f, saved = _block_forward(block_layers, x, weights)
        tape.append(saved)
        v = gamma * v + one_minus_gamma * f
        x = x + h * v

    grads = {p: np.zeros_like(weights[p]) for p in params}
    bar_x, bar_v = x, v
    for block_layers, saved in zip(reversed(layers), reversed(tape), strict=True):
        tilde_v = bar_v + h * bar_x
        bar_x = bar_x + _block_backward(block_layers, saved, one_minus_gamma * tilde_v, weights, grads)
        bar_v = gamma * tilde_v
    return Pass(x, v, bar_x, [grads[p] for p in params])


def _flat(a, exact: bool) -> np.ndarray:
    """A tensor, an array or a list of them as one flat vector, of fractions where ``exact``."""
    convert = to_fractions if exact else to_longdouble
    if isinstance(a, (list, tuple)):
        return np.concatenate([_flat(t, exact) for t in a]) if a else np.zeros(0, dtype=np.longdouble)
    return convert(a).ravel()


def _is_exact(a) -> bool:
    if isinstance(a, (list, tuple)):
        return any(_is_exact(t) for t in a)
    return isinstance(a, np.ndarray) and a.dtype == object


def relative_error(got, want) -> float:
    r""":math:`\|g - w\| / \|w\|`, in ``np.longdouble`` (exactly where either side holds fractions).

    The difference is formed before any rounding to float64, so the measure adds no error of the size of
    the float64 errors it measures.

    Parameters
    ----------
    got, want : Tensor, ndarray, or list of them
        A list is compared as the concatenation of its entries (so all weight gradients of a net count as
        one vector, and no single small layer decides the result).

    Returns
    -------
    float
        ``inf`` where ``want`` is zero and ``got`` is not, ``0.0`` where both are zero.
    """
    exact = _is_exact(got) or _is_exact(want)
    g, w = _flat(got, exact), _flat(want, exact)
    if g.shape != w.shape:
        raise ValueError(f"shapes differ: {g.shape} against {w.shape}")
    num, den = ((g - w) * (g - w)).sum(), (w * w).sum()
    if den == 0:
        return 0.0 if num == 0 else float("inf")
    return math.sqrt(float(num / den)) if exact else float(np.sqrt(num / den))


def relative_errors(got: Pass, want: Pass) -> dict:
    """:func:`relative_error` of each field of ``got`` against ``want``.

    Parameters
    ----------
    got, want : Pass

    Returns
    -------
    dict
        ``{"output", "velocity", "grad_x", "grad_params"}`` to relative errors, the parameter gradients
        taken together.
    """
    return {field: relative_error(g, w) for field, g, w in zip(Pass._fields, got, want, strict=True)}


def zero_tensors(result: Pass) -> list:
    """Names of the entries of ``result`` that are zero everywhere or not finite.

    An exactly zero output or gradient is how an absolute fixed-point grid fails on small inputs, and it
    must not pass as "close to a tiny reference".

    Parameters
    ----------
    result : Pass

    Returns
    -------
    list of str
        Empty when every tensor is finite and has a nonzero entry.
    """
    named = [("output", result.output), ("velocity", result.velocity), ("grad_x", result.grad_x)]
    named += [(f"grad_params[{i}]", g) for i, g in enumerate(result.grad_params)]
    bad = []
    for name, t in named:
        a = to_longdouble(t)
        if not np.isfinite(a).all() or not (a != 0).any():
            bad.append(name)
    return bad
