"""momentum-ode: second-order neural ODEs and Momentum ResNets with exact, memory-free backpropagation."""

from importlib.metadata import PackageNotFoundError, version

from mode.continuous import ODESolution, odeint
from mode.integrate import integrate
from mode.nn import MomentumNet, from_momentum, to_momentum
from mode.ode import (
    as_vector_field,
    depth_from_step,
    eps_from_gamma,
    from_acceleration,
    gamma_from_eps,
    step_from_depth,
)
from mode.schemes import SCHEMES, NotInvertibleError

try:
    __version__ = version("momentum-ode")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "SCHEMES",
    "NotInvertibleError",
    "MomentumNet",
    "ODESolution",
    "as_vector_field",
    "depth_from_step",
    "eps_from_gamma",
    "from_momentum",
    "from_acceleration",
    "gamma_from_eps",
    "integrate",
    "odeint",
    "step_from_depth",
    "to_momentum",
]
