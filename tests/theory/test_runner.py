"""``mode check``: the runner's table, exit codes, failure reporting and JSON report."""

import argparse
import json
import math
import sys

import pytest
import torch

from mode.theory import cli, runner
from mode.theory.registry import CLAIMS, Claim, Verdict, claim


def check_main(argv):
    """Parse ``argv`` as the ``mode`` program would with the ``check`` subcommand and run it."""
    parser = argparse.ArgumentParser(prog="mode")
    cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["check", *argv])
    return args.run(args)


@pytest.fixture
def temporary_claims():
    """Register TMP-1 (passes), TMP-2 (fails), TMP-3 (raises), TMP-4 (returns garbage); remove them after."""
    ids = ["TMP-1", "TMP-2", "TMP-3", "TMP-4"]
    assert not set(ids) & set(CLAIMS)
    claim("TMP-1", "a claim that holds", "theory/none.md")(lambda: Verdict(0.5, "<= 1", True))
    claim("TMP-2", "a claim that does not hold", "theory/none.md")(lambda: Verdict(2.0, "<= 1", False))

    def raises():
        raise RuntimeError("the check broke")

    claim("TMP-3", "a claim whose check raises", "theory/none.md")(raises)
    claim("TMP-4", "a claim whose check returns no Verdict", "theory/none.md")(lambda: 0.0)
    yield ids
    for id_ in ids:
        CLAIMS.pop(id_)


def test_passing_selection_exits_zero(temporary_claims, capsys):
    assert check_main(["--only", "TMP-1"]) == 0
    out = capsys.readouterr().out
    assert "TMP-1" in out and "PASS" in out and "FAIL" not in out and "TMP-2" not in out


def test_failing_check_exits_one_and_is_reported(temporary_claims, capsys):
    assert check_main(["--only", "TMP"]) == 1
    captured = capsys.readouterr()
    rows = {line.split()[0]: line for line in captured.out.splitlines() if line.startswith("TMP-")}
    assert rows["TMP-1"].endswith("PASS")
    for id_ in ("TMP-2", "TMP-3", "TMP-4"):
        assert rows[id_].endswith("FAIL")
    assert "TMP-3: RuntimeError: the check broke" in captured.out
    assert "TMP-4: TypeError" in captured.out
    assert "1 of 4 claims passed" in captured.out and "FAILED: TMP-2, TMP-3, TMP-4" in captured.out
    assert "[4/4] TMP-4 FAIL" in captured.err


def test_selection_matching_nothing_exits_two(capsys):
    assert check_main(["--only", "NO-SUCH-CLAIM"]) == 2
    assert "no claim matches" in capsys.readouterr().err


def test_json_into_missing_directory_exits_two(tmp_path, capsys):
    assert check_main(["--only", "INV-1", "--json", str(tmp_path / "absent" / "report.json")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_table_is_aligned(temporary_claims):
    results = runner.run_checks(runner.selected_claims(["TMP"]))
    lines = runner.format_table(results).splitlines()
    header, rows = lines[0], lines[2:6]
    for result, row in zip(results, rows, strict=True):
        cells = {
            "ID": result.id,
            "measured": "n/a" if math.isnan(result.measured) else f"{result.measured:.4g}",
            "tolerance": result.tolerance,
            "result": "PASS" if result.passed else "FAIL",
        }
        for column, cell in cells.items():
            assert row[header.index(column) :].startswith(cell), (column, row)
    assert [row.split()[-1] for row in rows] == ["PASS", "FAIL", "FAIL", "FAIL"]


def test_json_report(temporary_claims, tmp_path, capsys):
    path = tmp_path / "report.json"
    path.write_text("old")
    assert check_main(["--only", "TMP", "--json", str(path)]) == 1
    data = json.loads(path.read_text())
    assert data["passed"] is False and data["total"] == 4
    assert data["failed"] == ["TMP-2", "TMP-3", "TMP-4"]
    assert data["environment"]["python"]
    assert {"momentum-ode", "torch", "numpy", "scipy", "torchdiffeq"} <= set(data["environment"]["versions"])
    assert data["seconds"] >= 0
    rows = {row["id"]: row for row in data["claims"]}
    assert rows["TMP-1"] == {
        "id": "TMP-1",
        "statement": "a claim that holds",
        "doc": "theory/none.md",
        "measured": 0.5,
        "tolerance": "<= 1",
        "passed": True,
        "seconds": rows["TMP-1"]["seconds"],
        "error": None,
    }
    assert rows["TMP-3"]["measured"] is None and rows["TMP-3"]["error"] == "RuntimeError: the check broke"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_json_written_for_a_passing_run(temporary_claims, tmp_path):
    path = tmp_path / "report.json"
    assert check_main(["--only", "TMP-1", "--json", str(path)]) == 0
    assert json.loads(path.read_text())["passed"] is True


def test_load_claims_reports_missing_and_broken_modules(tmp_path, monkeypatch):
    (tmp_path / "broken_theory_module.py").write_text("raise ValueError('bad module')\n")
    (tmp_path / "needs_missing_dependency.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    failures = runner.load_claims(
        ["no_such_theory_module_xyz", "broken_theory_module", "needs_missing_dependency"]
    )
    assert [f.id for f in failures] == [
        "import no_such_theory_module_xyz",
        "import broken_theory_module",
        "import needs_missing_dependency",
    ]
    assert not any(f.passed for f in failures)
    assert failures[1].error == "ValueError: bad module"
    assert math.isnan(failures[1].measured)
    for name in ("broken_theory_module", "needs_missing_dependency"):
        sys.modules.pop(name, None)


@pytest.mark.parametrize(
    ("claim_id", "prefixes", "expected"),
    [
        ("INV-3", None, True),
        ("INV-3", ["INV"], True),
        ("INV-3", ["INV-"], True),
        ("INV-3", ["INV-3"], True),
        ("INV-13", ["INV-1"], False),
        ("INV-3", ["IN"], False),
        ("LM-1", ["FP", "LM"], True),
    ],
)
def test_matches(claim_id, prefixes, expected):
    assert runner.matches(claim_id, prefixes) is expected


def test_thread_setting_is_restored():
    before = torch.get_num_threads()
    seen = []

    def record():
        seen.append(torch.get_num_threads())
        return Verdict(0.0, "", True)

    runner.run_checks([Claim("TMP-T", "records the thread count", "theory/none.md", record)])
    assert seen == [1] and torch.get_num_threads() == before


def test_summary_names_the_failures():
    failed = runner.load_claims(["mode.theory.absent"])
    line = runner.summary(failed, 0.0)
    assert "0 of 1 claims passed" in line and "FAILED: import mode.theory.absent" in line
