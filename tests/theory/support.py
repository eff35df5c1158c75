"""Running a registered check from a test as ``mode check`` runs it."""

from mode.theory import runner
from mode.theory.registry import CLAIMS


def refuted(claim_id: str) -> bool:
    """Whether the check of ``claim_id`` returns a failing verdict; an exception fails the test instead,
    so that a sabotage which merely breaks the check cannot pass for a refutation."""
    result = runner.run_claim(CLAIMS[claim_id])
    assert result.error is None, result.error
    return not result.passed
