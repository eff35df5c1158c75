"""discretizations' criteria fail on schemes that are wrong in the way each guards against.

The order criterion compares the fitted order with the declared one, and the cost criterion counts the
evaluations of f against the declared number per step: a scheme of lower order than declared, and one that
evaluates f more often than declared, each fail their criterion and no other.
"""

import pytest

import mode.experiments.discretizations as discretizations
from mode.experiments import run_experiment
from mode.schemes import SCHEMES
from tests.experiments.test_experiments import REDUCED

ORDER = "max |fitted order - declared order|"
COST = "max |counted - declared evaluations|"


def _first_order_heun(monkeypatch):
    # Heun's second slope evaluated and then dropped: Euler's step at Heun's cost, declared of order 2.
    monkeypatch.setattr(SCHEMES["heun"], "b", [1.0, 0.0])


def _heun_with_a_wasted_evaluation(monkeypatch):
    # A third slope with weight 0: order 2 still, three evaluations of f per step against two declared.
    heun = SCHEMES["heun"]
    monkeypatch.setattr(heun, "a", [*heun.a, [0.0, 0.0]])
    monkeypatch.setattr(heun, "b", [*heun.b, 0.0])
    monkeypatch.setattr(heun, "c", [*heun.c, 0.0])


SABOTAGES = {
    "order below the declared one": (_first_order_heun, ORDER),
    "hidden evaluation": (_heun_with_a_wasted_evaluation, COST),
}


@pytest.mark.parametrize("sabotage", SABOTAGES)
def test_each_criterion_fails_on_its_wrong_scheme(sabotage, monkeypatch, tmp_path):
    edit, guarded = SABOTAGES[sabotage]
    monkeypatch.setattr(discretizations, "QUICK", REDUCED["discretizations"][1])
    edit(monkeypatch)
    criteria = run_experiment("discretizations", quick=True, seed=0, out=tmp_path)["criteria"]
    failed = [name for name, c in criteria.items() if not c["passed"]]
    assert failed == [guarded], failed
    if guarded == ORDER:
        assert criteria[ORDER]["value"] == pytest.approx(1.0, abs=0.15)  # the fitted order is Euler's 1
