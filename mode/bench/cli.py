"""``mode bench``: the benchmark subcommands."""

from __future__ import annotations

import argparse
import dataclasses

from mode.bench.workloads import (
    FULL_DEPTHS,
    FULL_SETTINGS,
    GIB,
    QUICK_DEPTHS,
    QUICK_SETTINGS,
    WORKLOAD_NAMES,
)
from mode.cli import usage_error
from mode.records import check_output_dir


def _words(values) -> str:
    return " ".join(map(str, values))


def _memory(args: argparse.Namespace) -> int:
    """Run the benchmark; 0 if every target is met, 1 if any is not (the results are written either
    way), 2 on a usage error."""
    try:
        check_output_dir(args.out, "--out")
    except ValueError as error:
        return usage_error("bench memory", str(error))
    # Imported here so that ``mode --help`` does not load matplotlib, momentumnet and memcnn.
    from mode.bench.memory import run_memory_benchmark
    from mode.bench.summary import markdown_table

    given = {
        "memory_cap": None if args.memory_cap is None else round(args.memory_cap * GIB),
        "step_budget_s": args.step_budget,
        "timing_budget_s": args.timing_budget,
        "memory_workers": args.memory_workers,
    }
    overrides = {"threads": args.threads, **{key: value for key, value in given.items() if value is not None}}
    results = run_memory_benchmark(
        workloads=args.workloads,
        depths=args.depths,
        quick=args.quick,
        seed=args.seed,
        out=args.out,
        device=args.device,
        settings=dataclasses.replace(QUICK_SETTINGS if args.quick else FULL_SETTINGS, **overrides),
    )
    print(markdown_table(results["rows"]))
    for cell in results["skipped"]:
        print(f"skipped {cell['workload']} {cell['method']} L={cell['depth']}: {cell['reason']}")
    for timing in results["timings"]:
        if timing["reason"] is not None:
            print(f"not timed {timing['workload']} L={timing['depth']}: {timing['reason']}")
    return _report_targets(results["targets"], args.out)


def _report_targets(targets: dict, out) -> int:
    """Print every target of ``{workload: {name: target}}`` and the count met; 1 if any is not, else 0."""
    missed = []
    for workload, named in targets.items():
        for name, target in named.items():
            verdict = "met" if target["met"] else "NOT met"
            value = f"; value {target['value']}" if "value" in target else ""
            print(f"{workload} {name}: {verdict} ({target['target']}{value})")
            if not target["met"]:
                missed.append(f"{workload} {name}")
    print(f"wrote {out}/results.json and figures")
    total = sum(len(named) for named in targets.values())
    print(
        f"{total - len(missed)} of {total} targets met"
        + (f"; NOT met: {', '.join(missed)}" if missed else "")
    )
    return 1 if missed else 0


def _ode(args: argparse.Namespace) -> int:
    """Run the ODE benchmark; 0 if every target is met, 1 if any is not (the results are written either
    way), 2 on a usage error."""
    try:
        check_output_dir(args.out, "--out")
    except ValueError as error:
        return usage_error("bench ode", str(error))
    # Imported here so that ``mode --help`` does not load matplotlib and torchdiffeq.
    from mode.bench.ode import run_ode_benchmark, summary_table

    results = run_ode_benchmark(quick=args.quick, seed=args.seed, out=args.out)
    print(summary_table(results))
    return _report_targets(results["targets"], args.out)


def add_parser(subparsers) -> None:
    """Add ``mode bench memory`` and ``mode bench ode`` to the ``mode`` command line."""
    bench = subparsers.add_parser("bench", help="run a benchmark", description="Benchmarks of momentum-ode.")
    benchmarks = bench.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    memory = benchmarks.add_parser(
        "memory",
        help="activation memory, step time and gradient error against depth, per workload",
        description="Activation memory (peak training memory minus parameters and gradients), step time "
        "and gradient error against depth on MLP, conv and transformer workloads, for a ResNet, "
        "MomentumNet (autograd, reversible, checkpointing), momentumnet's memory-saving mode and memcnn's "
        "invertible couplings. Cells estimated past the memory cap or the step budget are skipped with "
        "the reason. Writes results.json and PNG figures. Exits 1 if any target is not met (the results "
        "are written all the same), 2 on a usage error (an --out that cannot be written, found before "
        "anything runs), as mode check and mode experiment do.",
    )
    memory.add_argument(
        "--quick",
        action="store_true",
        help=f"small sizes and depths {_words(QUICK_DEPTHS)} (a few seconds per cell)",
    )
    memory.add_argument(
        "--workloads",
        nargs="+",
        choices=WORKLOAD_NAMES,
        metavar="NAME",
        help=f"workloads to run (default all: {_words(WORKLOAD_NAMES)})",
    )
    memory.add_argument(
        "--depths",
        type=int,
        nargs="+",
        metavar="L",
        help=f"depths (default {_words(FULL_DEPTHS)}; --quick: {_words(QUICK_DEPTHS)})",
    )
    memory.add_argument("--seed", type=int, default=0, help="seed of the weights and the input (default 0)")
    memory.add_argument(
        "--out", default="benchmarks/memory_depth", help="output directory (default benchmarks/memory_depth)"
    )
    memory.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to run (default cpu)")
    memory.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1: stable timings on a shared machine)"
    )
    memory.add_argument(
        "--memory-cap",
        type=float,
        metavar="GIB",
        help="skip cells whose peak memory is estimated above this "
        f"(default {FULL_SETTINGS.memory_cap / GIB:g})",
    )
    memory.add_argument(
        "--step-budget",
        type=float,
        metavar="SECONDS",
        help="skip cells whose training step is estimated above this (default "
        f"{FULL_SETTINGS.step_budget_s:g}; --quick: {QUICK_SETTINGS.step_budget_s:g})",
    )
    memory.add_argument(
        "--timing-budget",
        type=float,
        metavar="SECONDS",
        help="time no depth whose timing process is estimated above this; its memory is still measured "
        f"(default {FULL_SETTINGS.timing_budget_s:g}; --quick: {QUICK_SETTINGS.timing_budget_s:g})",
    )
    memory.add_argument(
        "--memory-workers",
        type=int,
        metavar="N",
        help=f"memory processes at once (default {FULL_SETTINGS.memory_workers}; timings run alone)",
    )
    memory.set_defaults(run=_memory)
    ode = benchmarks.add_parser(
        "ode",
        help="gradient error, activation memory and time of neural-ODE gradient methods",
        description="Gradient error (against a float64 reference of the true ODE gradient), activation "
        "memory and time of one forward and backward pass of eps x'' + x' = f(x, t), in float32, for "
        "torchdiffeq's dopri5 and rk4 (direct and adjoint), MALI (TorchDiffEqPack) and mode's reversible "
        "momentum and leapfrog and checkpointed leapfrog; and the float64 gap of mode's reversible "
        "gradients to autograd through the same steps. Writes results.json and PNG figures. Exits 1 if "
        "any target is not met (the results are written all the same), 2 on a usage error.",
    )
    ode.add_argument("--quick", action="store_true", help="tiny sizes, steps 16 and 64 (under a minute)")
    ode.add_argument("--seed", type=int, default=0, help="seed of the fields, states and loss (default 0)")
    ode.add_argument("--out", default="benchmarks/ode", help="output directory (default benchmarks/ode)")
    ode.set_defaults(run=_ode)
