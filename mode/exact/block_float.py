r"""Block floating point: int64 mantissas with shared binary exponents, changed exactly.

A real tensor :math:`y` of shape ``(N, ...)`` is held as int64 mantissas :math:`Y` and exponents
:math:`e` with :math:`y = Y\, 2^{e}`, one exponent per *block* of coordinates (:data:`.BLOCKS`): the whole
tensor (``"tensor"``, shape ``(1, ..., 1)``, the default) or each sample along the first dimension
(``"sample"``, shape ``(N, 1, ..., 1)``; one exponent for a tensor of fewer than two dimensions).
Exponents are chosen from the data so that every block's largest magnitude sits in the top bits of a
61-bit signed integer:

* :func:`needed_exponent` gives the least :math:`t` with a bound :math:`\beta \ge |y|` below
  :math:`2^{t + 60}` (``MANTISSA_BITS = 60``), so a block's grid :math:`2^t` is at most
  :math:`2^{-59} \beta`: relative, not absolute, precision, at every scale of the dtype;
* :func:`next_exponent` keeps the current exponent while it is at most ``HYSTERESIS`` bits coarser than
  needed and never finer, so exponents change (and the bit stack pays for it) only when a block's scale
  moves by a factor of 16; the grid stays at most :math:`2^{-55} \beta`;
* changing an exponent is exact: a finer exponent is a left shift, a coarser one a right shift whose
  dropped bits go onto the :class:`~mode.exact.bit_stack.BitStack` (:func:`rescale`); an all-zero block
  has no scale and takes any exponent for free.

Why one exponent per tensor by default: the bit stack's bound does not read the data, so a step in
which *any* block moves pays the widest move's bits for *every* coordinate, and records the exponents.
With a few hundred samples whose scales drift slowly, some sample crosses a power of two at almost every
layer: per-sample exponents then cost about one stack bit per coordinate per layer and a record per
layer (measured: 4.3x the stack bound at depth 1000, batch 256), while a shared exponent moves a few
times in a thousand layers. Per-sample exponents keep every sample's own relative precision in a batch
whose samples differ in scale by more than the mantissa's spare bits (:math:`2^{60 - 53}` for float64,
:math:`2^{60 - 24}` for float32); ask for them where that matters.

Exponents stay within ``[MIN_EXPONENT, 1023 - MANTISSA_BITS]`` so that every power of two the arithmetic
multiplies by is a normal float64. Below :math:`2^{-1022 + 59}` the grid is the fixed :math:`2^{-1022}`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mode.exact.bit_stack import BitStack, pop_bits_word, push_bits_word

MANTISSA_BITS = 60
"""Exponents are chosen so that a sample's bound is below ``2**(e + MANTISSA_BITS)``."""
HYSTERESIS = 4
"""An exponent is kept while it is at most this many bits coarser than needed."""
MIN_EXPONENT = -1022
"""The finest grid, ``2**-1022``, the smallest normal float64."""
MAX_EXPONENT = 1023 - MANTISSA_BITS
BLOCKS = ("tensor", "sample")
"""What shares an exponent: the whole tensor, or each sample (first dimension)."""


class FixedPointRangeError(ValueError):
    """A value is not finite, or too large for the exact arithmetic of its dtype."""


def value_limit(dtype: torch.dtype) -> float:
    """The largest magnitude a state of ``dtype`` may reach: a quarter of the dtype's largest value, so
    that a rounded state and the sum of two of them stay finite."""
    return torch.finfo(dtype).max / 4


def check_blocks(blocks: str) -> str:
    """``blocks`` if it is one of :data:`.BLOCKS`, else a ``ValueError`` naming them."""
    if blocks not in BLOCKS:
        raise ValueError(f"exponents must be one of {BLOCKS} (what shares a binary exponent), got {blocks!r}")
    return blocks


def exponent_shape(shape: torch.Size, blocks: str = "tensor") -> tuple[int, ...]:
    """Shape of the exponents of a tensor of ``shape``: ``(1, ..., 1)``, or ``(N, 1, ..., 1)`` per sample."""
    if blocks == "sample" and len(shape) >= 2:
        return (shape[0],) + (1,) * (len(shape) - 1)
    return (1,) * len(shape)


def block_extremes(y: Tensor, blocks: str = "tensor") -> tuple[Tensor, Tensor]:
    """``(min, max)`` of ``y`` over each block, flat (0-dim, or one per sample), from one
    ``torch.aminmax`` pass: ATen's reduction is vectorised, while a compiled scalar loop of
    ``max(acc, |y|)`` waits on the previous maximum at every element (14 against 48 us for 65536 int64
    values, one thread). NaN propagates."""
    if blocks == "sample" and y.dim() >= 2:
        return torch.aminmax(y.reshape(y.shape[0], -1), dim=1)
    return torch.aminmax(y)


def extremes_amax(lo: Tensor, hi: Tensor, shape: tuple[int, ...] | torch.Size) -> Tensor:
    """``max |y| = max(hi, -lo)`` from :func:`block_extremes`, shaped ``shape`` (``|y| < 2**63``)."""
    return torch.maximum(hi, -lo).reshape(shape)


def block_amax(y: Tensor, blocks: str = "tensor") -> Tensor:
    """``max |y|`` over each block, shaped like the exponents (same dtype as ``y``; NaN propagates)."""
    return extremes_amax(*block_extremes(y, blocks), exponent_shape(y.shape, blocks))


