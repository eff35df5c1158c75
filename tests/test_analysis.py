"""``mode.analysis``, the computations behind the notebooks, on small cases with known answers."""

import math

import numpy as np
import pytest
import torch

import mode
from mode.analysis import (
    CallCounter,
    at_time,
    benchmark_series,
    convergence,
    depth_errors,
    fit_linear_map,
    growth_rate,
    small_mass_gaps,
)
from mode.theory import psi


def test_growth_rate_recovers_an_exponential():
    depths = np.arange(10, 60, 10)
    assert growth_rate(depths, 1e-9 * np.exp(0.25 * depths)) == pytest.approx(0.25)


def test_call_counter_counts_and_passes_time():
    counted = CallCounter(lambda x, t: x * t)
    assert float(counted(torch.tensor(2.0), torch.tensor(3.0))) == 6.0
    mode.integrate(counted, torch.ones(2), eps=0.5, steps=7, scheme="rk4")
    assert counted.calls == 1 + 7 * 4


def test_at_time_freezes_the_time_argument():
    block = at_time(lambda x, t: x + t, 0.5)
    assert torch.equal(block(torch.zeros(3)), torch.full((3,), 0.5))


def test_convergence_of_a_linear_problem_has_the_declared_orders():
    # eps x'' + x' = -x with x(0) = 1, x'(0) = 0: roots of eps r^2 + r + 1 = 0
    eps, T = 0.5, 1.0
    r1, r2 = np.roots([eps, 1.0, 1.0])
    exact = ((r2 * np.exp(r1 * T) - r1 * np.exp(r2 * T)) / (r2 - r1)).real
    x0 = torch.ones(1, dtype=torch.float64)
    table = convergence(lambda x: -x, x0, (20, 40, 80), eps=eps, reference=[exact])
    for name, row in table.items():
        assert row["order"] == pytest.approx(mode.SCHEMES[name].order, abs=0.15)
        assert row["evaluations"] == [mode.SCHEMES[name].evals_per_step * L for L in (20, 40, 80)]


def test_small_mass_gaps_and_depth_errors_shrink():
    x0 = torch.tensor([0.5], dtype=torch.float64)
    gaps = small_mass_gaps(torch.tanh, x0, [0.04, 0.02])
    assert gaps["position"][1] < gaps["position"][0] and gaps["velocity"][1] < gaps["velocity"][0]
    errors = depth_errors(torch.sin, x0, [8, 16], eps=0.5)
    assert errors[1] == pytest.approx(errors[0] / 2, rel=0.2)


def test_fit_linear_map_reaches_a_reachable_scalar():
    A, history = fit_linear_map([[-0.3]], "momentum", eps=1.0, steps=250, lr=0.5)
    assert history[-1] < 1e-8
    assert float(psi(A[0, 0], 1.0)) == pytest.approx(-0.3, abs=1e-4)
    with pytest.raises(ValueError, match="eps"):
        fit_linear_map([[1.0]], "momentum")


def test_benchmark_series_sorts_skips_nulls_and_picks_parts():
    results = {
        "rows": [
            {"method": "a", "depth": 30, "x": {"p": 3.0}},
            {"method": "a", "depth": 10, "x": {"p": 1.0}},
            {"method": "a", "depth": 20, "x": None},
            {"method": "b", "depth": 10, "x": {"p": math.pi}},
        ]
    }
    depths, values = benchmark_series(results, "a", "x", "p")
    assert depths.tolist() == [10, 30] and values.tolist() == [1.0, 3.0]
