"""Smoke run of ``examples/finetune_digits.py --quick``: it pre-trains and saves a ResNet-18, converts it,
fine-tunes it with reversible backprop, measures the memory and writes its results; a second run starts
from the saved checkpoint."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sklearn")
torchvision = pytest.importorskip("torchvision")

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "finetune_digits.py"
CHECKPOINT = "resnet18_digits.pt"


def run_quick(out: Path, *options: str) -> tuple[dict, str]:
    done = subprocess.run(
        # one thread: on a loaded machine two OpenMP threads per process slow the run down several times
        [
            sys.executable,
            str(SCRIPT),
            "--quick",
            "--seed",
            "0",
            "--threads",
            "1",
            "--out",
            str(out),
            *options,
        ],
        capture_output=True,
        text=True,
        timeout=1800,  # about 3 CPU minutes; far longer in wall time on a loaded machine
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert not list(out.glob(".*.tmp")), "an atomic write left its temporary file behind"
    return json.loads((out / "results.json").read_text()), done.stdout


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    out = tmp_path_factory.mktemp("finetune_digits")
    results, stdout = run_quick(out)
    assert "gap (momentum - continued)" in stdout
    assert "fine-tune momentum: epoch 2/2, test accuracy" in stdout
    return out, results


@pytest.fixture(scope="module")
def results(first):
    return first[1]


@pytest.fixture(scope="module")
def from_checkpoint(first, tmp_path_factory):
    """The recipe from a given checkpoint (here the first run's): no pre-training, one epoch, no memory."""
    out = tmp_path_factory.mktemp("finetune_digits_checkpoint")
    options = ("--checkpoint", str(first[0] / CHECKPOINT), "--epochs", "1", "--skip-memory")
    return out, run_quick(out, *options)[0]


@pytest.mark.slow
def test_conversion_drops_the_accuracy_and_gamma_zero_keeps_it(results):
    acc, conversion = results["accuracy"], results["conversion"]
    # ten classes: chance is 0.1
    assert acc["pretrained"] > 0.5
    assert 0 <= acc["after_conversion"] <= 1
    assert acc["after_conversion"] == conversion["accuracy"]
    assert conversion["gamma"] == 0.9
    assert conversion["gamma_effective"] == pytest.approx(0.9, rel=1e-6)  # the exact n / 2**k nearby
    assert [s["converted"] for s in conversion["stages"]] == [2, 1, 1, 1]
    # gamma = 0 with autograd is the original network: same predictions, logits equal to rounding
    assert conversion["sanity"]["accuracy"] == acc["pretrained"]
    assert conversion["sanity"]["max_abs_logit_difference"] < 1e-4


@pytest.mark.slow
def test_fine_tuned_momentum_is_on_par_with_the_continued_original(results):
    acc, runs = results["accuracy"], results["runs"]
    assert acc["momentum_finetuned"] > 0.5
    assert acc["resnet18_continued"] > 0.5
    # 2 + 2 epochs on 320 images leave both models undertrained, so "on par" gets a loose bound here
    assert abs(acc["gap"]) < 0.15
    for key in ("pretrain", "momentum", "resnet18"):
        assert len(runs[key]["history"]) == 2
    assert runs["momentum"]["history"][-1]["test_accuracy"] == acc["momentum_finetuned"]
    assert runs["resnet18"]["history"][-1]["test_accuracy"] == acc["resnet18_continued"]
    assert runs["momentum"]["step_seconds"] > 0


@pytest.mark.slow
def test_checkpoint_is_written_and_reloads_into_resnet18(first):
    out, results = first
    assert results["checkpoint"] == {"path": str(out / CHECKPOINT), "pretrained_here": True}
    import torch

    model = torchvision.models.resnet18(num_classes=10)
    model.load_state_dict(torch.load(out / CHECKPOINT, map_location="cpu", weights_only=True))


@pytest.mark.slow
def test_checkpoint_option_starts_from_the_saved_weights(first, from_checkpoint):
    out, again = from_checkpoint
    results = first[1]
    assert again["runs"]["pretrain"] is None
    assert again["checkpoint"]["pretrained_here"] is False
    assert not (out / CHECKPOINT).exists()
    # the same weights give the same predictions before and right after the conversion
    for key in ("pretrained", "after_conversion"):
        assert again["accuracy"][key] == results["accuracy"][key], key
    assert len(again["runs"]["momentum"]["history"]) == 1
    assert again["accuracy"]["momentum_finetuned"] > 0.5
    assert again["memory"] == {}


@pytest.mark.slow
def test_results_record_the_settings_and_versions(results):
    assert results["quick"] is True
    assert results["seed"] == 0
    versions = results["environment"]["versions"]
    assert all(versions[name] for name in ("momentum-ode", "torch", "torchvision", "scikit-learn"))
    assert results["data"]["n_test"] == 450  # a quarter of the 1,797 digits, stratified
    assert results["settings"]["gamma"] == 0.9
    assert results["settings"]["pretrain"]["epochs"] == results["settings"]["finetune"]["epochs"] == 2
    for key in ("pretrain", "finetune_momentum", "finetune_resnet18", "memory", "total"):
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
