"""Exact arithmetic for bit-for-bit reversible integration.

States are held in block floating point (:mod:`mode.exact.block_float`: int64 mantissas, one exponent
per tensor or per sample, changed exactly) and the multiply by ``gamma = n / 2**k`` and every right shift
keep the bits they destroy in a :class:`BitStack` (:mod:`mode.exact.bit_stack`), following Maclaurin,
Duvenaud & Adams (2015), Alg. 3. :mod:`mode.exact.fusion` compiles the per-layer kernels.
"""

from mode.exact.bit_stack import BitStack
from mode.exact.block_float import FixedPointRangeError, decode, encode
from mode.exact.fusion import compile_enabled, compile_seconds, compiling, set_compile
from mode.exact.gamma import dyadic_gamma, rational_gamma
from mode.exact.state import ExactState

__all__ = [
    "BitStack",
    "ExactState",
    "FixedPointRangeError",
    "compile_enabled",
    "compile_seconds",
    "compiling",
    "decode",
    "dyadic_gamma",
    "encode",
    "rational_gamma",
    "set_compile",
]
