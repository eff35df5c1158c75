"""Hostile command lines: usage errors are found before any work, print one line and exit 2; an
interrupted experiment leaves the previous run whole; ``mode bench memory`` fails when a target is missed.

Nothing here runs a real check, experiment or benchmark: a toy experiment and a fake benchmark stand in.
"""

import json
import os
import sys

import pytest

from mode.cli import main
from mode.experiments import EXPERIMENTS, criterion, experiment
from mode.theory import runner

TOY = "probe-toy"


def one_line_usage_error(capsys, command: str) -> str:
    """The single stderr line of a usage error of ``mode COMMAND``."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"mode {command}: error: ")
    return lines[0]


@pytest.fixture
def toy():
    """An experiment that saves a figure, then raises what ``runs["raise"]`` holds, if anything."""
    runs = {"count": 0, "raise": None}

    @experiment(TOY, "a toy that can be interrupted")
    def run(context):
        import matplotlib.pyplot as plt

        runs["count"] += 1
        fig, ax = plt.subplots()
        ax.plot([0, 1], [0, runs["count"]])
        context.save(fig, f"line{runs['count']}")
        if runs["raise"] is not None:
            raise runs["raise"]
        return {"metrics": {"run": runs["count"]}, "criteria": {"ok": criterion(0, "<", 1)}}

    yield runs
    del EXPERIMENTS[TOY]


@pytest.fixture
def no_checks(monkeypatch):
    """``mode check`` must not get as far as loading or running a check."""

    def refuse(*args, **kwargs):
        raise AssertionError("a check ran before the usage error was found")

    monkeypatch.setattr(runner, "load_claims", refuse)
    monkeypatch.setattr(runner, "run_checks", refuse)


@pytest.fixture
def read_only(tmp_path):
    """A folder this process cannot write in (root writes anywhere: skipped)."""
    if sys.platform == "win32" or os.geteuid() == 0:
        pytest.skip("permissions do not stop this user from writing")
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    yield folder
    folder.chmod(0o755)


def test_check_json_into_a_directory(tmp_path, capsys, no_checks):
    assert main(["check", "--json", str(tmp_path)]) == 2
    line = one_line_usage_error(capsys, "check")
    assert "is a directory" in line and str(tmp_path / "report.json") in line


def test_check_json_under_a_file(tmp_path, capsys, no_checks):
    (tmp_path / "file").write_text("")
    assert main(["check", "--json", str(tmp_path / "file" / "report.json")]) == 2
    assert "does not exist" in one_line_usage_error(capsys, "check")


def test_check_json_into_a_read_only_folder(read_only, capsys, no_checks):
    assert main(["check", "--json", str(read_only / "report.json")]) == 2
    assert "cannot write in" in one_line_usage_error(capsys, "check")


def test_check_json_into_a_folder_that_takes_no_files(capsys, no_checks):
    """``/sys`` refuses new files even to root, whom permission bits do not stop."""
    if not os.path.isdir("/sys"):
        pytest.skip("no /sys")
    try:
        open("/sys/.mode-probe", "w").close()
    except OSError:
        pass
    else:
        os.remove("/sys/.mode-probe")
        pytest.skip("/sys takes new files here")
    assert main(["check", "--json", "/sys/report.json"]) == 2
    assert "cannot write in /sys" in one_line_usage_error(capsys, "check")


def test_check_only_matching_nothing_is_one_line(capsys, monkeypatch):
    monkeypatch.setattr(runner, "load_claims", lambda: [])
    assert main(["check", "--only", "NO-SUCH-CLAIM"]) == 2
    assert "no claim matches --only NO-SUCH-CLAIM" in one_line_usage_error(capsys, "check")


def test_unknown_experiment_lists_the_known_ones(tmp_path, capsys):
    assert main(["experiment", "nosuch", "--out", str(tmp_path)]) == 2
    line = one_line_usage_error(capsys, "experiment")
    assert "unknown experiment 'nosuch'" in line and "linear-maps" in line and "--list" in line
    assert not list(tmp_path.iterdir())


def test_experiment_out_is_a_file(toy, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert main(["experiment", TOY, "--out", str(tmp_path / "file")]) == 2
    assert "is a file, not a directory" in one_line_usage_error(capsys, "experiment")
    assert toy["count"] == 0


def test_experiment_folder_is_a_file(toy, tmp_path, capsys):
    (tmp_path / TOY).write_text("")
    assert main(["experiment", TOY, "--out", str(tmp_path)]) == 2
    assert "is a file, not a directory" in one_line_usage_error(capsys, "experiment")
    assert toy["count"] == 0


def test_experiment_out_in_a_read_only_folder(toy, read_only, capsys):
    assert main(["experiment", TOY, "--out", str(read_only / "runs")]) == 2
    assert "cannot write in" in one_line_usage_error(capsys, "experiment")
    assert toy["count"] == 0


def test_reproduce_out_is_a_file(toy, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert main(["reproduce", "--out", str(tmp_path / "file")]) == 2
    assert "is a file, not a directory" in one_line_usage_error(capsys, "reproduce")
    assert toy["count"] == 0


@pytest.mark.parametrize("interruption", [KeyboardInterrupt(), RuntimeError("the experiment broke")])
def test_an_interrupted_run_leaves_the_previous_one_whole(toy, tmp_path, interruption):
    folder = tmp_path / TOY
    assert main(["experiment", TOY, "--out", str(tmp_path)]) == 0
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert set(before) == {"line1.png", "results.json"}
    toy["raise"] = interruption
    with pytest.raises(type(interruption)):
        main(["experiment", TOY, "--out", str(tmp_path)])
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == [TOY], "no temporary folder is left behind"
    # a complete run replaces the folder whole: no file of the previous run stays
    toy["raise"] = None
    assert main(["experiment", TOY, "--out", str(tmp_path)]) == 0
    assert {p.name for p in folder.iterdir()} == {"line3.png", "results.json"}
    assert json.loads((folder / "results.json").read_text())["figures"] == ["line3.png"]
    assert [p.name for p in tmp_path.iterdir()] == [TOY]


def fake_benchmark(met: list[bool], calls: list):
    def run_memory_benchmark(**kwargs):
        calls.append(kwargs)
        targets = {f"target{i}": {"met": m, "target": f"target {i}"} for i, m in enumerate(met)}
        return {"rows": [], "skipped": [], "timings": [], "targets": {"tiny": targets}}

    return run_memory_benchmark


@pytest.mark.parametrize(("met", "code"), [([True, True], 0), ([True, False], 1)])
def test_bench_memory_exit_status_follows_the_targets(met, code, tmp_path, monkeypatch, capsys):
    import mode.bench.memory

    calls = []
    monkeypatch.setattr(mode.bench.memory, "run_memory_benchmark", fake_benchmark(met, calls))
    assert main(["bench", "memory", "--quick", "--out", str(tmp_path)]) == code
    assert len(calls) == 1
    out = capsys.readouterr().out
    assert "1 of 2 targets met; NOT met: tiny target1" in out if code else "2 of 2 targets met" in out


def test_bench_memory_out_is_checked_first(tmp_path, monkeypatch, capsys):
    import mode.bench.memory

    calls = []
    monkeypatch.setattr(mode.bench.memory, "run_memory_benchmark", fake_benchmark([True], calls))
    (tmp_path / "file").write_text("")
    assert main(["bench", "memory", "--out", str(tmp_path / "file" / "bench")]) == 2
    assert "is a file, not a directory" in one_line_usage_error(capsys, "bench memory")
    assert not calls


def test_bench_memory_help_documents_the_exit_status(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "memory", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "Exits 1 if any target is not met" in help_text and "2 on a usage error" in help_text