def power_of_two(e: Tensor) -> Tensor:
    """Exactly ``2.0 ** e`` in float64 for int64 ``-1022 <= e <= 1023``, from the bits of the float."""
    return ((e + 1023) << 52).view(torch.float64)


def needed_exponent(bound: Tensor) -> Tensor:
    """The least ``t >= MIN_EXPONENT`` with ``bound < 2**(t + MANTISSA_BITS)``, for a finite float64
    ``bound > 0`` (``-MANTISSA_BITS`` for zero, which any exponent holds)."""
    _, exponent = torch.frexp(bound)  # bound = m 2**E with 1/2 <= m < 1, so 2**(E-1) <= bound < 2**E
    return (exponent.to(torch.int64) - MANTISSA_BITS).clamp(min=MIN_EXPONENT)


def next_exponent(bound: Tensor, exponent: Tensor, empty: Tensor) -> tuple[Tensor, Tensor]:
    """The exponent for a new value bounded by ``bound`` that replaces one held at ``exponent``.

    Keeps ``exponent`` while ``t <= exponent <= t + HYSTERESIS`` with ``t = needed_exponent(bound)``,
    else moves to ``t``. Returns ``(new, old)``: ``old`` is ``exponent`` except for ``empty`` samples
    (all zero), whose exponent is relabelled to ``new`` at no cost, so that no bits are pushed for them.
    """
    needed = needed_exponent(bound)
    keep = (needed <= exponent) & (exponent <= needed + HYSTERESIS)
    new = torch.where(keep, exponent, needed)
    return new, torch.where(empty, new, exponent)


def within_limit(limit: float, *bounds: Tensor) -> Tensor:
    """Whether every bound is at most ``limit`` (:func:`.value_limit`), NaN failing (a bool tensor; no
    host sync, and pure, so that fused kernels use it too)."""
    return torch.stack([(b <= limit).all() for b in bounds]).all()


def range_error(where: str, dtype: torch.dtype) -> FixedPointRangeError:
    """The error for a value that :func:`within_limit` rejected."""
    return FixedPointRangeError(
        f"{where}: a value is not finite or beyond the range of the exact {dtype} arithmetic, "
        f"|x|, |v| < {value_limit(dtype):.4g} (a quarter of the largest {dtype}). Normalise the "
        "activations or check the blocks for overflow."
    )


def encode(y: Tensor, blocks: str = "tensor") -> tuple[Tensor, Tensor]:
    """Block-floating-point mantissas and exponents of a float32/float64 tensor.

    Returns ``(Y, e)`` with ``Y = round(y 2**-e)`` (half to even; exact wherever the grid ``2**e`` is
    finer than ``y``'s own spacing) and ``e = needed_exponent(max |y|)`` per block (:data:`.BLOCKS`).

    Raises
    ------
    FixedPointRangeError
        If ``y`` is not finite or beyond :func:`.value_limit`.
    """
    size = block_amax(y.detach(), check_blocks(blocks)).to(torch.float64)
    if not bool(within_limit(value_limit(y.dtype), size)):
        raise range_error("the input of the exact arithmetic", y.dtype)
    exponent = needed_exponent(size)
    mantissa = torch.round(y.detach().to(torch.float64) * power_of_two(-exponent)).to(torch.int64)
    return mantissa, exponent


def decode(mantissa: Tensor, scale: Tensor, dtype: torch.dtype) -> Tensor:
    """``Y 2**e`` as ``dtype``, given ``scale = power_of_two(e)``: rounded to float64, scaled exactly,
    then rounded to ``dtype``. The same fixed operations in every pass and in fused code."""
    return (mantissa.to(torch.float64) * scale).to(dtype)


def shift_word(word: Tensor, y: Tensor, shift: Tensor | None) -> tuple[Tensor, Tensor]:
    """Pure form of :func:`rescale` on the stack's live word: mantissas ``y`` moved by ``shift = new -
    old`` exponents (right: dropped bits pushed; left: exact). Returns ``(word, y)``; ``shift=None``
    (no exponent moved) returns them unchanged, so that fused kernels compile without the shifts."""
    if shift is None:
        return word, y
    word, y = push_bits_word(word, y, shift.clamp(min=0))
    return word, y << (-shift).clamp(min=0)


def unshift_word(word: Tensor, y: Tensor, shift: Tensor | None) -> tuple[Tensor, Tensor]:
    """Undo :func:`shift_word`."""
    if shift is None:
        return word, y
    return pop_bits_word(word, y >> (-shift).clamp(min=0), shift.clamp(min=0))


def rescale(stack: BitStack, y: Tensor, old: Tensor, new: Tensor) -> Tensor:
    """Move mantissas ``y`` from exponents ``old`` to ``new`` exactly: :func:`shift_word` on the stack's
    word, as one push of the widest right shift (even where it is zero); the caller ensures that a left
    shift fits. :func:`unscale` undoes it."""
    shift = new - old
    stack.reserve_bits(shift)
    stack.word, y = shift_word(stack.word, y, shift)
    return y


def unscale(stack: BitStack, y: Tensor, old: Tensor, new: Tensor) -> Tensor:
    """Undo :func:`rescale`: mantissas at ``new`` back to ``old``, popping the bits it pushed."""
    ops = stack.top_bits()
    stack.word, y = unshift_word(stack.word, y, new - old)
    stack.release(*ops)
    return y
