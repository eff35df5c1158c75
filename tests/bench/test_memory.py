import json

import pytest

from mode.bench.memory import run_memory_benchmark
from mode.bench.methods import METHODS, Workload
from mode.cli import main

DEPTHS = (2, 10)
#: Autograd keeps batch * (dim + hidden) floats per layer, 1.1 MB here: far above the noise of RSS.
TINY = Workload(batch=512, dim=32, hidden=512, repeats=1, min_seconds=0.0)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("memory_depth")
    return out, run_memory_benchmark(depths=DEPTHS, seed=3, out=out, workload=TINY)


def _row(results, method, depth):
    (row,) = [r for r in results["rows"] if r["method"] == method and r["depth"] == depth]
    return row


def test_writes_results_and_figures(run):
    out, results = run
    written = json.loads((out / "results.json").read_text())
    assert written == json.loads(json.dumps(results))
    assert {
        "settings",
        "seed",
        "environment",
        "definitions",
        "rows",
        "targets",
        "memory_check",
    } <= written.keys()
    assert written["seed"] == 3
    assert {"torch", "momentum-ode", "momentumnet"} <= written["environment"]["versions"].keys()
    assert written["environment"]["versions"]["momentumnet"] == "0.10"
    assert {(r["method"], r["depth"]) for r in written["rows"]} == {(m, d) for m in METHODS for d in DEPTHS}
    assert set(written["targets"]) == {
        "reversible_memory_flat",
        "bit_stack_bits",
        "step_time",
        "gradient_accuracy",
    }
    assert all(isinstance(t["met"], bool) for t in written["targets"].values())
    for name in ("memory", "step_time", "grad_error"):
        assert (out / f"{name}.png").stat().st_size > 10_000
    assert not list(out.glob("*.tmp"))


def test_autograd_memory_grows_with_depth_and_reversible_does_not(run):
    _, results = run
    autograd = [_row(results, "autograd", d)["activation_bytes"] for d in DEPTHS]
    reversible = [_row(results, "reversible", d)["activation_bytes"] for d in DEPTHS]
    per_layer = TINY.batch * (TINY.dim + TINY.hidden) * 4
    # Autograd grows by at least half the activations it must store...
    assert autograd[1] - autograd[0] > 0.5 * (DEPTHS[1] - DEPTHS[0]) * per_layer
    # ...while the reversible mode stays flat apart from its bit stack (a few bits per coordinate and layer).
    assert reversible[1] - reversible[0] < 0.05 * (autograd[1] - autograd[0])
    assert reversible[1] < autograd[1] / 2


def test_autograd_growth_matches_what_it_stores(run):
    # Validates the measurement itself: the slope is batch * (dim + hidden) float32 per layer.
    check = run[1]["memory_check"]
    assert check["expected_bytes_per_layer"] == TINY.batch * (TINY.dim + TINY.hidden) * 4
    assert 0.8 < check["ratio"] < 1.2


def test_gradients_match_autograd(run):
    _, results = run
    for depth in DEPTHS:
        assert max(_row(results, "reversible", depth)["grad_error"].values()) < 1e-5
        assert max(_row(results, "checkpoint", depth)["grad_error"].values()) < 1e-6
        assert _row(results, "resnet", depth)["grad_error"] is None
        official = _row(results, "momentumnet", depth)
        assert {"grad_error", "grad_error_own_rule"} <= official.keys()
        assert official["step_s"] > 0


def test_bit_stack_is_reported(run):
    _, results = run
    row = _row(results, "reversible", DEPTHS[1])
    assert row["stack_bytes"] > 0
    # At least the information that the multiplications by gamma destroyed, in whole 64-bit words.
    assert row["stack_bits_per_coordinate"] >= max(64, row["stack_bits_bound"])


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "memory", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for option in ("--quick", "--depths", "--seed", "--out", "--device", "--threads"):
        assert option in text


def test_timed_rounds_go_on_until_min_seconds_or_max_rounds():
    from dataclasses import replace

    from mode.bench.steps import measure_depth

    small = replace(TINY, batch=16, hidden=32)
    capped = measure_depth(2, replace(small, repeats=1, min_seconds=1e9, max_rounds=3), seed=0, device="cpu")
    assert {len(row["step_s_all"]) for row in capped.values()} == {3}
    enough = measure_depth(2, replace(small, repeats=2, min_seconds=0.0), seed=0, device="cpu")
    assert {len(row["step_s_all"]) for row in enough.values()} == {2}
