"""Smoke run of ``examples/finetune_digits.py --quick``: it trains, measures and writes its results."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sklearn")
pytest.importorskip("torchvision")

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "finetune_digits.py"


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("finetune_digits")
    done = subprocess.run(
        # one thread: on a loaded machine two OpenMP threads per process slow the run down several times
        [sys.executable, str(SCRIPT), "--quick", "--seed", "0", "--threads", "1", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=1800,  # about 3 CPU minutes; far longer in wall time on a loaded machine
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "gap (momentum - plain)" in done.stdout
    assert not list(out.glob("*.tmp")), "the atomic write left its temporary file behind"
    return json.loads((out / "results.json").read_text())


@pytest.mark.slow
def test_both_models_learn_and_are_on_par(results):
    acc = results["accuracy"]
    # ten classes: chance is 0.1
    assert acc["resnet18"] > 0.5
    assert acc["momentum_reversible"] > 0.5
    # 2 epochs on 320 images leave both models undertrained, so "on par" gets a loose bound here
    assert abs(acc["gap"]) < 0.15
    assert results["runs"]["resnet18"]["history"][-1]["test_accuracy"] == acc["resnet18"]


@pytest.mark.slow
def test_results_record_the_settings_and_versions(results):
    assert results["quick"] is True
    assert results["seed"] == 0
    versions = results["environment"]["versions"]
    assert all(versions[name] for name in ("momentum-ode", "torch", "torchvision", "scikit-learn"))
    assert results["data"]["n_test"] == 450  # a quarter of the 1,797 digits, stratified
    assert results["settings"]["gamma"] == 0.9
    for key in ("train_resnet18", "train_momentum", "memory", "total"):
        assert results["wall_seconds"][key] >= 0


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the memory measurement reads /proc")
def test_reversible_stores_less_per_image_than_autograd(results):
    memory = results["memory"]
    assert set(memory["resnet18"]["variants"]) == {"plain", "autograd", "reversible"}
    for arch, comparison in memory.items():
        for variant, measured in comparison["variants"].items():
            small, large = comparison["batches"]
            mb = measured["activation_mb"]
            # JSON object keys are strings
            assert 0 < mb[str(small)] < mb[str(large)], (arch, variant)
    # In ResNet-101's 22-block third stage the reversible backward keeps no activations: per image (the
    # slope between two batch sizes) it must need clearly less than autograd. The fixed per-step cost
    # and ResNet-18, with only 2+1+1+1 converted blocks, are reported but not asserted on.
    deep = memory["resnet101"]
    per_image = {v: deep["variants"][v]["per_image_mb"] for v in ("autograd", "reversible")}
    assert per_image["reversible"] < 0.8 * per_image["autograd"], per_image
    assert deep["stages"][2] == {"blocks": 23, "converted": 22}
