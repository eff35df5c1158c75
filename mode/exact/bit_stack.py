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

Besides the multiply, the stack takes plain bit pushes (:meth:`BitStack.push_bits`): a right shift by
``s`` bits keeps the ``s`` bits it drops, which is how a block-floating-point exponent grows exactly
(:mod:`mode.exact.block_float`); the bound then grows by ``2**s``.

The arithmetic on the live word is in pure functions (:func:`multiply_word`, :func:`divide_word`,
:func:`push_bits_word`, :func:`pop_bits_word`) so that a caller can fuse it with its own elementwise
work (:mod:`mode.exact.fusion`); :meth:`BitStack.reserve` and :meth:`BitStack.release` do the
bookkeeping (spills, bound, history) around such a fused call.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mode.exact.wide import WORD_BITS, divmod_shifted, floor_divmod, mul_add_split

_CHUNK_DTYPES = {32: torch.int32, 16: torch.int16, 8: torch.int8}


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


#: A plain push drops at most this many bits from a value; a larger shift stores the whole value.
MAX_PUSH_BITS = 62
_WHOLE = 1 << (MAX_PUSH_BITS - 1)  # offset making a value with |y| < 2**61 a digit in [0, 2**62)


def multiply_word(word: Tensor, v: Tensor, n: int, k: int) -> tuple[Tensor, Tensor]:
    """The exact multiply on the live word: ``s <- B mod n``, ``B <- B // n``, ``x <- v n + s``,
    ``B <- B 2**k + (x mod 2**k)``, ``v <- x // 2**k``; returns ``(B, v)``. The caller guarantees room
    (:meth:`BitStack.reserve`)."""
    d = 1 << k
    word, digit = floor_divmod(word, n)
    # v*n + s = (v >> k)*n*d + (low*n + s) with low = v mod d, so only low*n + s needs wide arithmetic.
    carry, pushed = mul_add_split(v & (d - 1), n, digit, k)
    return torch.add(pushed, word, alpha=d), torch.add(carry, v >> k, alpha=n)  # word*d | pushed


def divide_word(word: Tensor, v: Tensor, n: int, k: int) -> tuple[Tensor, Tensor]:
    """Undo :func:`multiply_word`: ``x <- v 2**k + (B mod 2**k)``, ``B <- B // 2**k``,
    ``B <- B n + (x mod n)``, ``v <- x // n``; returns ``(B, v)``."""
    d = 1 << k
    high, low = floor_divmod(v, n)
    # v*d + b = high*n*d + (low*d + b) with low = v mod n, so only low*d + b needs wide arithmetic.
    quotient, digit = divmod_shifted(low, word & (d - 1), n, k)
    return torch.add(digit, word >> k, alpha=n), torch.add(quotient, high, alpha=d)


def push_bits_word(word: Tensor, y: Tensor, shift: Tensor) -> tuple[Tensor, Tensor]:
    """Shift ``y`` right by ``shift >= 0`` (per coordinate, broadcast) keeping the dropped bits:
    ``B <- B 2**s + (y mod 2**s)``, ``y <- y // 2**s``. A shift beyond ``MAX_PUSH_BITS - 1`` bits, which
    leaves nothing of ``|y| < 2**61``, pushes ``y + 2**61`` on ``MAX_PUSH_BITS`` bits and leaves ``0``:
    no push is wider than the value it stores. Returns ``(B, y)``."""
    whole = shift >= MAX_PUSH_BITS
    part = shift.clamp(max=MAX_PUSH_BITS - 1)
    width = shift.clamp(max=MAX_PUSH_BITS)
    digit = torch.where(whole, y + _WHOLE, y & ((torch.ones_like(part) << part) - 1))
    return (word << width) | digit, torch.where(whole, torch.zeros_like(y), y >> part)


