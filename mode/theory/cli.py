"""``mode check``: run every machine check of ``theory/``, print the table, optionally write it as JSON."""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

from mode.cli import usage_error
from mode.records import check_output_file, write_json
from mode.theory import runner


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``check`` subcommand on ``subparsers``."""
    parser = subparsers.add_parser(
        "check",
        help="run the machine checks of theory/ and print a table of the results",
        description=(
            "Run the check of every proposition of theory/ and print a table (ID, claim, measured value, "
            "tolerance, PASS/FAIL). Exits 1 if any check fails, 2 on a usage error (--only selects nothing, "
            "--json cannot be written: a directory, a missing or read-only folder), found before any check "
            "runs."
        ),
    )
    parser.add_argument(
        "--only",
        metavar="PREFIX",
        action="append",
        help="run only the claims whose ID is PREFIX or numbered under it (INV, FP-2); repeatable",
    )
    parser.add_argument(
        "--json",
        metavar="FILE",
        type=Path,
        help="also write the table, with versions and timings, to FILE (replaced atomically)",
    )
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the selected checks; 0 if all pass, 1 if any fails, 2 on a usage error."""
    if args.json is not None:
        try:
            check_output_file(args.json, "--json", example="report.json")
        except ValueError as error:
            return usage_error("check", str(error))
    failures = runner.load_claims()
    claims = runner.selected_claims(args.only)
    if not claims:
        return usage_error(
            "check",
            f"no claim matches --only {' '.join(args.only or [])}; give an ID or a prefix (INV, FP-2)",
        )
    done = itertools.count(1)

    def progress(result: runner.Result) -> None:
        line = f"[{next(done)}/{len(claims)}] {result.id} {runner.status(result)} ({result.seconds:.1f} s)"
        print(line, file=sys.stderr)

    start = time.perf_counter()
    results = failures + runner.run_checks(claims, progress)
    seconds = time.perf_counter() - start
    print(runner.format_table(results))
    print()
    print(runner.summary(results, seconds))
    if args.json is not None:
        write_json(args.json, runner.report(results, seconds))
    return 0 if all(r.passed for r in results) else 1
