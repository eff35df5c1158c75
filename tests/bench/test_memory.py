import json
from dataclasses import replace

import pytest
import torch
from tqdm.auto import tqdm

from mode.bench.memory import _Sweep, run_memory_benchmark, select_workloads
from mode.bench.methods import METHODS, Coupled, make_couplings
from mode.bench.peak import measure_point, measure_stack
from mode.bench.plan import Estimate, estimate, extrapolate, float64_reason, skip_reason
from mode.bench.steps import measure_depth
from mode.bench.summary import evaluate_targets
from mode.bench.workloads import FULL_WORKLOADS, GIB, QUICK_WORKLOADS, Settings, Workload, make_blocks
from mode.cli import main

DEPTHS = (2, 10)
#: Every workload at a few kilobytes, but wide-mlp: autograd keeps batch * (dim + hidden) floats per layer
#: there, 1.1 MB, far above the noise of RSS.
TINY = (
    Workload("square-mlp", "mlp", batch=8, dim=8, hidden=8),
    Workload("small-mlp", "mlp", batch=4, dim=4, hidden=4),
    Workload("wide-mlp", "mlp", batch=512, dim=32, hidden=512),
    Workload("conv", "conv", batch=2, dim=4, hidden=4, size=4),
    Workload("transformer", "transformer", batch=2, dim=8, hidden=16, size=4, heads=2),
)
#: One memory process at a time: a second server would cost more start-up than it saves at these sizes
#: (the pairing is tested with stand-in servers).
SETTINGS = Settings(repeats=1, min_seconds=0.0, memory_workers=1)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("memory_depth")
    with pytest.MonkeyPatch.context() as patch:
        # Compiling the reversible kernels costs seconds in every fresh process; the benchmark's
        # mechanics are the same without (where the library offers the switch).
        patch.setenv("MODE_COMPILE", "0")
        results = run_memory_benchmark(workloads=TINY, depths=DEPTHS, seed=3, out=out, settings=SETTINGS)
    return out, results


def _row(results, workload, method, depth):
    (row,) = [
        r for r in results["rows"] if (r["workload"], r["method"], r["depth"]) == (workload, method, depth)
    ]
    return row


def test_writes_results_and_figures(run):
    out, results = run
    written = json.loads((out / "results.json").read_text())
    assert written == json.loads(json.dumps(results))
    assert {
        "settings",
        "workloads",
        "seed",
        "environment",
        "definitions",
        "rows",
        "skipped",
        "ratios",
        "compile",
        "targets",
        "memory_check",
    } <= written.keys()
    assert written["seed"] == 3
    versions = written["environment"]["versions"]
    assert versions["momentumnet"] == "0.10" and versions["memcnn"] == "1.5.2" and versions["torch"]
    assert list(written["workloads"]) == [w.name for w in TINY]
    assert "Fm, Gm" in written["workloads"]["conv"]["coupling"]
    for name in [w.name for w in TINY] + ["summary"]:
        assert (out / f"{name}.png").stat().st_size > 10_000
    assert not list(out.glob("*.tmp"))


def test_every_cell_is_measured_or_skipped_with_a_reason(run):
    _, results = run
    measured = [(r["workload"], r["method"], r["depth"]) for r in results["rows"]]
    skipped = [(c["workload"], c["method"], c["depth"]) for c in results["skipped"]]
    cells = {(w.name, m, d) for w in TINY for m in METHODS for d in DEPTHS}
    assert sorted(measured + skipped) == sorted(cells)
    assert all(cell["reason"] for cell in results["skipped"])
    # At these sizes every cell fits and every depth is timed: a skip here is a failure (its reason says
    # which).
    assert results["skipped"] == []
    assert [t["reason"] for t in results["timings"]] == [None] * len(TINY) * len(DEPTHS)
    assert all(row["loss_finite"] for row in results["rows"])


def test_ratios_come_from_the_same_run(run):
    _, results = run
    assert len(results["ratios"]) == len(TINY) * len(DEPTHS)
    for entry in results["ratios"]:
        step = {m: _row(results, entry["workload"], m, entry["depth"])["step_s"] for m in METHODS}
        for pair in (
            "reversible/autograd",
            "reversible/checkpoint",
            "checkpoint/autograd",
            "memcnn/autograd",
        ):
            numerator, denominator = pair.split("/")
            assert entry[pair] == step[numerator] / step[denominator]
        row = _row(results, entry["workload"], "reversible", entry["depth"])
        assert row["time_ratio_autograd"] == entry["reversible/autograd"]


