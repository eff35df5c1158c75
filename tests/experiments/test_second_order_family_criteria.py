"""second-order-family's criteria fail on deliberately wrong models.

Each test runs the experiment on the tasks and models its criteria need, one seed, at the quick run's
settings or fewer steps: first as it is, where the criteria pass, then with one thing broken, where they
fail:

* a field that ignores its state (it sees the time only): no model learns the spheres, and SONODE and the
  momentum ODE do not fit the oscillator;
* a momentum ODE that drops its mass, :math:`\\ddot x = f(x) - \\dot x`: it does not approach NODE as
  :math:`\\varepsilon \\to 0`;
* training in autograd mode (no backward evaluations), and models that stay in adjoint mode when asked for
  autograd;
* a "NODE" that is a heavy-ball model, whose trajectories may cross: it beats the first-order floor 1/3 on
  :math:`x \\mapsto -x`.

``-m slow`` runs the quick run at seeds 0 and 1 and checks that every criterion passes.
"""

import pytest
import torch

import mode.experiments.second_order_family as sof
from mode.experiments import run_experiment
from mode.models import MomentumODE

LEARNING = (
    "spheres d=2: max over models of test loss trained / untrained (mean over seeds)",
    "spheres d=2: max over models of test loss / trivial baseline (mean over seeds)",
)
FIT = tuple(f"oscillator: {name} training-window MSE, max over seeds" for name in ("SONODE", "MomentumODE"))
LIMIT = (
    f"limit: max |momentum ODE - NODE| at eps={sof.LIMIT_EPS:g} / max NODE displacement",
    f"limit: deviation at eps={sof.LIMIT_EPS:g} / deviation at eps={10 * sof.LIMIT_EPS:g}",
)
ADJOINT = "backward NFE of the adjoint training, min over models, tasks, seeds and iterations"
AUTOGRAD = "backward NFE with autograd, max over models"
FLOOR = "crossing: NODE MSE, min over seeds, >= first-order floor 1/3"


def _settings(tasks, models, judged=None, **changes):
    settings = {**sof.QUICK, "tasks": tasks, "models": models, "seeds": 1}
    settings["judged"] = tasks if judged is None else judged
    for key, value in changes.items():
        settings[key] = {**settings[key], **value}
    return settings


def _criteria(monkeypatch, tmp_path, settings, run: str) -> dict:
    monkeypatch.setattr(sof, "QUICK", settings)
    return run_experiment("second-order-family", quick=True, seed=0, out=tmp_path / run)["criteria"]


def _check(clean: dict, broken: dict, keys) -> None:
    for key in keys:
        assert clean[key]["passed"], (key, clean[key])
        assert not broken[key]["passed"], (key, broken[key])


def test_a_field_that_ignores_its_state_fails_learning_and_the_oscillator_fit(monkeypatch, tmp_path):
    settings = _settings(("spheres d=2", "oscillator"), ("NODE", "SONODE", "MomentumODE"))
    clean = _criteria(monkeypatch, tmp_path, settings, "clean")
    evaluate = sof.Field.evaluate

    def time_only(self, inputs, t):
        return evaluate(self, tuple(torch.zeros_like(z) for z in inputs), t)

    monkeypatch.setattr(sof.Field, "evaluate", time_only)
    _check(clean, _criteria(monkeypatch, tmp_path, settings, "broken"), LEARNING + FIT)


def test_a_momentum_ode_without_its_mass_fails_the_small_mass_limit(monkeypatch, tmp_path):
    settings = _settings(("spheres d=2",), ("NODE",), judged=(), spheres={"steps": 5})
    clean = _criteria(monkeypatch, tmp_path, settings, "clean")

    def massless(self, t, state):
        x, v = state
        return (v, self.call_field(x, t=t) - v)

    monkeypatch.setattr(MomentumODE, "dynamics", massless)
    broken = _criteria(monkeypatch, tmp_path, settings, "broken")
    _check(clean, broken, LIMIT)
    assert broken[LIMIT[1]]["value"] == pytest.approx(1.0)  # the deviation does not depend on eps


def test_training_without_the_adjoint_fails_the_backward_nfe(monkeypatch, tmp_path):
    settings = _settings(("crossing",), ("NODE",), judged=(), crossing={"steps": 3})
    clean = _criteria(monkeypatch, tmp_path, settings, "clean")
    monkeypatch.setattr(sof, "BACKPROP", "autograd")
    broken = _criteria(monkeypatch, tmp_path, settings, "broken")
    _check(clean, broken, [ADJOINT])
    assert broken[ADJOINT]["value"] == 0 and broken[AUTOGRAD]["passed"]


def test_models_that_ignore_the_autograd_setting_fail_the_backward_nfe(monkeypatch, tmp_path):
    settings = _settings(("crossing",), ("NODE",), judged=(), crossing={"steps": 3})
    clean = _criteria(monkeypatch, tmp_path, settings, "clean")
    build = sof.build

    def always_adjoint(*args, backprop=None, **kwargs):
        return build(*args, backprop="adjoint", **kwargs)

    monkeypatch.setattr(sof, "build", always_adjoint)
    _check(clean, _criteria(monkeypatch, tmp_path, settings, "broken"), [AUTOGRAD])


def test_a_node_with_momentum_fails_the_first_order_floor(monkeypatch, tmp_path):
    settings = _settings(("crossing",), ("NODE",), judged=())
    clean = _criteria(monkeypatch, tmp_path, settings, "clean")
    build = sof.build

    def heavy_ball_node(name, *args, **kwargs):
        return build("HBNODE" if name == "NODE" else name, *args, **kwargs)

    monkeypatch.setattr(sof, "build", heavy_ball_node)
    broken = _criteria(monkeypatch, tmp_path, settings, "broken")
    _check(clean, broken, [FLOOR])
    assert broken[FLOOR]["value"] < 0.25


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_the_quick_run_passes(seed, tmp_path):
    result = run_experiment("second-order-family", quick=True, seed=seed, out=tmp_path)
    failed = {key: c for key, c in result["criteria"].items() if not c["passed"]}
    assert not failed, failed
    assert result["figures"] == ["nfe_curves.png", "test_metrics.png", "trajectories.png"]