def pop_bits_word(word: Tensor, y: Tensor, shift: Tensor) -> tuple[Tensor, Tensor]:
    """Undo :func:`push_bits_word`; returns ``(B, y)``."""
    whole = shift >= MAX_PUSH_BITS
    part = shift.clamp(max=MAX_PUSH_BITS - 1)
    width = shift.clamp(max=MAX_PUSH_BITS)
    digit = word & ((torch.ones_like(width) << width) - 1)
    return word >> width, torch.where(whole, digit - _WHOLE, (y << part) | digit)


class BitStack:
    """Per-coordinate information buffer making ``v * n / 2**k`` and right shifts exactly invertible on
    int64 tensors.

    Parameters
    ----------
    like : Tensor
        The buffer has one coordinate per element of ``like``, on its device.

    Notes
    -----
    The buffer has no depth limit. Chunks are spilled only when a push could overflow the word,
    and each push records how many it spilled, so the undo operations run in exact reverse order.
    See the module docstring for the storage bound.
    """

    def __init__(self, like: Tensor) -> None:
        if not isinstance(like, Tensor):
            raise TypeError(f"like must be a torch.Tensor, got {type(like).__name__}")
        self.word = torch.zeros_like(like, dtype=torch.int64)
        # The word's data-independent bound; None after an undo, until a push needs it (_current_bound).
        self._bound: int | None = 0
        self._chunks: list[Tensor] = []
        self._chunk_bits = 0
        # What the pushes did, so that each undo can check its ops and restore the chunks spilled for it:
        # runs of equal pushes ([ops, chunk width, count]) and the chunks spilled by each push that
        # spilled. A long solve repeats one push with rare spills, so the record stays a few runs long.
        self._runs: list[list] = []
        self._spills: dict[int, int] = {}
        self._count = 0

    def copy(self) -> BitStack:
        """An independent stack with the same contents (the live word is copied, since fused kernels
        update it in place; chunks are never changed in place, so shared)."""
        twin = BitStack.__new__(BitStack)
        twin.__dict__.update(self.__dict__)
        twin.word = self.word.clone()
        twin._chunks, twin._spills = list(self._chunks), dict(self._spills)
        twin._runs = [list(run) for run in self._runs]
        return twin

    def __len__(self) -> int:
        """Number of pushes not yet undone."""
        return self._count

    def bits_per_coordinate(self) -> int:
        """Bits stored per coordinate: all chunk widths plus the 64-bit live word."""
        return self._chunk_bits + 64

    def nbytes(self) -> int:
        """Bytes of tensor storage held: the live word and every chunk, over all coordinates."""
        return self.word.nbytes + sum(chunk.nbytes for chunk in self._chunks)

    def is_empty(self) -> bool:
        """Whether nothing is recorded: zero live word, no chunks, no pushes (syncs the device)."""
        return not self._count and not self._chunks and not bool(self.word.any())

    def _check_v(self, v: Tensor) -> None:
        if not isinstance(v, Tensor) or v.dtype != torch.int64:
            raise TypeError(f"v must be an int64 torch.Tensor, got {getattr(v, 'dtype', type(v).__name__)}")
        if v.shape != self.word.shape or v.device != self.word.device:
            raise ValueError(
                f"v must have the stack's shape {tuple(self.word.shape)} on {self.word.device}, "
                f"got {tuple(v.shape)} on {v.device}"
            )

    # Spill and absorb change the live word in place (as the fused kernels do) and make at most one
    # word-sized temporary: on a deep net they run while a block's activations are alive, at the step's
    # memory peak.

    def _spill(self, width: int) -> None:
        # Offsetting by 2**(w-1) maps [0, 2**w) onto the signed range of the w-bit dtype.
        chunk = (self.word & ((1 << width) - 1)).sub_(1 << (width - 1))
        self._chunks.append(chunk.to(_CHUNK_DTYPES[width]))
        del chunk
        self.word.bitwise_right_shift_(width)
        self._chunk_bits += width

    def _absorb(self, width: int) -> None:
        # The low bits are zero after the shift and the chunk plus offset lies in [0, 2**w): adding is
        # or-ing, and the narrow chunk is widened element by element rather than as a copy.
        self.word.bitwise_left_shift_(width).add_(self._chunks.pop()).add_(1 << (width - 1))
        self._chunk_bits -= width

    @staticmethod
    def _grown(bound: int, ops: tuple) -> int:
        """The word's bound after ``ops``: each multiply maps it to ``(U // n + 1) 2**k - 1``, each plain
        push of ``b`` bits to ``(U + 1) 2**b - 1``; both only grow it."""
        for op in ops:
            if op[0] == "multiply":
                bound = (bound // op[1] + 1) * (1 << op[2]) - 1
            else:
                bound = ((bound + 1) << op[1]) - 1
        return bound

    def _current_bound(self) -> int:
        """The bound after the pushes recorded: replayed from the empty stack after an undo (the spill
        schedule and the bound depend only on the sequence of pushes)."""
        if self._bound is None:
            bound, index = 0, 0
            for ops, width, count in self._runs:
                for _ in range(count):
                    bound = self._grown(bound >> (width * self._spills.get(index, 0)), ops)
                    index += 1
            self._bound = bound
        return self._bound

    def fits(self, *ops: tuple) -> bool:
        """Whether ``ops`` fit the word once everything is spilled, i.e. :meth:`reserve` can take them as
        one push."""
        return self._grown(0, ops) < 1 << WORD_BITS

    def reserve(self, *ops: tuple) -> None:
        """Make room for a push and record it. Each op is ``("multiply", n, k)`` or ``("bits", b)``
        (``b`` the widest plain push of any coordinate, at most ``MAX_PUSH_BITS``); several ops are one
        push that a fused kernel applies in that order.

        Spills chunks while the data-independent bound says the push could overflow the word, so the
        undo can replay the schedule without reading the data. The caller then applies the matching
        word functions (:func:`.multiply_word`, :func:`.push_bits_word`) and assigns
        ``word``.

        Raises
        ------
        ValueError
            If an op is malformed, or the ops do not fit one word (:meth:`fits`).
        """
        width = 32
        for op in ops:
            if op[0] == "multiply" and len(op) == 3:
                _check_factor(op[1], op[2])
                width = min(width, chunk_width(op[2]))
            elif not (op[0] == "bits" and len(op) == 2 and op[1] in range(MAX_PUSH_BITS + 1)):
                raise ValueError(f"op must be ('multiply', n, k) or ('bits', b), 0 <= b <= 62, got {op!r}")
        if not self.fits(*ops):
            raise ValueError(f"{ops!r} do not fit one {WORD_BITS}-bit word: reserve them one by one")
        bound, spilled = self._current_bound(), 0
        while self._grown(bound, ops) >= 1 << WORD_BITS:
            self._spill(width)
            bound >>= width
            spilled += 1
        if spilled:
            self._spills[self._count] = spilled
        if self._runs and self._runs[-1][0] == ops and self._runs[-1][1] == width:
            self._runs[-1][2] += 1
        else:
            self._runs.append([ops, width, 1])
        self._count += 1
        self._bound = self._grown(bound, ops)

    def pushes(self) -> list[tuple[tuple, int, int]]:
        """Every push not yet undone, oldest first: its ops, chunk width and number of spilled chunks (what
        the storage bounds of ``theory/finite_precision.md`` read)."""
        flat = [(ops, width) for ops, width, count in self._runs for _ in range(count)]
        return [(ops, width, self._spills.get(i, 0)) for i, (ops, width) in enumerate(flat)]

    def top(self) -> tuple:
        """The ops of the most recent push not yet undone."""
        if not self._count:
            raise IndexError("the BitStack holds no push")
        return self._runs[-1][0]

    def release(self, *ops: tuple) -> None:
        """Close the undo of the most recent push, which must be ``ops``: restore the chunks it spilled.
        The caller applied the matching undo (:func:`.divide_word`, :func:`.pop_bits_word`) first.

        Raises
        ------
        IndexError
            If no push is left to undo.
        ValueError
            If ``op`` differs from the recorded push.
        """
        if not self._count:
            raise IndexError("undo on an empty BitStack: there is no push left to undo")
        run = self._runs[-1]
        if run[0] != ops:
            raise ValueError(f"undo of {ops!r} does not match the last push {run[0]!r}")
        self._count -= 1
        for _ in range(self._spills.pop(self._count, 0)):
            self._absorb(run[1])
        run[2] -= 1
        if not run[2]:
            self._runs.pop()
        self._bound = None if self._count else 0

    def multiply(self, v: Tensor, n: int, k: int) -> Tensor:
        """Return ``v * n / 2**k`` rounded so that :meth:`divide` recovers ``v`` exactly.

        Implements ``s <- B mod n``, ``B <- B // n``, ``x <- v*n + s``, ``B <- B*d + (x mod d)``,
        ``v <- x // d`` with ``d = 2**k`` and floor operations; since ``0 <= s < n``, the result is
        ``floor(v*n/d + s/d)``, within 1 of ``v * n / d``.

        Parameters
        ----------
        v : Tensor
            int64, shaped like the stack, with ``|v| < 2**62``.
        n, k : int
            The factor ``n / 2**k`` with ``0 < n < 2**k`` and ``k <= 55``.

        Returns
        -------
        Tensor
            The product, int64.
        """
        self._check_v(v)
        self.reserve(("multiply", n, k))
        self.word, v = multiply_word(self.word, v, n, k)
        return v

    def divide(self, v: Tensor, n: int, k: int) -> Tensor:
        """Undo the most recent :meth:`multiply`, which must have used the same ``n`` and ``k``.

        ``v`` must be the value that multiply returned; any other value gives an unrelated result.

        Raises
        ------
        IndexError
            If no push is left to undo.
        ValueError
            If ``(n, k)`` differs from the recorded factor, or ``n == 0``.
        """
        self._check_v(v)
        _check_factor(n, k)
        if self._count and self.top() != (("multiply", n, k),):
            raise ValueError(f"divide(n={n}, k={k}) does not match the last push {self.top()!r}")
        if not self._count:
            raise IndexError("divide on an empty BitStack: there is no multiply left to undo")
        self.word, v = divide_word(self.word, v, n, k)
        self.release(("multiply", n, k))
        return v

    def reserve_bits(self, shift: Tensor) -> None:
        """:meth:`reserve` one plain push as wide as the widest right shift in ``shift`` (per coordinate;
        zero and negative entries push nothing), at most ``MAX_PUSH_BITS``."""
        self.reserve(("bits", int(shift.clamp(0, MAX_PUSH_BITS).max()) if shift.numel() else 0))

    def top_bits(self) -> tuple:
        """The ops of the most recent push, checked to be one plain push (of :meth:`push_bits` or an
        exponent move), for its undo to :meth:`release`.

        Raises
        ------
        ValueError
            If the stack is empty or its last push is anything else.
        """
        ops = self.top() if self._count else ()
        if len(ops) != 1 or ops[0][0] != "bits":
            raise ValueError(f"the bit stack's last push {ops!r} is not a plain bit push")
        return ops

    def push_bits(self, y: Tensor, shift: Tensor) -> Tensor:
        """``y // 2**shift`` per coordinate (``shift >= 0`` broadcast to ``y``), keeping the dropped bits;
        :meth:`pop_bits` undoes it. ``|y| < 2**61``."""
        self._check_v(y)
        self.reserve_bits(shift)
        self.word, y = push_bits_word(self.word, y, shift)
        return y

    def pop_bits(self, y: Tensor, shift: Tensor) -> Tensor:
        """Undo the most recent :meth:`push_bits`, given its result ``y`` and the same ``shift``."""
        self._check_v(y)
        ops = self.top_bits()
        self.word, y = pop_bits_word(self.word, y, shift)
        self.release(*ops)
        return y