def test_autograd_memory_grows_with_depth_and_reversible_does_not(run):
    _, results = run
    autograd = [_row(results, "wide-mlp", "autograd", d)["activation_bytes"] for d in DEPTHS]
    reversible = [_row(results, "wide-mlp", "reversible", d)["activation_bytes"] for d in DEPTHS]
    wide = TINY[2]
    per_layer = wide.batch * (wide.dim + wide.hidden) * 4
    # Autograd grows by at least half the activations it must store...
    assert autograd[1] - autograd[0] > 0.5 * (DEPTHS[1] - DEPTHS[0]) * per_layer
    # ...while the reversible mode stays flat apart from its bit stack (a few bits per coordinate and layer).
    assert reversible[1] - reversible[0] < 0.05 * (autograd[1] - autograd[0])
    assert reversible[1] < autograd[1] / 2


def test_autograd_growth_matches_what_it_stores(run):
    # Validates the measurement itself: the slope is batch * (dim + hidden) float32 per layer.
    check = run[1]["memory_check"]["wide-mlp"]
    assert check["expected_bytes_per_layer"] == TINY[2].batch * (TINY[2].dim + TINY[2].hidden) * 4
    assert 0.8 < check["ratio"] < 1.2


def test_gradients_match_their_references(run):
    _, results = run
    for workload in TINY:
        for depth in DEPTHS:
            row = {m: _row(results, workload.name, m, depth) for m in METHODS}
            assert max(row["reversible"]["grad_error"].values()) < 1e-5
            assert max(row["checkpoint"]["grad_error"].values()) < 1e-6
            # memcnn against plain autograd through its own couplings, in float32 and (float32 rounding,
            # as for autograd) in float64
            assert max(row["memcnn"]["grad_error"].values()) < 1e-5
            assert max(row["memcnn"]["grad_error_float64"].values()) < 1e-4
            assert row["resnet"]["grad_error"] is None
            assert {"grad_error", "grad_error_own_rule"} <= row["momentumnet"].keys()
            assert max(row["autograd"]["grad_error_float64"].values()) < 1e-4


def test_bit_stack_is_reported(run):
    _, results = run
    row = _row(results, "wide-mlp", "reversible", DEPTHS[1])
    assert row["stack_bytes"] > 0
    # At least the information that the multiplications by gamma destroyed, in whole 64-bit words.
    assert row["stack_bits_per_coordinate"] >= max(64, row["stack_bits_bound"])


def test_targets_are_evaluated_per_workload(run):
    _, results = run
    common = {"reversible_memory_flat", "bit_stack_bits", "reversible_over_checkpoint", "gradient_accuracy"}
    extra = {"square-mlp": {"step_time", "memory_vs_memcnn"}, "conv": {"step_time"}}
    assert list(results["targets"]) == [w.name for w in TINY]
    for name, targets in results["targets"].items():
        assert set(targets) == common | extra.get(name, set())
        for target in targets.values():
            assert isinstance(target["met"], bool)
            assert target["value"] is not None and set(target["by_depth"]) <= set(DEPTHS)
            assert target["met"] == (target["value"] <= target["threshold"])
    assert results["targets"]["conv"]["reversible_over_checkpoint"]["threshold"] == 1.10


@pytest.mark.parametrize(("ratio", "met"), [(1.5, True), (2.5, False)])
def test_the_gradient_target_allows_twice_autograds_error_and_no_more(ratio, met):
    def row(method, error):
        return {
            "workload": "conv",
            "method": method,
            "depth": 10,
            "grad_error_float64": {"input": error, "parameters": error / 10},
            "activation_bytes": 1,
            "stack_bytes": None,
            "stack_bits_per_coordinate": 64,
            "stack_bits_bound": 1.0,
            "step_s": None,
        }

    rows = [row("autograd", 1e-6), row("reversible", ratio * 1e-6)]
    target = evaluate_targets(rows, "conv")["gradient_accuracy"]
    assert target["value"] == pytest.approx(ratio)
    assert target["met"] is met


def test_compile_time_is_reported_per_workload(run):
    _, results = run
    for name, entry in results["compile"].items():
        row = _row(results, name, "reversible", DEPTHS[0])
        assert entry["depth"] == DEPTHS[0]
        assert entry["compile_s"] == row["first_step_wall_s"] - row["step_wall_s"]


