"""``mode bench``: the benchmark subcommands."""

from __future__ import annotations

import argparse
import dataclasses


def _memory(args: argparse.Namespace) -> int:
    # Imported here so that ``mode --help`` does not load matplotlib and momentumnet.
    from mode.bench.memory import FULL, QUICK, run_memory_benchmark
    from mode.bench.summary import markdown_table

    workload = dataclasses.replace(QUICK if args.quick else FULL, threads=args.threads)
    results = run_memory_benchmark(
        depths=args.depths,
        quick=args.quick,
        seed=args.seed,
        out=args.out,
        device=args.device,
        workload=workload,
    )
    print(markdown_table(results["rows"]))
    for name, target in results["targets"].items():
        print(f"{name}: {'met' if target['met'] else 'NOT met'} ({target['target']})")
    print(f"wrote {args.out}/results.json and figures")
    return 0


def add_parser(subparsers) -> None:
    """Add ``mode bench memory`` to the ``mode`` command line."""
    bench = subparsers.add_parser("bench", help="run a benchmark", description="Benchmarks of momentum-ode.")
    benchmarks = bench.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    memory = benchmarks.add_parser(
        "memory",
        help="activation memory, step time and gradient error against depth",
        description="Activation memory (peak training memory minus parameters and gradients), step time "
        "and gradient error against depth for a ResNet, MomentumNet (autograd, reversible, "
        "checkpointing) and momentumnet's memory-saving mode. Writes results.json and PNG figures.",
    )
    memory.add_argument(
        "--quick", action="store_true", help="smaller sizes and depths 10, 30, 100 (~1 minute)"
    )
    memory.add_argument(
        "--depths", type=int, nargs="+", metavar="L", help="depths (default 10 30 100 300 1000)"
    )
    memory.add_argument("--seed", type=int, default=0, help="seed of the weights and the input (default 0)")
    memory.add_argument(
        "--out", default="benchmarks/memory_depth", help="output directory (default benchmarks/memory_depth)"
    )
    memory.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to run (default cpu)")
    memory.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1: stable timings on a shared machine)"
    )
    memory.set_defaults(run=_memory)
