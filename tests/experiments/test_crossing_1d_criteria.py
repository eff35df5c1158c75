"""crossing-1d's gamma = 0.9 criterion fails on a net that learned only a linear field.

The bound it uses is the trained discrete net's (4/175, any linear map), not the linear momentum flow's
(0.0273 at eps = 10, T = 15), which a linear field of the 15-layer, h = 1 net already beats.
"""

import pytest
import torch

import mode.experiments.crossing_1d as crossing_1d
from mode.experiments import run_experiment
from mode.theory.one_dimensional import linear_momentum_fit
from tests.experiments.test_experiments import REDUCED

GAMMA = 0.9
CRITERION = f"momentum gamma={GAMMA} MSE < {crossing_1d.LINEAR_MARGIN} x best linear map (4/175)"


def test_a_linear_field_of_the_net_beats_the_linear_flow_bound():
    x, w = crossing_1d.quadrature()
    best = crossing_1d.best_linear_map_mse(x, w)
    assert best == pytest.approx(4 / 175, rel=1e-12)
    flow = linear_momentum_fit(eps=1 / (1 - GAMMA), T=float(crossing_1d.DEPTH))[0]
    # lambda values of the degree-15 slope polynomial: one below the flow's bound, one at every linear map's
    for lam, slope, mse in ((-9.031, -0.5067, 0.0258), (-23.1182568, -0.6, 4 / 175)):
        c = float(crossing_1d.linear_net_slopes(lam, GAMMA)[0])
        assert c == pytest.approx(slope, abs=1e-4)
        assert c**2 / 3 + 2 * c / 5 + 1 / 7 == pytest.approx(mse, abs=1e-4)
        assert mse < flow


def _linear_field(generator: torch.Generator, **_) -> torch.nn.Module:
    # The deliberately wrong model: f(x) = lam x + beta, which cannot bend the map.
    field = torch.nn.Linear(1, 1, dtype=crossing_1d.DTYPE)
    with torch.no_grad():
        for parameter in field.parameters():
            torch.nn.init.uniform_(parameter, -1.0, 1.0, generator=generator)
    return field


def test_the_gamma_09_criterion_fails_on_a_linear_field(monkeypatch, tmp_path):
    monkeypatch.setattr(crossing_1d, "QUICK", REDUCED["crossing-1d"][1])
    monkeypatch.setattr(crossing_1d, "mlp", _linear_field)
    result = run_experiment("crossing-1d", quick=True, seed=0, out=tmp_path)
    verdict = result["criteria"][CRITERION]
    assert not verdict["passed"]
    # No linear field does better than the best linear map, whatever training found.
    assert verdict["value"] >= result["metrics"]["best linear map MSE 4/175 (theory)"] - 1e-12
