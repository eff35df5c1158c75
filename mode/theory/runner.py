"""Run the machine checks of ``theory/`` and report them: the logic behind ``mode check``.

The checks register themselves on import (:func:`mode.theory.registry.claim`), so the runner imports the
explicit list :data:`CHECK_MODULES`, runs every registered claim, turns an exception into a failed row
with its error text, and renders the results as an aligned table or a JSON report.
"""

from __future__ import annotations

import importlib
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

from mode.records import environment
from mode.runtime import torch_threads
from mode.theory.registry import CLAIMS, Claim, Verdict

#: Every module that registers claims, one per topic of ``theory/``.
CHECK_MODULES = (
    "mode.theory.invertibility",
    "mode.theory.finite_precision",
    "mode.theory.discretization",
    "mode.theory.learning_to_optimize",
    "mode.theory.linear_maps",
    "mode.theory.one_dimensional",
)


@dataclass(frozen=True)
class Result:
    """One row of the report: a claim, what its check measured and whether it passed."""

    id: str
    statement: str
    doc: str
    measured: float
    tolerance: str
    passed: bool
    seconds: float
    error: str | None = None


def load_claims(modules: Iterable[str] = CHECK_MODULES) -> list[Result]:
    """Import the check modules, which registers their claims in :data:`~mode.theory.registry.CLAIMS`.

    Returns
    -------
    list of Result
        A failed :class:`Result` for each module that is missing or raised on import: the list is
        explicit, so a module that does not load is a claim that was not checked.
    """
    failures = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as error:  # a broken module must show up as a failure, whatever it raised
            failures.append(_import_failure(name, error))
    return failures


def _import_failure(name: str, error: BaseException) -> Result:
    return Result(
        id=f"import {name}",
        statement=f"module {name} imports and registers its claims",
        doc="",
        measured=math.nan,
        tolerance="imports",
        passed=False,
        seconds=0.0,
        error=f"{type(error).__name__}: {error}",
    )


def matches(claim_id: str, prefixes: Iterable[str] | None) -> bool:
    """Whether ``claim_id`` is one of ``prefixes`` or numbered under one (``INV`` selects ``INV-3``)."""
    if prefixes is None:
        return True
    return any(claim_id == p or claim_id.startswith(p.rstrip("-") + "-") for p in prefixes)


def run_claim(claim: Claim) -> Result:
    """Run one check, single-threaded; an exception or a malformed return value is a failure carrying its
    error text."""
    start = time.perf_counter()
    try:
        with torch_threads(1):
            verdict = claim.check()
        if not isinstance(verdict, Verdict) or not isinstance(verdict.passed, bool):
            raise TypeError(f"the check returned {verdict!r}, not a Verdict with a bool 'passed'")
        measured, tolerance, passed, error = float(verdict.measured), verdict.tolerance, verdict.passed, None
    except Exception as exc:  # every failure of a check is reported, never propagated
        measured, tolerance, passed, error = math.nan, "", False, f"{type(exc).__name__}: {exc}"
    return Result(
        id=claim.id,
        statement=claim.statement,
        doc=claim.doc,
        measured=measured,
        tolerance=tolerance,
        passed=passed,
        seconds=time.perf_counter() - start,
        error=error,
    )


def run_checks(claims: Iterable[Claim], progress: Callable[[Result], None] | None = None) -> list[Result]:
    """Run ``claims`` in order (:func:`run_claim`), calling ``progress(result)`` after each."""
    results = []
    for claim in claims:
        results.append(run_claim(claim))
        if progress is not None:
            progress(results[-1])
    return results


def selected_claims(only: Iterable[str] | None = None) -> list[Claim]:
    """The registered claims, in registration order, whose IDs :func:`matches` ``only``."""
    return [c for c in CLAIMS.values() if matches(c.id, only)]


# ASCII only: the table must print on a terminal of any encoding.
def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _measured(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.4g}"


def format_table(results: list[Result], width: int = 60) -> str:
    """An aligned text table (ID, claim, measured, tolerance, PASS/FAIL), claim and tolerance clipped to
    ``width`` characters, followed by the error text of every failed check that raised."""
    header = ("ID", "claim", "measured", "tolerance", "result")
    rows = [
        (r.id, _clip(r.statement, width), _measured(r.measured), _clip(r.tolerance, width), status(r))
        for r in results
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    rule = "  ".join("-" * w for w in widths)
    title = "  ".join(cell.ljust(w) for cell, w in zip(header, widths, strict=True)).rstrip()
    errors = [f"{r.id}: {r.error}" for r in results if r.error]
    return "\n".join([title, rule, *lines, *(["", "errors:", *errors] if errors else [])])


def status(result: Result) -> str:
    """``PASS`` or ``FAIL``."""
    return "PASS" if result.passed else "FAIL"


def summary(results: list[Result], seconds: float) -> str:
    """One line: how many passed, which failed, and the wall time."""
    failed = [r.id for r in results if not r.passed]
    line = f"{len(results) - len(failed)} of {len(results)} claims passed in {seconds:.1f} s"
    if failed:
        line += f"; FAILED: {', '.join(failed)}"
    return line


def report(results: list[Result], seconds: float) -> dict:
    """The JSON-serialisable report: every row, the overall verdict, versions and timings.

    Non-finite measured values (a check that raised) are written as ``null``.
    """
    rows = []
    for result in results:
        row = asdict(result)
        row["measured"] = result.measured if math.isfinite(result.measured) else None
        rows.append(row)
    return {
        "passed": all(r.passed for r in results),
        "total": len(results),
        "failed": [r.id for r in results if not r.passed],
        "seconds": seconds,
        "environment": environment(),
        "claims": rows,
    }
