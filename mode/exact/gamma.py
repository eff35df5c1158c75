"""The exact rational form of ``gamma``: a dyadic ``n / 2**k``, so multiplying by it is exact on integers."""

from __future__ import annotations

import math
from fractions import Fraction


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
