"""``mode.analysis``, the computations behind the notebooks, on small cases with known answers."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

import mode
from mode.analysis import (
    CallCounter,
    at_time,
    benchmark_ratio,
    benchmark_series,
    convergence,
    depth_errors,
    fit_linear_map,
    growth_rate,
    load_benchmark,
    memory_growth,
    small_mass_gaps,
    stack_replay,
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


def _benchmark(rows, **extra) -> dict:
    return {
        "rows": [dict(zip(("workload", "method", "depth", "x"), row, strict=True)) for row in rows],
        **extra,
    }


def test_benchmark_series_sorts_skips_nulls_and_picks_parts():
    results = _benchmark(
        [
            ("w", "a", 30, {"p": 3.0}),
            ("w", "a", 10, {"p": 1.0}),
            ("w", "a", 20, None),
            ("w", "a", 40, {"p": None}),  # the benchmark's null part: gradients not finite
            ("w", "b", 10, {"p": math.pi}),
        ]
    )
    depths, values = benchmark_series(results, "a", "x", "p")
    assert depths.tolist() == [10, 30, 40] and values.tolist() == [1.0, 3.0, math.inf]


def test_benchmark_series_keeps_to_one_workload():
    results = _benchmark([("v", "a", 10, 1.0), ("w", "a", 10, 2.0), ("w", "a", 20, 4.0)])
    assert benchmark_series(results, "a", "x", workload="w")[1].tolist() == [2.0, 4.0]
    with pytest.raises(ValueError, match="pick one"):
        benchmark_series(results, "a", "x")


def test_benchmark_ratio_divides_at_the_depths_both_have():
    results = _benchmark([("w", "a", 10, 6.0), ("w", "a", 20, 8.0), ("w", "b", 20, 2.0), ("w", "b", 30, 1.0)])
    depths, ratios = benchmark_ratio(results, "a", "b", "x", workload="w")
    assert depths.tolist() == [20] and ratios.tolist() == [4.0]


def test_load_benchmark_selects_one_workload(tmp_path):
    results = {
        **_benchmark([("v", "a", 10, 1.0), ("w", "a", 10, 2.0)]),
        "settings": {"workloads": ["v", "w"], "gamma": 0.9},
        "skipped": [{"workload": "v", "method": "a", "depth": 100}],
        **{key: [] for key in ("probes", "timings", "ratios")},
        **{key: {"v": key + " of v", "w": key + " of w"} for key in ("workloads", "compile", "targets")},
        "memory_check": {"v": None, "w": None},
    }
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    assert load_benchmark(path) == results
    w = load_benchmark(path, workload="w")
    assert w["settings"] == {"workloads": ["w"], "gamma": 0.9} and w["skipped"] == []
    assert w["rows"] == results["rows"][1:] and w["targets"] == {"w": "targets of w"}
    with pytest.raises(ValueError, match="no workload"):
        load_benchmark(path, workload="u")


def test_memory_growth_per_layer_with_and_without_the_bit_stack():
    rows = [
        {"workload": "w", "method": "r", "depth": d, "activation_bytes": a, "stack_bytes": s}
        for d, a, s in ((10, 1000, 100), (110, 2200, 1000))
    ]
    assert memory_growth({"rows": rows}, "r") == 12.0
    assert memory_growth({"rows": rows}, "r", bit_stack=False) == 3.0
    with pytest.raises(ValueError, match="two"):
        memory_growth({"rows": rows[:1]}, "r")


def test_stack_replay_holds_its_stack_within_fp5():
    from mode.bench.workloads import Workload

    workload = Workload("w", "mlp", batch=4, dim=8, hidden=16)
    results = {
        "workloads": {"w": {**dataclasses.asdict(workload), "block": "described"}},
        "seed": 0,
        "settings": {"gamma": 0.9, "threads": 1},
    }
    replay = stack_replay(results, "w", 200)
    assert replay["lower"] <= replay["bits"] < replay["upper"]
    assert replay["multiply_bits"] == pytest.approx(200 * math.log2(1 / 0.9), rel=1e-6)
    assert replay["exponent_bits"] > 0 and replay["bits"] > 64  # exponents moved, chunks spilled
