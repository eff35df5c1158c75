"""The workload and the five training setups that ``mode bench memory`` compares.

Every setup runs the same residual blocks on the same input, so memory, time and gradients differ only
by the way the momentum recursion is differentiated.
"""

from __future__ import annotations

from dataclasses import dataclass

import momentumnet
import torch
from momentumnet.exact_rep_pytorch import TorchExactRep

from mode.nn import MomentumNet

#: Method name -> description, in the order tables and figures list them.
METHODS = {
    "resnet": "ResNet (gamma = 0), autograd",
    "autograd": "MomentumNet, autograd",
    "reversible": "MomentumNet, reversible",
    "checkpoint": "MomentumNet, checkpointing (ceil(sqrt(L)) segments)",
    "momentumnet": f"momentumnet {momentumnet.__version__}, use_backprop=False",
}
#: The method every gradient and step time is compared with.
REFERENCE = "autograd"


@dataclass(frozen=True)
class Workload:
    """Sizes of a run: ``Linear(dim, hidden) -> tanh -> Linear(hidden, dim)`` blocks, one per layer with
    its own weights, on a ``(batch, dim)`` float32 input, with momentum ``gamma``.

    ``repeats`` is the least number of timed training steps per method and depth; rounds go on until
    every method has spent ``min_seconds`` in timed steps (at most ``max_rounds``), so that shallow
    networks, whose steps take milliseconds, get as many samples as the noise of the machine needs.
    ``threads`` is the number of torch intra-op threads: on a machine shared with other jobs, more than
    one thread spends much of its time waiting for the others at every operation, which swamps the
    differences being measured.
    """

    batch: int
    dim: int
    hidden: int
    gamma: float = 0.9
    repeats: int = 3
    threads: int = 1
    min_seconds: float = 1.0
    max_rounds: int = 200


def make_blocks(depth: int, workload: Workload, seed: int, device: torch.device) -> list[torch.nn.Module]:
    """``depth`` freshly initialised blocks, identical for a given seed in every process."""
    # Initialised on the CPU generator whatever the device, so a GPU run has the same weights.
    torch.manual_seed(seed)
    blocks = [
        torch.nn.Sequential(
            torch.nn.Linear(workload.dim, workload.hidden),
            torch.nn.Tanh(),
            torch.nn.Linear(workload.hidden, workload.dim),
        )
        for _ in range(depth)
    ]
    return [block.to(device) for block in blocks]


def make_input(workload: Workload, seed: int, device: torch.device) -> torch.Tensor:
    """The benchmark input, a standard normal ``(batch, dim)`` tensor."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(workload.batch, workload.dim, generator=generator).to(device)


def build(method: str, blocks: list[torch.nn.Module], gamma: float) -> torch.nn.Module:
    """The network of ``method`` over ``blocks`` (the modules are shared, not copied)."""
    if method == "resnet":
        return MomentumNet(blocks, gamma=0.0, backprop="autograd")
    if method == "momentumnet":
        return momentumnet.MomentumNet(blocks, gamma=gamma, use_backprop=False)
    if method in ("autograd", "reversible", "checkpoint"):
        return MomentumNet(blocks, gamma=gamma, backprop=method)
    raise ValueError(f"unknown method {method!r}; expected one of {tuple(METHODS)}")


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
