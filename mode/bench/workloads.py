"""What ``mode bench memory`` runs (:class:`~mode.bench.workloads.Workload`) and how it measures it
(:class:`~mode.bench.workloads.Settings`).

A workload is a kind of residual block, its sizes and an input. Every layer of a network has its own
block; the MomentumNet methods and the ResNet share one set of blocks, while memcnn's couplings get
blocks of the same kind on half the features, sized so that one coupling costs what one block costs
(:attr:`Workload.coupling_hidden`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

GIB = 2**30
KINDS = ("mlp", "conv", "transformer")


class Residual(torch.nn.Module):
    r"""The residual branch :math:`f(x) = \mathrm{layer}(x) - x` of a layer that adds its input itself.

    A pre-norm transformer layer computes :math:`x + g(x)`; the momentum step adds :math:`x` on its own,
    so its function is :math:`g`, recovered by subtracting the input (up to one float rounding).
    """

    def __init__(self, layer: torch.nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x) - x


@dataclass(frozen=True)
class Workload:
    """A kind of residual block with its sizes, and the shape of the benchmark input.

    ``dim`` is the width the block maps to itself (features, channels, model width) and the dimension
    memcnn's couplings split in two; ``hidden`` the block's inner width (the MLP's hidden layer, the
    channels between the two convolutions, the transformer's feed-forward width); ``size`` the side of
    the conv input's square image or the transformer's sequence length; ``heads`` the transformer's
    attention heads.
    """

    name: str
    kind: str
    batch: int
    dim: int
    hidden: int
    size: int = 0
    heads: int = 0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.dim % 2:
            raise ValueError(f"dim must be even (memcnn's couplings split it in two), got {self.dim}")

    @property
    def input_shape(self) -> tuple[int, ...]:
        """``(batch, dim)``, ``(batch, dim, size, size)`` or ``(batch, size, dim)`` (batch first)."""
        if self.kind == "mlp":
            return (self.batch, self.dim)
        if self.kind == "conv":
            return (self.batch, self.dim, self.size, self.size)
        return (self.batch, self.size, self.dim)

    @property
    def split_dim(self) -> int:
        """The dimension of the input that holds ``dim``: the one memcnn's couplings split."""
        return -1 if self.kind == "transformer" else 1

    @property
    def coupling_hidden(self) -> int:
        r"""Inner width of memcnn's :math:`F` and :math:`G` (blocks on ``dim / 2``) that makes one coupling
        do the multiply-adds of one block, with as many weights.

        MLP and conv: the same ``hidden`` (per sample or pixel, :math:`2 \cdot 2 (d/2) h = 2 d h`). The
        transformer's projections cost :math:`4 d^2` and its feed-forward :math:`2 d h` per token, so two
        layers of width :math:`d/2` match with :math:`h' = h + d`; their attention products, :math:`2 T d`
        per token, match as they are.
        """
        return self.hidden + self.dim if self.kind == "transformer" else self.hidden

    @property
    def saved_floats_per_layer(self) -> int:
        r"""The floats autograd keeps per block for the backward pass, weights aside (what
        :func:`~mode.bench.summary.memory_check` compares autograd's measured growth with).

        MLP: the block's input and the tanh output (which the second ``Linear`` saves too),
        :math:`B (d + h)`. Conv: the inputs of both convolutions and both batch norms,
        :math:`2 B s^2 (d + h)` (the batch norms' statistics aside). Transformer, as counted with
        saved-tensor hooks: eight tensors of width :math:`d` per token (layer norms, projections,
        attention), the feed-forward activation, attention's log-sum-exp per head and the two layer
        norms' mean and inverse deviation, :math:`B T (8 d + h + \mathrm{heads} + 4)`.
        """
        if self.kind == "mlp":
            return self.batch * (self.dim + self.hidden)
        if self.kind == "conv":
            return 2 * self.batch * self.size**2 * (self.dim + self.hidden)
        return self.batch * self.size * (8 * self.dim + self.hidden + self.heads + 4)

    def block(self, dim: int, hidden: int) -> torch.nn.Module:
        """A freshly initialised block of this workload's kind mapping ``dim`` to ``dim`` via ``hidden``."""
        nn = torch.nn
        if self.kind == "mlp":
            return nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, dim))
        if self.kind == "conv":
            return nn.Sequential(
                nn.Conv2d(dim, hidden, 3, padding=1, bias=False),
                nn.BatchNorm2d(hidden),
                nn.ReLU(),
                nn.Conv2d(hidden, dim, 3, padding=1, bias=False),
                nn.BatchNorm2d(dim),
            )
        layer = nn.TransformerEncoderLayer(
            dim, self.heads, dim_feedforward=hidden, dropout=0.0, batch_first=True, norm_first=True
        )
        return Residual(layer)

    def describe(self) -> dict:
        """The block, memcnn's coupling and the input in words, for ``results.json``."""
        half = self.dim // 2
        blocks = {
            "mlp": "Linear({d}, {h}) -> Tanh -> Linear({h}, {d})",
            "conv": "Conv2d({d}, {h}, 3, padding=1, bias=False) -> BatchNorm2d({h}) -> ReLU -> "
            "Conv2d({h}, {d}, 3, padding=1, bias=False) -> BatchNorm2d({d})",
            "transformer": "f(x) = layer(x) - x, layer = TransformerEncoderLayer(d_model={d}, nhead={n}, "
            "dim_feedforward={h}, dropout=0.0, batch_first=True, norm_first=True)",
        }[self.kind]
        coupling = blocks.format(d=half, h=self.coupling_hidden, n=self.heads)
        return {
            "block": blocks.format(d=self.dim, h=self.hidden, n=self.heads),
            "coupling": f"memcnn AdditiveCoupling split in two halves of {half} along dim "
            f"{self.split_dim}; Fm, Gm: {coupling}, own weights",
            "input_shape": list(self.input_shape),
        }


