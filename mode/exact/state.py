"""The exact phase-space state ``(x, v)`` of a reversible integration: block floating point plus bit stack.

A scheme's exact step (:meth:`mode.schemes.momentum.MomentumCoefficients.exact_step`) maps one state to
the next bijectively; this module holds what it acts on, and what every exact scheme shares: encoding the
float inputs, decoding, exponent changes with their record, and a fingerprint to check a walk back.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from mode.exact.bit_stack import BitStack
from mode.exact.block_float import (
    block_amax,
    decode,
    encode,
    exponent_shape,
    power_of_two,
    rescale,
    unscale,
)


@dataclass(frozen=True)
class Rescaling:
    """One step's exponent change: the exponents before it, the shifts applied (zero for blocks that
    were all zero, which were relabelled for free), and whether the step ran as one fused push."""

    x_exp: Tensor
    v_exp: Tensor
    x_shift: Tensor
    v_shift: Tensor
    fused: bool


class SparseLog:
    """A stack of per-step entries, mostly ``None``, that stores only the others: ``append``, ``pop``,
    ``[-1]`` and ``len`` as a list's, at a cost per entry that is not ``None`` (a solve of thousands of
    steps changes an exponent a few times)."""

    def __init__(self) -> None:
        self._length = 0
        self._entries: dict[int, Rescaling] = {}

    def append(self, entry: Rescaling | None) -> None:
        if entry is not None:
            self._entries[self._length] = entry
        self._length += 1

    def pop(self) -> Rescaling | None:
        if not self._length:
            raise IndexError("pop from an empty log")
        self._length -= 1
        return self._entries.pop(self._length, None)

    def __getitem__(self, index: int) -> Rescaling | None:
        if index != -1 or not self._length:
            raise IndexError("a SparseLog reads its last entry only, [-1]")
        return self._entries.get(self._length - 1)

    def __len__(self) -> int:
        return self._length

    def copy(self) -> SparseLog:
        twin = SparseLog()
        twin._length, twin._entries = self._length, dict(self._entries)
        return twin


@dataclass
class ExactState:
    r"""Mantissas and exponents of :math:`x = X 2^a`, :math:`v = V 2^b`, and the bit stack.

    ``blocks`` says what shares an exponent (:data:`~mode.exact.block_float.BLOCKS`: the whole tensor or
    each sample). ``rescalings`` holds one entry per step (``None``, not stored, where no exponent changed),
    so the walk back knows every exponent without reading the data. The steps update the mantissas and the
    stack's word in place; exponent tensors are replaced, never modified.
    """

    x: Tensor
    x_exp: Tensor
    v: Tensor
    v_exp: Tensor
    stack: BitStack
    dtype: torch.dtype
    blocks: str = "tensor"
    rescalings: SparseLog = field(default_factory=SparseLog)
    #: What a scheme derived from the current exponent tensors, with those tensors, for it to reuse while
    #: they are current (e.g. :meth:`mode.schemes.momentum.MomentumCoefficients.scales`).
    derived: tuple | None = field(default=None, repr=False, compare=False)

    @classmethod
    def encode(cls, x0: Tensor, v0: Tensor | None, blocks: str = "tensor") -> ExactState:
        """Encode float32/float64 inputs with one exponent per ``blocks``; ``v0=None`` is an exact zero.

        Raises
        ------
        FixedPointRangeError
            If an input is not finite or beyond the range of the exact arithmetic.
        """
        x, x_exp = encode(x0, blocks)  # encode checks blocks
        if v0 is None:
            v, v_exp = (
                torch.zeros_like(x),
                torch.zeros(exponent_shape(x.shape, blocks), dtype=torch.int64, device=x.device),
            )
        else:
            v, v_exp = encode(v0, blocks)
        return cls(x, x_exp, v, v_exp, BitStack(x), x0.dtype, blocks)

    def decode_x(self) -> Tensor:
        """:math:`x` in the state's dtype."""
        return decode(self.x, power_of_two(self.x_exp), self.dtype)

    def decode_v(self, dtype: torch.dtype | None = None) -> Tensor:
        """:math:`v` in ``dtype`` (default the state's)."""
        return decode(self.v, power_of_two(self.v_exp), dtype or self.dtype)

    def rescale_v(self, old: Tensor, new: Tensor) -> None:
        """Move :math:`V` to exponents ``new`` (``old``: the exponents the shift starts from)."""
        self.v, self.v_exp = rescale(self.stack, self.v, old, new), new

    def rescale_x(self, old: Tensor, new: Tensor) -> None:
        """Move :math:`X` to exponents ``new``."""
        self.x, self.x_exp = rescale(self.stack, self.x, old, new), new

    def unscale_x(self, rescaling: Rescaling) -> None:
        """Undo :meth:`rescale_x` of ``rescaling``."""
        old = self.x_exp - rescaling.x_shift
        self.x, self.x_exp = unscale(self.stack, self.x, old, self.x_exp), rescaling.x_exp

    def unscale_v(self, rescaling: Rescaling) -> None:
        """Undo :meth:`rescale_v` of ``rescaling``."""
        old = self.v_exp - rescaling.v_shift
        self.v, self.v_exp = unscale(self.stack, self.v, old, self.v_exp), rescaling.v_exp

    def checksum(self) -> Tensor:
        """A fingerprint of the represented values (int64 sums wrap identically in every pass): the
        mantissas, and the exponents of the blocks that are not all zero (those have no scale)."""
        x_live = (block_amax(self.x, self.blocks) != 0).to(torch.int64)
        v_live = (block_amax(self.v, self.blocks) != 0).to(torch.int64)
        return torch.stack(
            [
                self.x.sum(),
                (self.v * 3 + self.x).sum(),
                (self.x_exp * x_live).sum(),
                (self.v_exp * v_live).sum(),
            ]
        )

    def clone(self) -> ExactState:
        """An independent state to walk back (the steps update the mantissas in place)."""
        return replace(
            self,
            x=self.x.clone(),
            v=self.v.clone(),
            stack=self.stack.copy(),
            rescalings=self.rescalings.copy(),
        )
