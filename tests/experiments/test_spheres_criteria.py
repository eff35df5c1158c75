"""spheres' criterion fails when the momentum ODE is replaced by a first-order one.

With ``eps = 0`` and the field used as a velocity, the "momentum ODE" is the NODE itself, drawn from the
same seed and trained on the same data: its test loss is the NODE's, and the criterion (the NODE's mean
test loss minus the momentum ODE's, > 0) must fail.
"""

import mode.experiments.spheres as spheres
from mode.experiments import run_experiment
from tests.experiments.test_experiments import REDUCED

CRITERION = "d = 2: NODE mean test loss - momentum ODE mean test loss"


def test_the_criterion_fails_on_a_first_order_model(monkeypatch, tmp_path):
    monkeypatch.setattr(spheres, "QUICK", {**REDUCED["spheres"][1], "steps": 10})
    monkeypatch.setattr(spheres, "EPS", 0.0)
    monkeypatch.setattr(spheres, "from_acceleration", lambda field, eps: field)
    result = run_experiment("spheres", quick=True, seed=0, out=tmp_path)
    assert not result["criteria"][CRITERION]["passed"]
    assert result["criteria"][CRITERION]["value"] == 0.0
