"""The core packages type-check cleanly with mypy, under the ``[tool.mypy]`` settings of pyproject.toml."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: The checked modules; other ``mode`` packages are analysed for their types only (follow_imports).
CORE = [
    "mode/ode.py",
    "mode/schemes",
    "mode/integrate.py",
    "mode/continuous.py",
    "mode/fixed_step.py",
    "mode/exact",
    "mode/nn",
    "mode/models",
]


def test_core_packages_type_check(monkeypatch):
    api = pytest.importorskip("mypy.api")
    # From the repository root, so that mypy reads pyproject.toml's [tool.mypy].
    monkeypatch.chdir(ROOT)
    stdout, stderr, status = api.run([*CORE, "--no-incremental", "--cache-dir", os.devnull])
    assert status == 0, f"mypy exit status {status}\n{stdout}{stderr}"
