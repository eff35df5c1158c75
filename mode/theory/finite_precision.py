r"""Finite precision: why a float inverse fails with depth and what exact reversal costs
(``theory/finite_precision.md``).

Undoing :math:`L` momentum steps in floating point divides by :math:`\gamma` at every step, so rounding
errors grow like :math:`u\,\gamma^{-L}` (FP-1), :math:`u\,e^{T/\varepsilon}` in the ODE regime (FP-2).
Exact reversal instead keeps the bits that each multiplication by :math:`\gamma = n/2^k` destroys: at
least :math:`\log_2(2^k/n)` per multiply (FP-3), and MomentumNet's bit stack stays within one word, one
chunk and a small slack of that (FP-4, :func:`stack_bounds`).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from mode.exact.bit_stack import chunk_width
from mode.nn import MomentumNet
from mode.schemes import SCHEMES
from mode.theory.fields import TanhField, frozen
from mode.theory.registry import Verdict, claim

__all__ = ["bits_destroyed", "float_reversal_error", "growth_rate_band", "information_bounds", "stack_bounds"]

DOC = "theory/finite_precision.md"
# The checks fit error growth over depths whose amplification gamma^-L spans these ranges: from where the
# geometric sum of injected errors is dominated by its last term to where the error is still far below
# the state (so that the linearization holds).
_AMPLIFICATION = {torch.float32: (1e2, 1e4), torch.float64: (1e2, 1e9)}
_LIPSCHITZ = 0.01
# Relative slack for the fitted slopes: the prefactor of u * gamma^-L (the size of the states where the
# largest errors are injected) varies slowly with L and biases a finite fit.
_FIT_SLACK = 0.05


def _autonomous(block):
    # MomentumNet holds plain callables in a module whose forward takes *args, which as_vector_field would
    # read as taking a time argument; the blocks of a MomentumNet take x alone.
    return lambda x: block(x)


def float_reversal_error(net: MomentumNet, x0: torch.Tensor) -> float:
    r"""RMS error of undoing ``net`` in floating point with the closed-form momentum inverse.

    Runs :math:`(x_L, v_L) = \text{net}(x_0)` (with :math:`v_0 = 0`), then for :math:`i = L-1, \ldots, 0`

    .. math:: x_i = x_{i+1} - h v_{i+1}, \qquad v_i = (v_{i+1} - (1 - \gamma) f_i(x_i)) / \gamma

    in the dtype of ``x0`` (``mode.SCHEMES["momentum"].inverse``), and returns the root mean square of
    :math:`(\hat x_0 - x_0, \hat v_0)` over all coordinates.

    Parameters
    ----------
    net : MomentumNet
        A network with blocks taking ``x`` only, run with ``backprop="autograd"`` (float arithmetic).
    x0 : Tensor
        Input batch.

    Returns
    -------
    float
    """
    momentum = SCHEMES["momentum"]
    with torch.no_grad():
        x, v = net(x0, return_velocity=True)
        for block in reversed(net.blocks):
            x, v = momentum.inverse(_autonomous(block), x, v, 0.0, net.step, net.eps)
    return float(torch.cat([x - x0, v]).to(torch.float64).pow(2).mean().sqrt())


def growth_rate_band(gamma: float, h: float, lipschitz: float) -> tuple[float, float]:
    r"""Bounds on the per-step growth rate of reversal errors for blocks of Lipschitz constant :math:`\ell`.

    .. math:: \log\frac1\gamma + \log(1 - 2h\ell) \;\le\; \text{rate}
              \;\le\; \log\frac1\gamma + \log(1 + 2h\ell),

    valid when :math:`h\ell \le (1 - \gamma)/(2(1 + \gamma))` (FP-1); the lower bound is for errors in
    the velocity, which is where the division by :math:`\gamma` puts its rounding.

    Raises
    ------
    ValueError
        Outside the range of validity.
    """
    if not (0 < gamma < 1 and h * lipschitz <= (1 - gamma) / (2 * (1 + gamma))):
        raise ValueError(
            f"need 0 < gamma < 1 and h * lipschitz <= (1 - gamma) / (2 (1 + gamma)), got {gamma}"
        )
    rate = -math.log(gamma)
    return rate + math.log(1 - 2 * h * lipschitz), rate + math.log(1 + 2 * h * lipschitz)


def _tied_net(depth: int, dtype, **kwargs) -> tuple[MomentumNet, torch.Tensor]:
    """A weight-tied MomentumNet over one autonomous field of Lipschitz constant _LIPSCHITZ, and an input."""
    field = frozen(TanhField(8, seed=0, lipschitz=_LIPSCHITZ))
    net = MomentumNet([field] * depth, backprop="autograd", **kwargs)
    return net, torch.randn(64, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(dtype)


def _fitted_rate(dtype, per_step: float, **kwargs) -> float:
    """Slope of log(error) against depth over the window of _AMPLIFICATION for a per-step rate."""
    low, high = (math.log(a) / per_step for a in _AMPLIFICATION[dtype])
    depths = np.unique(np.round(np.linspace(low, high, 6)).astype(int))
    errors = [float_reversal_error(*_tied_net(int(L), dtype, **kwargs)) for L in depths]
    return float(np.polyfit(depths, np.log(errors), 1)[0])


@claim(
    "FP-1",
    "Undoing L momentum steps in floating point amplifies rounding errors like u gamma^-L: the per-step "
    "growth rate lies within log(1 +- 2 h l) of log(1/gamma) for blocks of Lipschitz constant l.",
    DOC,
)
def check_discrete_growth() -> Verdict:
    """Fitted growth rate of the float32 and float64 reversal error of MomentumNet, per gamma (h = 1)."""
    worst, inside = 0.0, True
    for dtype in _AMPLIFICATION:
        for gamma in (0.3, 0.5, 0.7, 0.9):
            rate = _fitted_rate(dtype, -math.log(gamma), gamma=gamma)
            low, high = growth_rate_band(gamma, 1.0, _LIPSCHITZ)
            worst = max(worst, abs(rate / -math.log(gamma) - 1))
            inside &= low * (1 - _FIT_SLACK) <= rate <= high * (1 + _FIT_SLACK)
    return Verdict(
        worst,
        f"fitted rate within the band of growth_rate_band, widened by {_FIT_SLACK:.0%} (fit of a slowly "
        "varying prefactor); measured: max |rate / log(1/gamma) - 1|",
        inside,
    )


@claim(
    "FP-2",
    "In the ODE regime gamma = 1 - h/eps the float reversal error grows like u exp(kappa T) with "
    "kappa = -log(1 - h/eps)/h in [1/eps, 1/(eps - h)]: like u e^{T/eps} as h -> 0.",
    DOC,
)
def check_ode_growth() -> Verdict:
    """Fitted growth rate in T = L h at eps = 0.25, for h/eps = 1/10 (float32, float64) and 1/40 (float64)."""
    eps, worst, inside = 0.25, 0.0, True
    # No float32 run at h/eps = 1/40: its error u (eps/h) gamma^-L leaves too few decades of clean growth.
    for dtype, ratio in ((torch.float32, 0.1), (torch.float64, 0.1), (torch.float64, 0.025)):
        h = eps * ratio
        kappa = -math.log(1 - ratio) / h
        measured = _fitted_rate(dtype, kappa * h, eps=eps, step=h) / h
        low, high = (bound / h for bound in growth_rate_band(1 - ratio, h, _LIPSCHITZ))
        worst = max(worst, abs(measured / kappa - 1))
        inside &= low * (1 - _FIT_SLACK) <= measured <= high * (1 + _FIT_SLACK)
        inside &= 1 / eps <= kappa <= 1 / (eps - h)
    return Verdict(
        worst,
        f"fitted kappa within the band of growth_rate_band / h, widened by {_FIT_SLACK:.0%}; "
        "measured: max |kappa_fit / kappa - 1|",
        inside,
    )


def bits_destroyed(n: int, k: int, steps: int, window: int = 1 << 18, seed: int = 0) -> float:
    r"""Information destroyed by ``steps`` rounded multiplications by :math:`n/2^k`, by enumeration.

    For :math:`v` uniform on ``window`` consecutive integers and
    :math:`y = T_L \circ \cdots \circ T_1(v)`, :math:`T_j(u) = \lfloor u n / 2^k \rfloor + s_j` with
    seeded integer shifts :math:`s_j` (the forces added between multiplies), returns

    .. math:: H(v \mid y) = \sum_y \frac{c_y}{N} \log_2 c_y \quad\text{bits},

    :math:`c_y` the number of :math:`v` mapped to :math:`y`.
    """
    rng = np.random.default_rng(seed)
    u = np.arange(window, dtype=np.int64) + int(rng.integers(-(1 << 20), 1 << 20))
    for _ in range(steps):
        u = (u * n) // (1 << k) + int(rng.integers(-(1 << 20), 1 << 20))
    _, counts = np.unique(u, return_counts=True)
    return float(np.sum(counts * np.log2(counts)) / window)


def information_bounds(n: int, k: int, steps: int, window: int) -> tuple[float, float]:
    r"""The bounds of FP-3 on :func:`bits_destroyed`, with :math:`r = 2^k/n`:

    .. math:: \log_2 N - \log_2\!\Big(N r^{-L} + \frac{2r}{r - 1}\Big) \;<\; H(v \mid y)
              \;\le\; L \log_2\lceil r \rceil .
    """
    r = (1 << k) / n
    return math.log2(window) - math.log2(window * r**-steps + 2 * r / (r - 1)), steps * math.log2(
        math.ceil(r)
    )


@claim(
    "FP-3",
    "Each rounded multiplication by gamma = n/2^k destroys at least log2(2^k/n) bits: L of them, with any "
    "integer shifts between, leave H(v | y) >= L log2(2^k/n) - o(1) bits to be stored for exact reversal.",
    DOC,
)
def check_information_loss() -> Verdict:
    """Exact enumeration over 2^18 consecutive integers against the bounds of information_bounds."""
    window, worst, inside = 1 << 18, math.inf, True
    for n, k in ((1, 1), (3, 2), (5, 3), (13, 4), (29, 5), (115, 7)):
        per_multiply = math.log2((1 << k) / n)
        for steps in (1, 3, max(1, int(8 / per_multiply))):
            lost = bits_destroyed(n, k, steps, window)
            low, high = information_bounds(n, k, steps, window)
            inside &= low < lost <= high + 1e-12
            worst = min(worst, lost / (steps * per_multiply))
    return Verdict(
        worst,
        "bounds of information_bounds hold in every case; measured: min H(v|y) / (L log2(2^k/n))",
        inside,
    )


def stack_bounds(depth: int, n: int, k: int, chunks: int) -> tuple[float, float]:
    r"""Bits per coordinate that a :class:`~mode.exact.BitStack` holds after ``depth`` multiplies by
    :math:`n/2^k` with ``chunks`` spilled chunks (FP-4).

    With :math:`r = 2^k/n`, :math:`w` the chunk width, :math:`m = 63 - k - w` and
    :math:`\delta = \log_2(1 + 2^{-m})`:

    .. math:: L\log_2 r + \log_2 n + 1 \;\le\; \text{bits} \;<\;
              64 + w + (L - 1)\log_2 r + (L + C - 3)\,\delta \quad (C \ge 1),

    and bits :math:`= 64` when :math:`C = 0`.

    Returns
    -------
    (lower, upper) : tuple of float
        ``lower <= bits`` and ``bits < upper`` (``upper`` is ``64.5`` when ``chunks == 0``).
    """
    r, width = (1 << k) / n, chunk_width(k)
    lower = depth * math.log2(r) + math.log2(n) + 1
    if chunks == 0:
        return lower, 64.5
    slack = math.log2(1 + 2.0 ** -(63 - k - width))
    return lower, 64 + width + (depth - 1) * math.log2(r) + (depth + chunks - 3) * slack


@claim(
    "FP-4",
    "MomentumNet's exact reversal stores, per coordinate, between L log2(d/n) + log2(n) + 1 and "
    "64 + w + (L-1) log2(d/n) + (L+C-3) log2(1 + 2^-m) bits (gamma = n/d, d = 2^k, w the chunk width, "
    "m = 63-k-w, C chunks): within one word, one chunk and that slack of the minimum of FP-3.",
    DOC,
)
def check_stack_size() -> Verdict:
    """bits_per_coordinate() of the stack of real reversible forwards against stack_bounds."""
    field = frozen(TanhField(4, seed=0, lipschitz=0.5))
    x0 = torch.randn(2, 4, generator=torch.Generator().manual_seed(0))
    excess, inside = -math.inf, True
    cases = [{"gamma": g} for g in (0.1, 0.5, 0.9, 0.99, 1 - 2**-20)]
    # 53 and 55 bits of gamma leave m = 2 and m = 0 bits of headroom: the regime of the largest slack.
    cases += [{"gamma": 0.9, "gamma_bits": 55}, {"gamma": math.nextafter(0.2, 1), "gamma_bits": 55}]
    for kwargs in cases:
        # At gamma = 1/2 and L = 63 the lower bound is attained: 63 + log2(1) + 1 = 64 bits, no chunk.
        for depth in (1, 7, 63, 200):
            net = MomentumNet([field] * depth, backprop="reversible", **kwargs)
            out = net(x0)  # noqa: F841  (the record, and its stack, live as long as the output)
            bits = net.bit_stack.bits_per_coordinate()
            chunks, remainder = divmod(bits - 64, chunk_width(net.k))
            low, high = stack_bounds(depth, net.n, net.k, chunks)
            inside &= remainder == 0 and low <= bits < high
            excess = max(excess, bits - 64 - depth * math.log2(2**net.k / net.n))
    return Verdict(
        float(excess),
        "lower <= bits < upper of stack_bounds in every case; measured: max bits - 64 - L log2(d/n)",
        inside,
    )
