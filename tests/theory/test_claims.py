"""Every registered claim passes, and theory/ and the registry name the same claims."""

import re
from pathlib import Path

import pytest

from mode.theory import runner
from mode.theory.registry import CLAIMS

ROOT = Path(__file__).resolve().parents[2]
IMPORT_FAILURES = runner.load_claims()
THEORY_CLAIMS = [c for c in CLAIMS.values() if c.check.__module__ in runner.CHECK_MODULES]


def test_every_check_module_imports():
    assert IMPORT_FAILURES == []


@pytest.mark.parametrize("claim", THEORY_CLAIMS, ids=lambda c: c.id)
def test_claim_passes(claim):
    result = runner.run_claim(claim)
    assert result.error is None, result.error
    assert result.passed, result


@pytest.mark.parametrize("claim", THEORY_CLAIMS, ids=lambda c: c.id)
def test_claim_is_written_up(claim):
    text = (ROOT / claim.doc).read_text(encoding="utf-8")
    assert re.search(rf"^## {re.escape(claim.id)}\b", text, re.MULTILINE), f"no section for {claim.id}"
    assert re.search(rf"^Check: {re.escape(claim.id)}$", text, re.MULTILINE), f"no 'Check: {claim.id}'"


def test_every_named_check_is_registered():
    named = {
        (path.name, match)
        for path in (ROOT / "theory").glob("*.md")
        for match in re.findall(r"^Check: (\S+)$", path.read_text(encoding="utf-8"), re.MULTILINE)
    }
    assert named, "theory/ names no checks"
    unregistered = sorted((doc, id_) for doc, id_ in named if id_ not in CLAIMS)
    assert unregistered == []
    misfiled = sorted((doc, id_) for doc, id_ in named if Path(CLAIMS[id_].doc).name != doc)
    assert misfiled == []
