import json

import pytest

from mode.cli import main
from mode.experiments import EXPERIMENTS, criterion, experiment, run_experiment
from mode.experiments.runner import write_report


@pytest.fixture
def toy():
    @experiment("toy", "a registered toy")
    def run(context):
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots()
        ax.plot([0, 1], [context.seed, 1])
        context.save(fig, "line")
        value = 0.5 if context.quick else 2.0
        return {
            "settings": {"n": 3},
            "metrics": {"value": value},
            "criteria": {"small": criterion(value, "<", 1)},
        }

    yield "toy"
    del EXPERIMENTS["toy"]


def test_results_json_records_settings_versions_and_criteria(toy, tmp_path):
    result = run_experiment(toy, quick=True, seed=7, out=tmp_path)
    stored = json.loads((tmp_path / "toy" / "results.json").read_text())
    assert stored == json.loads(json.dumps(result))
    assert stored["seed"] == 7 and stored["quick"] is True and stored["settings"] == {"n": 3}
    assert stored["environment"]["versions"]["torch"]
    assert stored["figures"] == ["line.png"] and (tmp_path / "toy" / "line.png").stat().st_size > 0
    assert stored["passed"] is True
    assert not list((tmp_path / "toy").glob(".*tmp")), "no temporary files are left behind"


def test_a_failing_criterion_fails_the_run_and_the_cli(toy, tmp_path):
    assert run_experiment(toy, quick=False, out=tmp_path)["passed"] is False
    assert main(["experiment", toy, "--out", str(tmp_path)]) == 1
    assert main(["experiment", toy, "--quick", "--out", str(tmp_path)]) == 0


def test_report_has_the_table_and_figures(toy, tmp_path):
    result = run_experiment(toy, quick=True, out=tmp_path)
    report = write_report([result], tmp_path).read_text()
    assert "| [toy](#toy) | True |" in report and "![line.png](toy/line.png)" in report


def test_unknown_experiment_and_list(capsys, toy):
    with pytest.raises(ValueError, match="unknown experiment"):
        run_experiment("nope")
    assert main(["experiment", "--list"]) == 0
    assert "toy" in capsys.readouterr().out


def test_criterion():
    assert criterion(0.1, "<", 0.2)["passed"] and not criterion(0.3, "<", 0.2)["passed"]
    assert criterion(1, ">=", 1) == {"value": 1.0, "op": ">=", "bound": 1.0, "passed": True}