def test_extrapolation_is_linear_floored_or_proportional():
    assert extrapolate({}, 100) is None
    assert extrapolate({100: 5.0}, 100) is None  # only smaller depths count
    assert extrapolate({10: 2.0}, 100) == 20.0  # proportional: an upper bound
    assert extrapolate({10: 2.0, 100: 11.0}, 1000) == pytest.approx(101.0)  # the line through both
    assert extrapolate({1: 0.0, 10: 2.0, 100: 11.0}, 1000) == pytest.approx(101.0)  # the two deepest
    assert extrapolate({10: 5.0, 100: 4.0}, 1000) == 5.0  # never below what was measured


def test_a_cell_over_the_memory_cap_or_the_step_budget_is_skipped():
    settings = Settings(memory_cap=12 * GIB, step_budget_s=120.0)
    peaks, steps = {10: 1.0 * GIB, 100: 4.0 * GIB}, {10: 1.0, 100: 9.0}
    guess = estimate(peaks, steps, 1000)
    assert guess == Estimate(
        peak_bytes=pytest.approx(34 * GIB), step_s=pytest.approx(89.0), from_depths=(10, 100)
    )
    assert "cap of 12 GiB" in skip_reason(guess, settings)
    assert skip_reason(estimate(peaks, steps, 200), settings) is None
    generous = replace(settings, memory_cap=64 * GIB, step_budget_s=50)
    assert "budget of 50 s" in skip_reason(estimate(peaks, steps, 1000), generous)
    assert estimate(peaks, steps, 10) is None
    assert float64_reason({}, None, 10, settings).startswith("autograd")
    assert "cap" in float64_reason({}, 7 * GIB, 10, settings)
    assert "budget" in float64_reason({10: 10.0}, 1 * GIB, 100, settings)
    assert float64_reason({10: 1.0}, 1 * GIB, 100, settings) is None


class _FakeServer:
    """Answers memory points with ``bytes_per_layer[method] * depth`` bytes and a 1 ms step per layer,
    timings with 1 ms per layer too; records what it was asked."""

    def __init__(self, bytes_per_layer, log):
        self.bytes_per_layer, self.log, self.pending = bytes_per_layer, log, None

    def submit(self, task, workload, settings, **kwargs):
        self.log.append((task, kwargs.get("method"), kwargs["depth"]))
        self.pending = (task, kwargs)

    def receive(self):
        task, kwargs = self.pending
        if task == "memory":
            peak = 2**20 + self.bytes_per_layer[kwargs["method"]] * kwargs["depth"]
            return {
                "peak_bytes": peak,
                "activation_bytes": peak,
                "memory_step_wall_s": 1e-3 * kwargs["depth"],
                "forward_wall_s": 3e-4 * kwargs["depth"],
                "stack_bytes": None,
                "stack_bits_per_coordinate": 64 if kwargs["method"] == "reversible" else None,
                "stack_bits_bound": 0.152 * kwargs["depth"],
            }
        if task == "stack":
            bound = 0.152 * kwargs["depth"]
            return {"stack_bits_per_coordinate": 1.25 * bound, "stack_bits_bound": bound, "forward_wall_s": 0}
        seconds = 1e-3 * kwargs["depth"]
        timed = {
            "step_s": seconds,
            "first_step_wall_s": seconds,
            "step_wall_s": seconds,
            "grad_error_float64": None,
        }
        return {"rows": {m: dict(timed) for m in kwargs["methods"]}, "reference_wall_s": None}

    def call(self, task, workload, settings, **kwargs):
        self.submit(task, workload, settings, **kwargs)
        return self.receive()


def _fake_sweep(settings, bytes_per_layer, depths):
    log, record = [], {"rows": [], "skipped": [], "probes": [], "stacks": [], "timings": []}
    servers = [_FakeServer(bytes_per_layer, log) for _ in range(settings.memory_workers)]
    sweep = _Sweep(TINY[0], settings, seed=0, device="cpu", servers=(servers, servers[0]), record=record)
    sweep.run(depths, tqdm(disable=True))
    return record, log


