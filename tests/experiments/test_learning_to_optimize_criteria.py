"""learning-to-optimize's momentum criterion fails on a momentum network that cannot converge.

At gamma = 0.999 a layer contracts phase-space volume by only gamma^p: over L layers the determinant of
the (least-squares, linear) map is gamma^(pL), so E|z_L - z*|^2 >= 2p gamma^L (AM-GM on its singular
values), and the relative distance stays near 1 at the reduced run's depth 16 however the steps are
learned. The volume-floor row of RevNet and leapfrog is a theorem and holds whatever is trained.
"""

import mode.experiments.learning_to_optimize as learning_to_optimize
from mode.experiments import run_experiment
from tests.experiments.test_experiments import REDUCED


def test_the_momentum_criterion_fails_without_damping(monkeypatch, tmp_path):
    settings = REDUCED["learning-to-optimize"][1]
    monkeypatch.setattr(learning_to_optimize, "QUICK", settings)
    monkeypatch.setattr(learning_to_optimize, "GAMMA", 0.999)
    criteria = run_experiment("learning-to-optimize", quick=True, seed=0, out=tmp_path)["criteria"]
    name = f"momentum network: max relative distance to the fixed point at depth {settings['depths'][-1]}"
    assert criteria[name]["value"] > 0.5
    assert [key for key, c in criteria.items() if not c["passed"]] == [name]
