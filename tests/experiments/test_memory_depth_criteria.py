"""memory-depth's criteria fail on a model that is wrong in each way they guard against.

The committed full benchmark (``benchmarks/memory_depth/results.json``) is the honest run; each sabotage
edits its reversible rows into what a wrong model would have measured, and the experiment's criteria are
evaluated on that, with the benchmark itself replaced by the edited file.
"""

import copy
import functools
import json
from pathlib import Path

import pytest

import mode.analysis
import mode.bench.memory
from mode.experiments import run_experiment

_STACK_REPLAY = mode.analysis.stack_replay  # the real one: the tests patch the module's name
RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "memory_depth" / "results.json"
WORKLOAD = "wide-mlp"


@functools.cache
def _committed() -> dict:
    results = json.loads(RESULTS.read_text())
    results["settings"]["workloads"] = [WORKLOAD]
    results["rows"] = [row for row in results["rows"] if row["workload"] == WORKLOAD]
    return results


@functools.cache
def _replay(depth: int) -> tuple:
    # The replay reruns the deepest reversible forward (a few seconds): once for all sabotages.
    return tuple(_STACK_REPLAY(_committed(), WORKLOAD, depth).items())


def _rows(results: dict, method: str) -> dict[int, dict]:
    return {row["depth"]: row for row in results["rows"] if row["method"] == method}


def _float_reversal(results: dict) -> None:
    # momentumnet's float inverse: its gradients lose digits with depth
    for depth, row in _rows(results, "reversible").items():
        for key in ("grad_error", "grad_error_float64"):
            row[key] = _rows(results, "momentumnet")[depth][key]


def _stores_block_inputs(results: dict) -> None:
    # a reversible mode that kept every block's input: B d float32 per layer
    spec = results["workloads"][WORKLOAD]
    for depth, row in _rows(results, "reversible").items():
        row["activation_bytes"] += depth * spec["batch"] * spec["dim"] * 4


def _stack_without_the_multiplies(results: dict) -> None:
    # a stack that dropped the digits of the multiplies by gamma: the live word alone
    for row in _rows(results, "reversible").values():
        row["stack_bits_per_coordinate"] = 64


def _exponent_per_sample(replay: dict, depth: int) -> dict:
    # one exponent per sample on a batch of 256: about one bit per coordinate and layer of exponent moves
    return {**replay, "exponent_bits": replay["exponent_bits"] + depth}


SABOTAGES = {
    "float reversal": (_float_reversal, "gradient error"),
    "stores the block inputs": (_stores_block_inputs, "memory growth"),
    "stack without the multiplies": (_stack_without_the_multiplies, "lower bound"),
    "exponent per sample": (None, "exponent-move bits"),
}


def _criteria(monkeypatch, tmp_path, edit=None, edit_replay=None) -> dict:
    results = copy.deepcopy(_committed())
    if edit is not None:
        edit(results)

    def replay(_results, workload, depth):
        found = dict(_replay(depth))
        return edit_replay(found, depth) if edit_replay is not None else found

    monkeypatch.setattr(mode.bench.memory, "run_memory_benchmark", lambda **_: results)
    monkeypatch.setattr(mode.analysis, "stack_replay", replay)
    return run_experiment("memory-depth", quick=False, seed=0, out=tmp_path)["criteria"]


def test_the_committed_benchmark_meets_every_criterion(monkeypatch, tmp_path):
    criteria = _criteria(monkeypatch, tmp_path)
    assert all(c["passed"] for c in criteria.values()), criteria


@pytest.mark.parametrize("sabotage", SABOTAGES)
def test_each_criterion_fails_on_its_wrong_model(sabotage, monkeypatch, tmp_path):
    edit, guarded = SABOTAGES[sabotage]
    if edit is None:
        criteria = _criteria(monkeypatch, tmp_path, edit_replay=_exponent_per_sample)
    else:
        criteria = _criteria(monkeypatch, tmp_path, edit=edit)
    failed = [name for name, c in criteria.items() if not c["passed"]]
    assert failed and all(guarded in name for name in failed), failed
