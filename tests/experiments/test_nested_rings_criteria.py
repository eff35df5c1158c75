"""nested-rings: the whole-circle count and its homeomorphism ceiling, and the criterion (whole circles
above the ceiling, with margin) failing on an affine map (a linear field) and on a first-order flow, both at
or below the ceiling whatever their training.
"""

import math

import torch

import mode
import mode.experiments.nested_rings as nested_rings
from mode.experiments import run_experiment
from mode.experiments.crossing_1d import DEPTH, node_map
from tests.experiments.test_experiments import REDUCED

CRITERION = (
    f"momentum circles classified wholly correctly >= homeomorphism ceiling + {nested_rings.CIRCLE_MARGIN}"
)
CIRCLES = "momentum gamma=0.99 circles classified wholly correctly"
CEILING = "homeomorphism ceiling on circles classified wholly correctly (theory)"


def test_circles_count_whole_rings_only():
    def by_radius(points):
        # the ideal separator: label (k - 1) mod 2 of the ring whose mid-radius 1.5 k + 0.3 is nearest
        return (torch.round((points.norm(dim=1) - 0.3) / 1.5).long() - 1) % 2

    assert nested_rings.circles_separated(by_radius) == 1.0
    # a half-plane holds whole circles of one class only: those of rings 1 and 3, all on its side
    assert nested_rings.circles_separated(lambda points: (points[:, 0] > 100).long()) == 0.5

    # a thin cut through every ring: pointwise almost perfect, yet no circle is whole
    def cut(points):
        angle = torch.atan2(points[:, 1], points[:, 0]).abs()
        return by_radius(points) ^ (angle < math.pi / (2 * nested_rings.ANGLES)).long()

    assert nested_rings.circles_separated(cut) == 0.0
    # the held-out circles lie between the evaluated ones: a cut at angle 0 alone misses them
    assert nested_rings.circles_separated(cut, between=True) == 1.0
    # ...and a separator that is right only at the evaluated radii fails on them
    edges = torch.linspace(0, 1, nested_rings.RADII_PER_RING, dtype=torch.float64)

    def right_on_the_grid_only(points):
        u = (points.norm(dim=1) / 3 - 0.5 * torch.arange(1, 5, dtype=torch.float64)[:, None]) / 0.2
        on_grid = ((u[..., None] - edges).abs() < 1e-9).any(-1).any(0)
        return by_radius(points) ^ (~on_grid).long()

    assert nested_rings.circles_separated(right_on_the_grid_only) == 1.0
    assert nested_rings.circles_separated(right_on_the_grid_only, between=True) == 0.0


def _linear_field(generator: torch.Generator, **_) -> torch.nn.Module:
    # f(x) = Ax + b: the network's map is affine, its classes two half-planes
    return torch.nn.Linear(2, 2, dtype=torch.float64)


class _FirstOrderFlow(torch.nn.Module):
    """The time-15 map of x' = f(x) (a homeomorphism), in place of the 15 tied momentum steps."""

    def __init__(self, blocks, **_):
        super().__init__()
        self.f = blocks[0]
        self.blocks = blocks

    def forward(self, x):
        return node_map(self.f, x, T=float(DEPTH), rtol=1e-3)

    def initial_velocity(self, x):
        return torch.zeros_like(x)


def _run(monkeypatch, tmp_path, **settings):
    monkeypatch.setattr(nested_rings, "QUICK", {**REDUCED["nested-rings"][1], **settings})
    return run_experiment("nested-rings", quick=True, seed=0, out=tmp_path)


def test_the_criterion_fails_on_a_linear_field(monkeypatch, tmp_path):
    monkeypatch.setattr(nested_rings, "mlp", _linear_field)
    result = _run(monkeypatch, tmp_path, phases={"momentum": [[0.05, 300]]}, restarts=1)
    assert not result["criteria"][CRITERION]["passed"]
    assert result["metrics"][CIRCLES] <= result["metrics"][CEILING]


def test_the_criterion_fails_on_a_first_order_flow(monkeypatch, tmp_path):
    monkeypatch.setattr(mode, "MomentumNet", _FirstOrderFlow)
    result = _run(monkeypatch, tmp_path, phases={"momentum": [[0.01, 30]]}, restarts=1)
    assert not result["criteria"][CRITERION]["passed"]
    assert result["metrics"][CIRCLES] <= result["metrics"][CEILING]
