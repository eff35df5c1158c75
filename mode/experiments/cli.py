"""``mode experiment NAME`` and ``mode reproduce``."""

from __future__ import annotations

from mode.cli import usage_error
from mode.experiments.runner import load, reproduce, resolve, resolve_all, run_experiment


def _experiment(args) -> int:
    registry = load()
    if args.list or args.name is None:
        for exp in registry.values():
            print(f"{exp.name:24s} {exp.title}")
        return 0
    try:
        resolve(args.name, args.out, "--out")
    except ValueError as error:
        return usage_error("experiment", str(error))
    result = run_experiment(args.name, quick=args.quick, seed=args.seed, out=args.out, data=args.data)
    for key, c in result["criteria"].items():
        print(f"{key}: {c['value']:.4g} {c['op']} {c['bound']:.4g} -> {'pass' if c['passed'] else 'FAIL'}")
    print(f"wrote {args.out}/{args.name}/results.json ({result['wall_time_s']:.1f} s)")
    return 0 if result["passed"] else 1


def _reproduce(args) -> int:
    try:
        resolve_all(args.out, "--out")
    except ValueError as error:
        return usage_error("reproduce", str(error))
    results, report = reproduce(quick=args.quick, seed=args.seed, out=args.out, data=args.data)
    print(f"wrote {report}")
    return 0 if all(r["passed"] for r in results) else 1


def _common(parser) -> None:
    parser.add_argument(
        "--quick", action="store_true", help="a small setting (about a minute each on 2 CPU cores)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out",
        default="runs",
        help="output folder (default: runs); each experiment's folder in it is replaced whole at the end "
        "of its run, so an interrupted run leaves the previous one intact",
    )
    parser.add_argument(
        "--data", default=None, help="a local copy of a data set (e.g. CIFAR-10); nothing is downloaded"
    )


def add_parser(subparsers) -> None:
    exp = subparsers.add_parser(
        "experiment",
        help="run one experiment (--list to see them)",
        description="Run one experiment into OUT/NAME (results.json and figures). Exits 1 if a pass "
        "criterion fails, 2 on a usage error (unknown NAME, an --out that cannot be written), found "
        "before anything runs.",
    )
    exp.add_argument("name", nargs="?", help="experiment name")
    exp.add_argument("--list", action="store_true", help="list the experiments")
    _common(exp)
    exp.set_defaults(run=_experiment)
    rep = subparsers.add_parser("reproduce", help="run every experiment and write report.md")
    _common(rep)
    rep.set_defaults(run=_reproduce)
