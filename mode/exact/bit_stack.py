"""Information buffer for exactly invertible multiplication of int64 tensors by ``n / 2**k``.

After Maclaurin, Duvenaud & Adams (2015), Alg. 3, with the numerator applied before the denominator.
With ``d = 2**k`` and ``//``, ``mod`` the floor operations, multiplying ``v`` by ``n / d`` keeps the
destroyed bits in a buffer ``B``::

    s <- B mod n;  B <- B // n;  x <- v*n + s;  B <- B*d + (x mod d);  v <- x // d

and dividing undoes it step by step::

    x <- v*d + (B mod d);  B <- B // d;  B <- B*n + (x mod n);  v <- x // n

Alg. 3 as published divides first, ``v <- (v // d)*n + (B mod n)``, which replaces the exact
``(v mod d) * n / d`` by a buffer digit and is off by up to ``n`` units; that is harmless for the paper's
``d ~ 2**16`` but not for the ``d`` up to ``2**55`` that an accurate ``gamma`` needs. Numerator first,
``v <- floor((v*n + s) / d)`` with ``0 <= s < n``, is within 1 of ``v * n / d``. The intermediate
``x`` has up to 118 bits and is handled in pieces by :mod:`mode.exact.wide`.

The unbounded integer ``B`` is held per coordinate as one live int64 word plus a stack of w-bit
chunks. A Python-int bound ``U >= B`` that does not depend on the data, updated as
``U <- (U // n + 1) * d - 1``, decides when the word is spilled (while ``(U // n + 1) * d > 2**63``),
so the inverse replays the same schedule without reading the data.

Storage. Let ``r = d / n``, ``m = 63 - k - w`` (headroom: after a spill ``U >= n * 2**m``) and ``C`` the
number of chunks. Per multiply ``U + 1`` grows by a factor of at least ``r`` and, once the word has
spilled, less than ``r (1 + 2**-m)``; a spill costs less than ``log2(1 + 2**-m)`` bits. Hence after
``L >= 1`` multiplies by the same ``n / d``::

    L log2(r) + log2(n) + 1  <=  bits_per_coordinate()  <  64 + w + L log2(r) + (L + C - 1) log2(1 + 2**-m)

The last term is the slack over the information actually destroyed: small when ``m`` is large, but
with small ``m`` (``m < 8`` only for ``k >= 48``, see :func:`chunk_width`) or with ``1 - n/d`` far
below ``2**-m`` the worst-case bound grows by about ``d`` per multiply while it is small, and that
rounding, not ``L log2(r)``, can dominate.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from mode.exact.wide import WORD_BITS, divmod_shifted, mul_add_split

_CHUNK_DTYPES = {32: torch.int32, 16: torch.int16, 8: torch.int8}


@dataclass(frozen=True)
class _Record:
    """What one multiply did, so that the matching divide can undo it."""

    n: int
    k: int
    width: int
    spilled: int
    bound: int


def _check_factor(n: int, k: int) -> None:
    for name, value in (("n", n), ("k", k)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if n == 0:
        raise ValueError("n == 0 (gamma = 0) destroys v entirely: the multiply has no inverse")
    if not 0 < n < 1 << k:
        raise ValueError(f"n must satisfy 0 < n < 2**k = {1 << k}, got n={n}")


def chunk_width(k: int) -> int:
    """Chunk width for ``d = 2**k``: of {32, 16, 8} bits, the widest that leaves at least 8 of the word's
    ``63 - k`` free bits in place after a spill (the slack per multiply is ``log2(1 + 2**-m)`` with ``m``
    the bits left), else the widest that fits at all."""
    capacity = WORD_BITS - k
    fitting = [width for width in (32, 16, 8) if width <= capacity]
    if not fitting:
        raise ValueError(f"k={k} leaves {capacity} < 8 free bits in a 63-bit word; k must be <= 55")
    roomy = [width for width in fitting if width <= capacity - 8]
    return (roomy or fitting)[0]


class BitStack:
    """Per-coordinate information buffer making ``v * n / 2**k`` exactly invertible on int64 tensors.

    Parameters
    ----------
    like : Tensor
        The buffer has one coordinate per element of ``like``, on its device.

    Notes
    -----
    The buffer has no depth limit. Chunks are spilled only when a push could overflow the word,
    and each multiply records how many it spilled, so :meth:`divide` undoes multiplies in exact
    reverse order. See the module docstring for the storage bound.
    """

    def __init__(self, like: Tensor) -> None:
        if not isinstance(like, Tensor):
            raise TypeError(f"like must be a torch.Tensor, got {type(like).__name__}")
        self._word = torch.zeros_like(like, dtype=torch.int64)
        self._bound = 0
        self._chunks: list[Tensor] = []
        self._chunk_bits = 0
        self._history: list[_Record] = []

    def copy(self) -> BitStack:
        """An independent stack with the same contents (tensors are never changed in place, so shared)."""
        twin = BitStack.__new__(BitStack)
        twin.__dict__.update(self.__dict__)
        twin._chunks, twin._history = list(self._chunks), list(self._history)
        return twin

    def __len__(self) -> int:
        """Number of multiplies not yet undone."""
        return len(self._history)

    def bits_per_coordinate(self) -> int:
        """Bits stored per coordinate: all chunk widths plus the 64-bit live word."""
        return self._chunk_bits + 64

    def nbytes(self) -> int:
        """Bytes of tensor storage held: the live word and every chunk, over all coordinates."""
        return self._word.nbytes + sum(chunk.nbytes for chunk in self._chunks)

    def is_empty(self) -> bool:
        """Whether nothing is recorded: zero live word, no chunks, no multiplies (syncs the device)."""
        return not self._history and not self._chunks and not bool(self._word.any())

    def _check_v(self, v: Tensor) -> None:
        if not isinstance(v, Tensor) or v.dtype != torch.int64:
            raise TypeError(f"v must be an int64 torch.Tensor, got {getattr(v, 'dtype', type(v).__name__)}")
        if v.shape != self._word.shape or v.device != self._word.device:
            raise ValueError(
                f"v must have the stack's shape {tuple(self._word.shape)} on {self._word.device}, "
                f"got {tuple(v.shape)} on {v.device}"
            )

    def _spill(self, width: int) -> None:
        # Offsetting by 2**(w-1) maps [0, 2**w) onto the signed range of the w-bit dtype.
        offset = 1 << (width - 1)
        chunk = (self._word & ((1 << width) - 1)) - offset
        self._chunks.append(chunk.to(_CHUNK_DTYPES[width]))
        self._word = self._word >> width
        self._bound >>= width
        self._chunk_bits += width

    def _absorb(self, width: int) -> None:
        chunk = self._chunks.pop().to(torch.int64) + (1 << (width - 1))
        self._word = (self._word << width) | chunk
        self._chunk_bits -= width

    def multiply(self, v: Tensor, n: int, k: int) -> Tensor:
        """Return ``v * n / 2**k`` rounded so that :meth:`divide` recovers ``v`` exactly.

        Implements ``s <- B mod n``, ``B <- B // n``, ``x <- v*n + s``, ``B <- B*d + (x mod d)``,
        ``v <- x // d`` with ``d = 2**k`` and floor operations; since ``0 <= s < n``, the result is
        ``floor(v*n/d + s/d)``, within 1 of ``v * n / d``.

        Parameters
        ----------
        v : Tensor
            int64, shaped like the stack, with ``|v| < 2**62`` (fixed-point values satisfy
            ``|v| < 2**LIMIT_BITS``).
        n, k : int
            The factor ``n / 2**k`` with ``0 < n < 2**k`` and ``k <= 55``.

        Returns
        -------
        Tensor
            The product, int64.
        """
        self._check_v(v)
        _check_factor(n, k)
        width = chunk_width(k)
        d = 1 << k
        bound = self._bound
        spilled = 0
        while (self._bound // n + 1) * d > 1 << WORD_BITS:
            self._spill(width)
            spilled += 1
        self._history.append(_Record(n=n, k=k, width=width, spilled=spilled, bound=bound))
        # One integer division (the costliest elementwise op here); the remainder follows from it.
        # Products with the constants go through add(..., alpha=c): one kernel instead of two.
        word = torch.div(self._word, n, rounding_mode="floor")
        digit = torch.add(self._word, word, alpha=-n)
        # v*n + s = (v >> k)*n*d + (low*n + s) with low = v mod d, so only low*n + s needs wide arithmetic.
        carry, pushed = mul_add_split(v & (d - 1), n, digit, k)
        self._word = torch.add(pushed, word, alpha=d)  # word*d | pushed, as pushed < d
        self._bound = (self._bound // n + 1) * d - 1
        return torch.add(carry, v >> k, alpha=n)

    def divide(self, v: Tensor, n: int, k: int) -> Tensor:
        """Undo the most recent :meth:`multiply`, which must have used the same ``n`` and ``k``.

        Implements ``x <- v*d + (B mod d)``, ``B <- B // d``, ``B <- B*n + (x mod n)``, ``v <- x // n``
        with ``d = 2**k``, then restores the chunks that multiply spilled. ``v`` must be the value that
        multiply returned; any other value gives an unrelated result.

        Parameters
        ----------
        v : Tensor
            int64, shaped like the stack.
        n, k : int
            The factor of the multiply being undone.

        Returns
        -------
        Tensor
            The ``v`` that was passed to that multiply, bit for bit.

        Raises
        ------
        IndexError
            If no multiply is left to undo.
        ValueError
            If ``(n, k)`` differs from the recorded factor, or ``n == 0``.
        """
        self._check_v(v)
        _check_factor(n, k)
        if not self._history:
            raise IndexError("divide on an empty BitStack: there is no multiply left to undo")
        record = self._history[-1]
        if (record.n, record.k) != (n, k):
            raise ValueError(
                f"divide(n={n}, k={k}) does not match the last multiply (n={record.n}, k={record.k})"
            )
        self._history.pop()
        d = 1 << k
        high = torch.div(v, n, rounding_mode="floor")
        # v*d + b = high*n*d + (low*d + b) with low = v mod n, so only low*d + b needs wide arithmetic.
        quotient, digit = divmod_shifted(torch.add(v, high, alpha=-n), self._word & (d - 1), n, k)
        self._word = torch.add(digit, self._word >> k, alpha=n)
        for _ in range(record.spilled):
            self._absorb(record.width)
        self._bound = record.bound
        return torch.add(quotient, high, alpha=d)
