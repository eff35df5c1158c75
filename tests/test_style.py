"""The code is ruff-clean and ruff-formatted (the settings of ``pyproject.toml``)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PATHS = ["mode", "tests", "examples", "docs"]


def _ruff(*args: str) -> subprocess.CompletedProcess:
    pytest.importorskip("ruff")
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    return subprocess.run([ruff, *args, *PATHS], cwd=ROOT, capture_output=True, text=True, check=False)


def test_ruff_check_is_clean():
    done = _ruff("check")
    assert done.returncode == 0, done.stdout + done.stderr


def test_ruff_format_leaves_every_file_unchanged():
    done = _ruff("format", "--check")
    assert done.returncode == 0, done.stdout + done.stderr
