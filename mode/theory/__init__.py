"""The machine checks of ``theory/``: one module of claims per topic, their registry and their runner.

The linear-map functions of ``theory/linear_maps.md`` are public here; ``mode check`` imports every
check module (:func:`mode.theory.runner.load_claims`).
"""

from mode.theory.linear_maps import (
    has_real_logarithm,
    m_eps,
    max_reachable_scale,
    momentum_flow_matrix,
    momentum_logarithm,
    psi,
)

__all__ = [
    "has_real_logarithm",
    "m_eps",
    "max_reachable_scale",
    "momentum_flow_matrix",
    "momentum_logarithm",
    "psi",
]
