import json
import math
import stat

import pytest

from mode import records


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "report.json"
    path.write_text("previous")

    def broken_dump(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(records.json, "dump", broken_dump)
    with pytest.raises(OSError, match="disk full"):
        records.write_json(path, {"a": 1})
    assert path.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_json_round_trip_permissions_and_no_nan(tmp_path):
    path = records.write_json(tmp_path / "sub" / "r.json", {"a": [1, 2.5]})
    assert json.loads(path.read_text()) == {"a": [1, 2.5]}
    assert stat.S_IMODE(path.stat().st_mode) & 0o044, "readable like a file open() makes"
    with pytest.raises(ValueError):
        records.write_json(tmp_path / "nan.json", {"a": math.nan})
    assert not (tmp_path / "nan.json").exists()


def test_environment_names_the_versions():
    env = records.environment()
    assert env["versions"]["torch"] and env["versions"]["momentum-ode"] and env["python"]
