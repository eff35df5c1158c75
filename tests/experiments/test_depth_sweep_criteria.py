"""depth-sweep's memory criteria fail on a momentum model that stores its activations.

The same conversion run with ``backprop="autograd"`` keeps every block's activations for the backward
pass: its memory grows with depth like the ResNet's, so the growth ratio leaves FLAT and the memory ratio
at the deepest depth leaves 1/2. The accuracy criterion does not guard memory and is left to hold.
"""

import mode.experiments.depth_sweep as depth_sweep
from mode.experiments import run_experiment
from tests.experiments.test_experiments import REDUCED


def test_the_memory_criteria_fail_on_a_model_that_stores_activations(monkeypatch, tmp_path):
    monkeypatch.setattr(depth_sweep, "QUICK", {**REDUCED["depth-sweep"][1], "epochs": 1})
    monkeypatch.setattr(depth_sweep, "BACKPROP", "autograd")
    result = run_experiment("depth-sweep", quick=True, seed=0, out=tmp_path)
    assert result["settings"]["momentum_backprop"] == "autograd"
    failed = sorted(name for name, c in result["criteria"].items() if not c["passed"])
    assert failed == sorted(name for name in result["criteria"] if name.startswith("memory")), failed
    growth = next(c for name, c in result["criteria"].items() if name.startswith("memory growth"))
    assert growth["value"] > 0.5
