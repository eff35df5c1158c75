import subprocess
import sys

import pytest

import mode
from mode.cli import main


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert mode.__version__ in capsys.readouterr().out


def test_help_lists_subcommands(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for command in ("check", "bench", "experiment", "reproduce"):
        assert command in out


def test_console_script_entry_point():
    out = subprocess.run(
        [sys.executable, "-m", "mode.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "usage: mode" in out