def test_the_sweep_skips_what_its_estimates_rule_out_and_probes_first():
    settings = Settings(memory_cap=50 * GIB, step_budget_s=0.5, timing_budget_s=1e9)
    record, log = _fake_sweep(
        settings, {m: (2**30 if m == "autograd" else 0) for m in METHODS}, (20, 100, 1000)
    )
    # No depth below 20: every method is first probed at L=10, then judged by proportion.
    assert {(p["method"], p["depth"]) for p in record["probes"]} == {(m, 10) for m in METHODS}
    skipped = {(c["method"], c["depth"]): c["reason"] for c in record["skipped"]}
    assert "cap of 50 GiB" in skipped["autograd", 100]  # 100 GiB estimated from L=10, 20
    assert skipped["autograd", 1000].startswith("dropped at L=100")
    assert all("budget of 0.5 s" in skipped[m, 1000] for m in METHODS if m != "autograd")  # 1 s step
    assert ("memory", "autograd", 1000) not in log
    measured = {(r["method"], r["depth"]) for r in record["rows"]}
    assert measured == {(m, d) for m in METHODS for d in (20, 100) if (m, d) != ("autograd", 100)}
    # Without autograd at L=100 there is no float64 reference there, and no time ratio to autograd.
    assert record["timings"][1]["float64_reason"].startswith("autograd")
    assert all(r["time_ratio_autograd"] is None for r in record["rows"] if r["depth"] == 100)


def test_a_skipped_reversible_cell_still_measures_its_bit_stack_within_the_budget():
    # 1 ms per layer and step, 0.3 ms per layer of forward: L=1000 steps 1 s and runs forward in 0.3 s.
    settings = Settings(step_budget_s=0.5, timing_budget_s=1e9, stack_budget_s=0.4)
    record, log = _fake_sweep(settings, dict.fromkeys(METHODS, 0), (10, 100, 1000))
    assert all(c["depth"] == 1000 for c in record["skipped"])
    assert [c["depth"] for c in record["stacks"]] == [1000] and record["stacks"][0]["reason"] is None
    assert ("stack", None, 1000) in log
    assert record["stacks"][0]["estimated_forward_s"] == pytest.approx(0.3)
    # The deepest depth judges the target: the forward-only cell, not L=100 and its 64-bit live word.
    target = evaluate_targets(record["rows"], TINY[0].name, record["stacks"])["bit_stack_bits"]
    assert set(target["by_depth"]) == {10, 100, 1000} and target["by_depth"][100] > 4
    assert target["value"] == pytest.approx(1.25) and target["met"]
    record, log = _fake_sweep(
        replace(settings, stack_budget_s=0.2), dict.fromkeys(METHODS, 0), (10, 100, 1000)
    )
    assert "budget of 0.2 s" in record["stacks"][0]["reason"] and ("stack", None, 1000) not in log


def test_a_forward_pass_alone_fills_the_stack_as_the_training_step_does():
    point = measure_point("reversible", 300, TINY[0], SETTINGS, seed=1, device="cpu")
    alone = measure_stack(300, TINY[0], SETTINGS, seed=1, device="cpu")
    assert point["stack_bits_per_coordinate"] > 64  # chunks spilled, not the live word alone
    for key in ("stack_bytes", "stack_bits_per_coordinate", "stack_bits_bound"):
        assert alone[key] == point[key]


def test_a_depth_over_the_timing_budget_keeps_its_memory_untimed():
    settings = Settings(timing_budget_s=1.0, repeats=3)  # 4 rounds of 6 methods at 1 ms per layer
    record, log = _fake_sweep(settings, dict.fromkeys(METHODS, 0), (10, 100))
    # L=10 has nothing to be estimated from and is timed (0.24 s); L=100 would take 2.4 s.
    assert [t["reason"] is None for t in record["timings"]] == [True, False]
    assert "budget of 1 s per depth" in record["timings"][1]["reason"]
    assert ("steps", None, 100) not in log
    untimed = [r for r in record["rows"] if r["depth"] == 100]
    assert len(untimed) == len(METHODS) and all(r["step_s"] is None and r["peak_bytes"] for r in untimed)
    # Deeper than the probe and never timed: judged by the memory processes' steps (0.48 s here).
    record, _ = _fake_sweep(replace(settings, timing_budget_s=0.4), dict.fromkeys(METHODS, 0), (20,))
    assert "estimated timing 0.48 s" in record["timings"][0]["reason"]


