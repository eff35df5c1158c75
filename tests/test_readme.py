"""The README's promises: its quick start runs, and CI runs its test command."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_quick_start_runs():
    block = re.search(r"## Quick start\s+```python\n(.*?)```", README, re.S).group(1)
    exec(compile(block, "README quick start", "exec"), {})


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "<!-- test-command -->" in ci and "<!-- test-command -->" in README
    command = README.split("<!-- test-command -->")[1].split("```bash\n")[1].split("\n")[0]
    assert "pytest" in command and '-e ".[test,vision,examples,bench,docs]"' in command
