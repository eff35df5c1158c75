"""The ``mode`` command line."""

from __future__ import annotations

import argparse
import sys

import mode


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mode",
        description="momentum-ode: second-order neural ODEs and Momentum ResNets with exact reversal.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {mode.__version__}")
    parser.add_subparsers(dest="command", metavar="COMMAND")
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
