"""Neural-network modules: ``MomentumNet`` and its exact reversible backward pass."""

from mode.nn.convert import MomentumModuleList, MomentumSequential, from_momentum, to_momentum
from mode.nn.layer_state import ReconstructionError
from mode.nn.momentum_net import BACKPROP_MODES, MomentumNet

__all__ = [
    "BACKPROP_MODES",
    "MomentumModuleList",
    "MomentumNet",
    "MomentumSequential",
    "ReconstructionError",
    "from_momentum",
    "to_momentum",
]