#: The benchmark's workloads at full size, in the order tables and figures list them.
FULL_WORKLOADS = (
    Workload("square-mlp", "mlp", batch=256, dim=256, hidden=256),
    Workload("small-mlp", "mlp", batch=32, dim=64, hidden=64),
    Workload("wide-mlp", "mlp", batch=256, dim=32, hidden=1024),
    Workload("conv", "conv", batch=32, dim=64, hidden=64, size=32),
    Workload("transformer", "transformer", batch=16, dim=256, hidden=1024, size=128, heads=4),
)
#: The same kinds at sizes that take a few seconds per depth.
QUICK_WORKLOADS = (
    Workload("square-mlp", "mlp", batch=64, dim=64, hidden=64),
    Workload("small-mlp", "mlp", batch=16, dim=16, hidden=16),
    Workload("wide-mlp", "mlp", batch=64, dim=16, hidden=256),
    Workload("conv", "conv", batch=4, dim=8, hidden=8, size=8),
    Workload("transformer", "transformer", batch=2, dim=32, hidden=64, size=16, heads=4),
)
WORKLOAD_NAMES = tuple(workload.name for workload in FULL_WORKLOADS)


@dataclass(frozen=True)
class Settings:
    """How the workloads are measured.

    ``repeats`` is the least number of timed training steps per method and depth; rounds go on until
    every method has spent ``min_seconds`` in timed steps (at most ``max_rounds``), so that shallow
    networks, whose steps take milliseconds, get as many samples as the noise of the machine needs.
    ``threads`` is the number of torch intra-op threads: on a machine shared with other jobs, more than
    one thread spends much of its time waiting for the others at every operation, which swamps the
    differences being measured.

    A cell (workload, method, depth) is skipped where its peak memory is estimated above ``memory_cap``
    bytes or one training step above ``step_budget_s`` seconds; a depth is not timed where its timing
    process is estimated above ``timing_budget_s``, and the float64 gradient references are left out
    where their steps are estimated above ``reference_budget_s`` (see :mod:`mode.bench.plan`).
    ``memory_workers`` memory processes run at once (each measures its own peak; their estimated peaks
    together stay within ``memory_cap``). Where the reversible cell is skipped, its forward pass alone
    still runs for the bit stack it fills if estimated within ``stack_budget_s``.
    """

    gamma: float = 0.9
    threads: int = 1
    repeats: int = 3
    min_seconds: float = 1.0
    max_rounds: int = 200
    memory_cap: int = 12 * GIB
    step_budget_s: float = 120.0
    timing_budget_s: float = 300.0
    reference_budget_s: float = 60.0
    memory_workers: int = 2
    stack_budget_s: float = 300.0


FULL_DEPTHS = (10, 100, 1000)
QUICK_DEPTHS = (10, 100)
#: The budgets of a full run.
FULL_SETTINGS = Settings()
#: Budgets that skip only what a quick run has no time for.
QUICK_SETTINGS = Settings(
    min_seconds=0.2, step_budget_s=10.0, timing_budget_s=30.0, reference_budget_s=5.0, stack_budget_s=10.0
)


def make_blocks(depth: int, workload: Workload, seed: int, device: torch.device) -> list[torch.nn.Module]:
    """``depth`` freshly initialised blocks of ``workload``, identical for a given seed in every process."""
    # Initialised on the CPU generator whatever the device, so a GPU run has the same weights.
    torch.manual_seed(seed)
    return [workload.block(workload.dim, workload.hidden).to(device) for _ in range(depth)]


def make_input(workload: Workload, seed: int, device: torch.device) -> torch.Tensor:
    """The benchmark input, standard normal of shape :attr:`Workload.input_shape`."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(workload.input_shape, generator=generator).to(device)