def test_memory_points_run_in_pairs_within_the_cap():
    settings = Settings(memory_cap=5 * GIB, memory_workers=2)
    sweep = _Sweep(TINY[0], settings, seed=0, device="cpu", servers=([None, None], None), record={})
    planned = {
        "a": {"estimate": {"peak_bytes": 3 * GIB}},
        "b": {"estimate": {"peak_bytes": 3 * GIB}},  # not with a: 6 GiB together
        "c": {},  # no estimate (first depth)
        "d": {"estimate": {"peak_bytes": 1 * GIB}},  # b and c fill the pair
    }
    assert sweep._batches(planned) == [["a"], ["b", "c"], ["d"]]
    # ...and a real sweep measures every planned cell, in METHODS order.
    record, log = _fake_sweep(replace(settings, timing_budget_s=1e9), dict.fromkeys(METHODS, 0), (10,))
    assert [m for task, m, _ in log if task == "memory"] == list(METHODS)
    assert len(record["rows"]) == len(METHODS) and not record["skipped"]


@pytest.mark.filterwarnings("ignore:TypedStorage is deprecated")
@pytest.mark.parametrize("workload", TINY, ids=lambda w: w.name)
def test_memcnn_coupling_is_invertible_and_its_gradients_are_autograds(workload):
    couplings = [c.double() for c in make_couplings(3, workload, seed=0, device=CPU)]
    x = torch.randn(workload.input_shape, dtype=torch.float64)
    coupling = couplings[0]
    with torch.no_grad():
        # The coupling is y1 = x1 + F(x2), y2 = x2 + G(y1) on the two halves along split_dim...
        x1, x2 = (half.contiguous() for half in x.chunk(2, dim=workload.split_dim))
        y1 = x1 + coupling.Fm(x2)
        manual = torch.cat([y1, x2 + coupling.Gm(y1)], dim=workload.split_dim)
        torch.testing.assert_close(coupling(x), manual, rtol=0, atol=0)
        # ...and its inverse undoes it to rounding.
        torch.testing.assert_close(coupling.inverse(coupling(x)), x, rtol=1e-12, atol=1e-12)
    params = [p for c in couplings for p in c.parameters()]

    def gradients(net):
        for p in params:
            p.grad = None
        leaf = x.detach().requires_grad_(True)
        net(leaf).square().mean().backward()
        return [leaf.grad, *(p.grad for p in params)]

    kept = x.clone()
    freed = gradients(Coupled(couplings))  # keep_input=False: inputs rebuilt by inversion in backward
    torch.testing.assert_close(x, kept, rtol=0, atol=0)  # the caller's input survives memcnn's freeing
    for got, want in zip(freed, gradients(Coupled(couplings, disable=True)), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("workload", FULL_WORKLOADS, ids=lambda w: w.name)
def test_a_coupling_has_the_weights_of_a_block(workload):
    # Linear and conv layers cost their weights' size in multiply-adds per sample, pixel or token.
    def weights(module):
        return sum(p.numel() for p in module.parameters() if p.dim() > 1)

    (block,) = make_blocks(1, workload, seed=0, device=CPU)
    (coupling,) = make_couplings(1, workload, seed=0, device=CPU)
    assert weights(coupling) == weights(block)


def test_select_workloads():
    assert [w.name for w in select_workloads(None, quick=True)] == [w.name for w in QUICK_WORKLOADS]
    assert select_workloads(["conv", TINY[0]], quick=False)[1] is TINY[0]
    with pytest.raises(ValueError, match="unknown workloads"):
        select_workloads(["lstm"], quick=False)


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "memory", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for option in (
        "--quick",
        "--workloads",
        "--depths",
        "--seed",
        "--out",
        "--device",
        "--threads",
        "--memory-cap",
        "--step-budget",
    ):
        assert option in text


def test_timed_rounds_go_on_until_min_seconds_or_max_rounds():
    small = replace(TINY[0], batch=4)
    methods = ["resnet", "autograd", "memcnn"]  # in this process, no compiled reversible kernels
    capped = measure_depth(
        2, small, replace(SETTINGS, min_seconds=1e9, max_rounds=3), 0, "cpu", methods, float64=False
    )
    assert {len(row["step_s_all"]) for row in capped["rows"].values()} == {3}
    enough = measure_depth(2, small, replace(SETTINGS, repeats=2), 0, "cpu", methods, float64=False)
    assert {len(row["step_s_all"]) for row in enough["rows"].values()} == {2}
    assert enough["reference_wall_s"] is None
