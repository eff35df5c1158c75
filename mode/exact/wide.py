"""Double-width steps of the exact multiply, done on int64 tensors without overflow.

Multiplying by ``n / 2**k`` exactly needs ``r * n`` and ``e * 2**k`` for ``r, e, n < 2**k``, which for
``k > 31`` exceed int64. Both are assembled from pieces that each fit, using only elementwise torch
integer ops so they run unchanged on any device.
"""

from __future__ import annotations

import torch
from torch import Tensor

WORD_BITS = 63
"""Bits of a non-negative int64."""


def mul_add_split(r: Tensor, n: int, s: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Split ``t = r * n + s`` at bit ``k``: return ``(t >> k, t & (2**k - 1))``.

    Parameters
    ----------
    r, s : Tensor
        int64 with ``0 <= r < 2**k`` and ``0 <= s < n``.
    n : int
        Multiplier, ``0 < n < 2**k``.
    k : int
        Split position, ``1 <= k <= 55``; ``t < 2**(2k)`` may need up to 110 bits.

    Returns
    -------
    tuple of Tensor
        High part ``< n`` and low part ``< 2**k``, int64.
    """
    if 2 * k <= WORD_BITS - 1:
        # t < 2**(2k) <= 2**62 fits directly.
        t = torch.add(s, r, alpha=n)
        return t >> k, t & ((1 << k) - 1)
    if k <= 41:
        # Two pieces, n = n1 2**h + n0 with h = 62 - k: a = r n0 + s < 2**62 + 2**k and
        # c = r n1 + (a >> h) < 2**(3k - 62) + 2**(k + 1) both fit for k <= 41 (gamma up to about 0.995 at
        # the default accuracy), and t = c 2**h + (a mod 2**h) with h <= k. Half the ops of the limbs below.
        h = WORD_BITS - 1 - k
        a = torch.add(s, r, alpha=n & ((1 << h) - 1))
        c = torch.add(a >> h, r, alpha=n >> h)
        return c >> (k - h), ((c & ((1 << (k - h)) - 1)) << h) | (a & ((1 << h) - 1))
    # Half-width limbs: with h <= 28 every partial product stays below 2**56.
    h = (k + 1) // 2
    limb = (1 << h) - 1
    n0, n1 = n & limb, n >> h
    r0, r1 = r & limb, r >> h
    low = r0 * n0 + s
    mid = r1 * n0 + r0 * n1 + (low >> h)
    high = r1 * n1 + (mid >> h)
    # t = high * 2**(2h) + (mid & limb) * 2**h + (low & limb), and 2h is k or k + 1.
    excess = 2 * h - k
    mid = mid & limb
    split_high = (high << excess) | (mid >> (h - excess))
    split_low = ((mid & ((1 << (h - excess)) - 1)) << h) | (low & limb)
    return split_high, split_low


def divmod_shifted(e: Tensor, b: Tensor, n: int, k: int) -> tuple[Tensor, Tensor]:
    """Floor ``divmod(e * 2**k + b, n)`` by long division in digits of up to ``63 - k`` bits.

    Parameters
    ----------
    e, b : Tensor
        int64 with ``0 <= e < n`` and ``0 <= b < 2**k``.
    n : int
        Divisor, ``0 < n < 2**k``.
    k : int
        Shift, ``1 <= k <= 55``.

    Returns
    -------
    tuple of Tensor
        Quotient ``< 2**k`` and remainder ``< n``, int64.
    """
    # The running remainder is below n < 2**k, so appending a digit of 63 - k bits cannot overflow.
    digit = WORD_BITS - k
    top = max(k - digit, 0)
    # Leading digit: b >> top already has at most k - top bits.
    remainder = torch.add(b >> top if top else b, e, alpha=1 << (k - top))  # e * 2**(k-top) | b >> top
    quotient, remainder = floor_divmod(remainder, n)
    while top > 0:
        width = min(digit, top)
        top -= width
        step, remainder = floor_divmod((remainder << width) | ((b >> top) & ((1 << width) - 1)), n)
        quotient = (quotient << width) | step
    return quotient, remainder


#: Smallest divisor for which :func:`floor_divmod_estimated` is proved exact on int64 operands.
ESTIMATE_MIN_DIVISOR = 1 << 12


def floor_divmod(a: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """Floor ``divmod(a, n)`` of int64 ``a`` by a constant ``0 < n``, exactly.

    A truncating int64 division, then ``q - 1, r + n`` where the remainder ``r = a - q n`` came out
    negative; except on GPUs, where integer division is emulated in many instructions and the float64
    estimate of :func:`floor_divmod_estimated` is used for ``n >= 2**12``. All are exact, so the paths agree
    bit for bit. Why not ``torch.div(..., rounding_mode="floor")``: compiled for the CPU it branches on the
    signs of ``a``, which vary from coordinate to coordinate, and the mispredictions made the undo of a
    momentum step 1.6x slower (632 against 389 us for 65536 coordinates, one thread); the correction here
    compiles without a branch. (A compiled scalar loop with the hardware division beat the float64
    estimate on the CPUs measured, 312 us against 372 us for a multiply of 65536 coordinates.)
    """
    if n >= ESTIMATE_MIN_DIVISOR and a.is_cuda:
        return floor_divmod_estimated(a, n)
    quotient = torch.div(a, n, rounding_mode="trunc")
    remainder = torch.add(a, quotient, alpha=-n)
    below = (remainder < 0).to(torch.int64)
    return quotient - below, torch.add(remainder, below, alpha=n)


def floor_divmod_estimated(a: Tensor, n: int) -> tuple[Tensor, Tensor]:
    r"""Floor ``divmod(a, n)`` from a float64 quotient estimate and an exact integer correction.

    Valid for ``2**12 <= n < 2**53`` and int64 ``-2**62 <= a < 2**63``. Proof: with :math:`u = 2^{-53}`,
    ``float(a) * float(1/n)`` is :math:`(a/n)(1 + \delta)` with :math:`|\delta| < 3.01 u` (three roundings:
    the conversion of ``a``, the reciprocal and the product), so it is within
    :math:`3.01 \cdot 2^{-53} \cdot 2^{63} / 2^{12} < 0.76` of :math:`a / n` and its floor lies in
    :math:`\{q - 1, q, q + 1\}` with :math:`q = \lfloor a/n \rfloor`. Starting one below, the estimate
    :math:`\hat q \in \{q-2, q-1, q\}` gives :math:`r = a - \hat q n \in [0, 3n)`, and two conditional
    steps bring ``r`` into ``[0, n)``. No product overflows: :math:`\hat q n \le q n \le a` and
    :math:`\hat q n > a - 3n \ge -2^{63}`.
    """
    quotient = torch.floor(a.to(torch.float64) * (1.0 / n)).to(torch.int64) - 1
    remainder = torch.add(a, quotient, alpha=-n)
    for _ in range(2):
        over = remainder >= n
        quotient = torch.where(over, quotient + 1, quotient)
        remainder = torch.where(over, remainder - n, remainder)
    return quotient, remainder
