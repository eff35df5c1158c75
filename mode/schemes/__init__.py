"""One-step discretizations of :math:`\\varepsilon \\ddot x + \\dot x = f(x, t)` and their registry.

``SCHEMES`` maps a name to a scheme object with ``order``, ``invertible``, ``step(f, x, v, t, h, eps)`` and
``inverse(f, x, v, t, h, eps)``.
"""

from mode.schemes.base import NotInvertibleError, Scheme
from mode.schemes.leapfrog import LeapfrogScheme
from mode.schemes.momentum import ExpMomentumScheme, MomentumScheme
from mode.schemes.runge_kutta import EULER, HEUN, RK4, ExplicitRungeKutta

SCHEMES: dict[str, Scheme] = {
    s.name: s for s in (MomentumScheme(), ExpMomentumScheme(), EULER, LeapfrogScheme(), HEUN, RK4)
}


def get_scheme(scheme) -> Scheme:
    """Look a scheme up by name (or pass a :class:`Scheme` through).

    Raises ``TypeError`` when ``scheme`` is neither a name nor a :class:`Scheme`, and ``ValueError`` for
    an unknown name; both list the names of :data:`~mode.SCHEMES`.
    """
    if isinstance(scheme, Scheme):
        return scheme
    if not isinstance(scheme, str):
        raise TypeError(
            f"scheme must be a name, one of {sorted(SCHEMES)}, or a Scheme, got {type(scheme).__name__} "
            f"{scheme!r}"
        )
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {sorted(SCHEMES)}, got {scheme!r}")
    return SCHEMES[scheme]


__all__ = ["SCHEMES", "Scheme", "ExplicitRungeKutta", "NotInvertibleError", "get_scheme"]
