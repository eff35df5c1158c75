"""The ``mode`` command line: ``mode check | bench | experiment | reproduce``; each subcommand lives beside
the code it runs. Exit status: 0 success, 1 a check, criterion or target not met, 2 a usage error."""

from __future__ import annotations

import argparse
import sys

import mode

#: Modules that contribute a subcommand through ``add_parser(subparsers)``; each parser sets ``run``.
SUBCOMMANDS = ("mode.theory.cli", "mode.bench.cli", "mode.experiments.cli")


def usage_error(command: str, message: str) -> int:
    """Report a usage error found by a subcommand as argparse reports its own, on one line of stderr,
    and return argparse's exit status for it, 2.

    Subcommands return the status rather than exit, so that they can be run and tested in-process.
    """
    print(f"mode {command}: error: {message}", file=sys.stderr)
    return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mode",
        description="momentum-ode: second-order neural ODEs and Momentum ResNets with exact reversal.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {mode.__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        __import__(name, fromlist=["add_parser"]).add_parser(subparsers)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
