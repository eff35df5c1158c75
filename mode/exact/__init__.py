"""Exact fixed-point arithmetic for bit-for-bit reversible Momentum ResNet layers.

Activations are int64 fixed-point numbers (:mod:`mode.exact.fixed_point`) and the momentum multiply by
``gamma = n / 2**k`` keeps the bits it destroys in a :class:`BitStack` (:mod:`mode.exact.bit_stack`),
following Maclaurin, Duvenaud & Adams (2015), Alg. 3.
"""

from mode.exact.bit_stack import BitStack
from mode.exact.fixed_point import (
    LIMIT_BITS,
    FixedPointRangeError,
    RangeGuard,
    dequantize,
    dyadic_gamma,
    quantize,
    rational_gamma,
)

__all__ = [
    "LIMIT_BITS",
    "BitStack",
    "FixedPointRangeError",
    "RangeGuard",
    "dequantize",
    "dyadic_gamma",
    "quantize",
    "rational_gamma",
]
