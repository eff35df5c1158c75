"""Fixed-point encoding of activations and the exact rational form of ``gamma``.

A real ``y`` is stored as the int64 ``n = round(y * 2**frac_bits)``; stored integers are kept within
``-2**LIMIT_BITS <= n < 2**LIMIT_BITS`` (signed integers of ``LIMIT_BITS + 1`` bits), so that the sum of
two of them cannot leave int64.
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch
from torch import Tensor

LIMIT_BITS = 61
"""Stored fixed-point integers satisfy ``-2**LIMIT_BITS <= n < 2**LIMIT_BITS``."""


class FixedPointRangeError(ValueError):
    """A value does not fit the fixed-point grid without wrapping around."""


def _check_frac_bits(frac_bits: int) -> None:
    if not isinstance(frac_bits, int) or frac_bits < 0:
        raise ValueError(f"frac_bits must be a non-negative int, got {frac_bits!r}")


def quantize(y: Tensor, frac_bits: int) -> Tensor:
    """Encode ``y`` on the grid of spacing ``2**-frac_bits``.

    Implements ``n = round(y * 2**frac_bits)`` in float64, rounding half to even, returned as int64.
    The result is only meaningful where :meth:`RangeGuard.check_float` accepts ``y``: casting a
    non-finite or too large float to int64 is undefined.

    Parameters
    ----------
    y : Tensor
        Real values, any floating dtype and device.
    frac_bits : int
        Number of fractional bits, ``>= 0``.

    Returns
    -------
    Tensor
        int64 tensor shaped like ``y``.
    """
    _check_frac_bits(frac_bits)
    # Scaling by a power of two is exact in float64, so the only rounding is the explicit one.
    return torch.round(y.to(torch.float64) * 2.0**frac_bits).to(torch.int64)


def dequantize(n: Tensor, frac_bits: int, dtype: torch.dtype) -> Tensor:
    """Decode fixed-point integers: ``y = [n] * 2**-frac_bits`` with ``[n]`` the nearest ``dtype`` value.

    Parameters
    ----------
    n : Tensor
        Integer tensor produced by :func:`quantize` or by exact arithmetic on such integers.
    frac_bits : int
        Number of fractional bits, ``>= 0``.
    dtype : torch.dtype
        Floating dtype of the result.

    Returns
    -------
    Tensor
        ``n`` cast to ``dtype`` (one rounding), then scaled by ``2**-frac_bits`` (exact for float32 and
        float64 at any ``frac_bits <= 60``).
    """
    _check_frac_bits(frac_bits)
    # A cast straight to dtype rounds once; through float64 it would round twice for |n| > 2**53.
    return n.to(dtype).mul_(2.0**-frac_bits)


class RangeGuard:
    """Collects fixed-point range violations on the device and reports them in one host sync.

    A check costs two elementwise operations and no reduction, so a forward or backward pass can check
    every layer without stalling on ``.item()``. Integer checks OR ``n + 2**LIMIT_BITS`` into an
    accumulator: for ``-2**LIMIT_BITS <= n < 2**LIMIT_BITS`` that lies in ``[0, 2**(LIMIT_BITS + 1))``,
    and any value outside, wrapped or not, sets bit ``LIMIT_BITS + 1`` or the sign bit, which OR keeps.
    Float checks keep the running maximum of ``|y|`` (``torch.maximum`` propagates NaN).
    :meth:`raise_if_violated` reduces the accumulators once. Accumulators are kept per device, shape
    (and ``frac_bits``).
    """

    def __init__(self) -> None:
        self._ints: dict[tuple, Tensor] = {}
        self._floats: dict[tuple, Tensor] = {}

    def check_float(self, y: Tensor, frac_bits: int, *, prescaled: bool = False) -> None:
        """Flag values of ``y`` that :func:`quantize` with ``frac_bits`` cannot encode.

        Flags ``not isfinite(y)`` and ``|y| >= 2**(LIMIT_BITS - frac_bits)``, i.e.
        ``|y| * 2**frac_bits >= 2**LIMIT_BITS``. With ``prescaled=True``, ``y`` is already in grid units
        (multiplied by ``2**frac_bits``, about to be rounded to an integer) and the bound is
        ``2**LIMIT_BITS``; ``frac_bits`` then only names the grid in the error message.
        """
        _check_frac_bits(frac_bits)
        size = y.detach().abs()
        key = (y.device, y.shape, frac_bits, prescaled)
        if key in self._floats:
            torch.maximum(self._floats[key], size, out=self._floats[key])
        else:
            self._floats[key] = size.to(torch.float64)

    def check_int(self, n: Tensor) -> None:
        """Flag stored integers outside ``-2**LIMIT_BITS <= n < 2**LIMIT_BITS``."""
        shifted = n + (1 << LIMIT_BITS)
        key = (n.device, n.shape)
        if key in self._ints:
            self._ints[key].bitwise_or_(shifted)
        else:
            self._ints[key] = shifted

    def raise_if_violated(self, where: str) -> None:
        """Raise :class:`FixedPointRangeError` if any check since construction failed.

        Parameters
        ----------
        where : str
            Names the computation in the error message.
        """
        out_of_range = any(bool((acc >> (LIMIT_BITS + 1)).any()) for acc in self._ints.values())
        non_finite = False
        for (_, _, frac_bits, prescaled), size in self._floats.items():
            # Both sides are exact in float64 (the bound is a power of two); NaN fails the comparison.
            out_of_range |= not bool((size < 2.0 ** (LIMIT_BITS - (0 if prescaled else frac_bits))).all())
            non_finite |= not bool(torch.isfinite(size).all())
        if not (out_of_range or non_finite):
            return
        frac_bits = sorted({key[2] for key in self._floats})
        ranges = ", ".join(
            f"±2**{LIMIT_BITS - f} = ±{2.0 ** (LIMIT_BITS - f):.6g} for frac_bits={f}" for f in frac_bits
        )
        if not ranges:
            ranges = f"±2**(LIMIT_BITS - frac_bits) with LIMIT_BITS={LIMIT_BITS}"
        raise FixedPointRangeError(
            f"{where}: value outside the fixed-point range; stored integers must satisfy "
            f"-2**{LIMIT_BITS} <= n < 2**{LIMIT_BITS}, i.e. real values within {ranges}. "
            f"Non-finite values (NaN/inf) were {'seen' if non_finite else 'not seen'}. "
            "Use fewer fractional bits (a smaller frac_bits gives a coarser grid with a wider range) "
            "or normalise the activations."
        )


def rational_gamma(gamma: float, rel_tol: float = 1e-9, max_bits: int = 55) -> tuple[int, int]:
    """Exact dyadic rational ``n / 2**k`` standing in for ``gamma``.

    Returns the smallest ``k <= max_bits`` with ``n = round(gamma * 2**k)`` and
    ``|n / 2**k - gamma| <= rel_tol * (1 - gamma)``, so ``1 - n / 2**k`` has relative error at most
    ``rel_tol``. Minimality of ``k`` makes ``n`` odd, or ``(n, k) == (0, 0)``: an even ``n`` or a zero
    ``n`` at ``k >= 1`` is the same number with ``k - 1`` bits. The result lies in ``[0, 1)``
    because ``rel_tol < 1``; ``(0, 0)`` (``gamma`` within tolerance of 0) has no inverse.

    Parameters
    ----------
    gamma : float
        Momentum coefficient in ``[0, 1)``.
    rel_tol : float
        Tolerance on ``1 - gamma`` relative to itself, in ``[0, 1)``.
    max_bits : int
        Largest admissible ``k``; :class:`~mode.exact.bit_stack.BitStack` accepts ``k <= 55``.

    Returns
    -------
    tuple of int
        ``(n, k)``.

    Raises
    ------
    ValueError
        If ``gamma`` is not a finite number in ``[0, 1)``, or the tolerance cannot be met with
        ``k <= max_bits``.
    """
    gamma = float(gamma)
    if not (math.isfinite(gamma) and 0.0 <= gamma < 1.0):
        raise ValueError(f"gamma must be a finite number in the range [0, 1), got {gamma!r}")
    if not 0.0 <= rel_tol < 1.0:
        raise ValueError(f"rel_tol must be in [0, 1), got {rel_tol!r}")
    if not isinstance(max_bits, int) or max_bits < 0:
        raise ValueError(f"max_bits must be a non-negative int, got {max_bits!r}")
    # Exact rational arithmetic: a float comparison could accept a k that misses the tolerance.
    exact = Fraction(gamma)
    tol = Fraction(rel_tol) * (1 - exact)
    for k in range(max_bits + 1):
        n = round(exact * 2**k)
        if abs(Fraction(n, 2**k) - exact) <= tol:
            return n, k
    raise ValueError(
        f"gamma={gamma!r} has no n / 2**k within rel_tol={rel_tol!r} of 1 - gamma for k <= "
        f"max_bits={max_bits}; increase rel_tol or max_bits"
    )


def dyadic_gamma(gamma: float, bits: int) -> tuple[int, int]:
    """``gamma`` rounded to the grid ``2**-bits``: ``n / 2**k = round(gamma 2**bits) / 2**bits``.

    The fraction is reduced (``n`` odd or ``(0, 0)``), as in :func:`rational_gamma`.

    Raises
    ------
    ValueError
        If ``gamma`` is not in ``[0, 1)`` or ``bits`` is not an int in ``[0, 55]``.
    """
    gamma = float(gamma)
    if not (math.isfinite(gamma) and 0.0 <= gamma < 1.0):
        raise ValueError(f"gamma must be a finite number in the range [0, 1), got {gamma!r}")
    if isinstance(bits, bool) or not isinstance(bits, int) or not 0 <= bits <= 55:
        raise ValueError(f"gamma_bits must be an int in [0, 55], got {bits!r}")
    n, k = round(Fraction(gamma) * 2**bits), bits
    if n == 2**k:
        raise ValueError(f"gamma={gamma!r} rounds to 1 on a grid of 2**-{bits}: use more gamma_bits")
    while n and n % 2 == 0:
        n, k = n // 2, k - 1
    return (n, k) if n else (0, 0)
