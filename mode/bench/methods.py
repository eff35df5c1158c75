"""The six training setups that ``mode bench memory`` compares, over the blocks of a workload.

The ResNet and the MomentumNet setups run the same blocks on the same input, so memory, time and
gradients differ only by the way the momentum recursion is differentiated. memcnn runs another model,
additive couplings of half-width blocks (:func:`make_couplings`), at the same cost per layer.
"""

from __future__ import annotations

import warnings

import momentumnet
import torch
from momentumnet.exact_rep_pytorch import TorchExactRep

from mode.bench.workloads import Workload, make_blocks
from mode.nn import MomentumNet

with warnings.catch_warnings():
    # memcnn 1.5.2 decorates its Function with torch.cuda.amp's deprecated custom_fwd at import time.
    warnings.simplefilter("ignore", FutureWarning)
    import memcnn
# ... and frees and restores inputs through Tensor.storage(), deprecated in torch 2 but still working.
warnings.filterwarnings("ignore", message="TypedStorage is deprecated", module=r"memcnn\.")

#: Method name -> description, in the order tables and figures list them.
METHODS = {
    "resnet": "ResNet (gamma = 0), autograd",
    "autograd": "MomentumNet, autograd",
    "reversible": "MomentumNet, reversible",
    "checkpoint": "MomentumNet, checkpointing (ceil(sqrt(L)) segments)",
    "momentumnet": f"momentumnet {momentumnet.__version__}, use_backprop=False",
    "memcnn": f"memcnn {memcnn.__version__}, AdditiveCoupling in InvertibleModuleWrapper(keep_input=False)",
}
#: The method every gradient and step time is compared with.
REFERENCE = "autograd"
#: The methods that run memcnn couplings rather than the workload's blocks.
COUPLED = ("memcnn",)


def family(method: str) -> str:
    """``"couplings"`` for the methods in :data:`COUPLED`, else ``"blocks"``: the layers ``method`` runs."""
    return "couplings" if method in COUPLED else "blocks"


def make_couplings(depth: int, workload: Workload, seed: int, device: torch.device) -> list[torch.nn.Module]:
    """``depth`` memcnn ``AdditiveCoupling`` layers whose ``Fm`` and ``Gm`` are blocks of ``workload``'s
    kind on half its ``dim``, with inner width :attr:`~mode.bench.workloads.Workload.coupling_hidden`."""
    torch.manual_seed(seed)
    half, hidden = workload.dim // 2, workload.coupling_hidden
    return [
        memcnn.AdditiveCoupling(
            workload.block(half, hidden), workload.block(half, hidden), split_dim=workload.split_dim
        ).to(device)
        for _ in range(depth)
    ]


def make_layers(kind: str, depth: int, workload: Workload, seed: int, device) -> list[torch.nn.Module]:
    """``depth`` layers of ``kind``, a :func:`family`: the workload's blocks or :func:`make_couplings`."""
    make = make_couplings if kind == "couplings" else make_blocks
    return make(depth, workload, seed, torch.device(device))


class Coupled(torch.nn.Module):
    """memcnn's couplings in sequence, each in an ``InvertibleModuleWrapper``.

    ``keep_input=False`` frees each wrapper's input during the forward pass and rebuilds it by inversion
    in the backward pass (memcnn's memory-saving mode); ``disable=True`` runs the couplings through plain
    autograd, the reference for that mode's gradients.
    """

    def __init__(self, couplings: list[torch.nn.Module], keep_input: bool = False, disable: bool = False):
        super().__init__()
        self.layers = torch.nn.ModuleList(
            memcnn.InvertibleModuleWrapper(coupling, keep_input=keep_input, disable=disable)
            for coupling in couplings
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The first wrapper frees its input's storage: that must be a copy, not the caller's tensor.
        x = x.clone()
        for layer in self.layers:
            x = layer(x)
        return x


def build(method: str, layers: list[torch.nn.Module], gamma: float) -> torch.nn.Module:
    """The network of ``method`` over ``layers`` from :func:`make_layers` (shared, not copied)."""
    if method == "resnet":
        return MomentumNet(layers, gamma=0.0, backprop="autograd")
    if method == "momentumnet":
        return momentumnet.MomentumNet(layers, gamma=gamma, use_backprop=False)
    if method == "memcnn":
        return Coupled(layers)
    if method in ("autograd", "reversible", "checkpoint"):
        return MomentumNet(layers, gamma=gamma, backprop=method)
    raise ValueError(f"unknown method {method!r}; expected one of {tuple(METHODS)}")


def autograd_net(kind: str, layers: list[torch.nn.Module], gamma: float) -> torch.nn.Module:
    """Plain autograd through the model over ``layers`` of ``kind`` (a :func:`family`): MomentumNet
    autograd for blocks, the couplings without memcnn's wrapper for couplings."""
    return Coupled(layers, disable=True) if kind == "couplings" else build(REFERENCE, layers, gamma)


def forward_loss(net: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``net`` on a fresh leaf copy of ``x``; return the leaf and the loss ``mean(x_L ** 2)``."""
    leaf = x.detach().requires_grad_(True)
    return leaf, net(leaf).square().mean()


def momentumnet_velocity_factor(gamma: float) -> float:
    """The factor by which ``momentumnet``'s memory-saving mode actually multiplies ``v``.

    Its exact representation rounds ``gamma`` to a fraction with denominator near ``2**16`` (0.9 becomes
    58983 / 65536), while the force keeps the factor ``1 - gamma``.
    """
    n, d = TorchExactRep(torch.zeros(())).float_to_rational(gamma)
    return n / d


class MomentumnetRule(torch.nn.Module):
    r"""Plain autograd through the update rule that ``momentumnet``'s memory-saving mode implements,

    .. math::  v \leftarrow \tilde\gamma v + (1 - \gamma) f_i(x), \qquad x \leftarrow x + v,

    with :math:`\tilde\gamma` from :func:`momentumnet_velocity_factor`: a reference for that package's
    forward pass, which the rounding of :math:`\gamma` makes (slightly) another model than ours.
    """

    def __init__(self, blocks: list[torch.nn.Module], gamma: float):
        super().__init__()
        self.blocks = torch.nn.ModuleList(blocks)
        self.gamma = gamma
        self.velocity_factor = momentumnet_velocity_factor(gamma)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = torch.zeros_like(x)
        for block in self.blocks:
            v = self.velocity_factor * v + (1 - self.gamma) * block(x)
            x = x + v
        return x
