r"""``memory-depth``: the MomentumNet memory and time benchmark (``mode bench memory``), in the report.

It runs :func:`mode.bench.memory.run_memory_benchmark` (the quick or the full sizes of the benchmark),
which writes its own ``results.json`` (with its definitions and caveats) and figures into the subfolder
``benchmark/``, and judges two of the benchmark's targets: the reversible mode's activation memory, less
its bit stack, stays flat in depth, and its gradients equal autograd's. At the full sizes flatness is the
issue's target (deepest within 1.2x of shallowest); at the quick sizes the reversible step needs only
about 1.5 MB and a few hundred kB of resident-set noise can move that ratio past 1.2 (seen: 1.26 on a
loaded machine), so there the reversible growth from the shallowest to the deepest depth is judged
against autograd's growth (at most 5 % of it). Its bit stack is judged at the full depths only (at the
quick ones the 64-bit live word dominates the :math:`L \log_2(1/\gamma)` bits); step time is reported
and not judged, since on a shared machine it measures the neighbours as much as the code.
"""

from __future__ import annotations

from mode.experiments.registry import criterion, experiment

#: Largest relative gradient error of the reversible mode against autograd (float32 rounding only).
GRADIENT_TOLERANCE = 1e-5
#: Quick sizes: largest reversible growth in activation memory, as a fraction of autograd's.
QUICK_GROWTH_FRACTION = 0.05
#: ``None``: the benchmark's own depths and workload for its quick or full size.
QUICK = {"depths": None, "workload": None}
FULL = {"depths": None, "workload": None}


@experiment(
    "memory-depth", "Activation memory, step time and gradient error against depth (mode bench memory)"
)
def run(context) -> dict:
    try:
        from mode.bench.memory import run_memory_benchmark
        from mode.bench.summary import activation_without_stack
    except ImportError as error:  # the benchmark compares with the peer package momentumnet
        raise ImportError(
            f"memory-depth runs mode bench memory, which needs: pip install 'momentum-ode[bench]' ({error})"
        ) from error
    size = QUICK if context.quick else FULL
    out = context.out / "benchmark"
    results = run_memory_benchmark(quick=context.quick, seed=context.seed, out=out, **size)
    context.figures.extend(sorted(f"{out.name}/{path.name}" for path in out.glob("*.png")))
    targets = results["targets"]
    reversible = [row for row in results["rows"] if row["method"] == "reversible"]
    criteria = {
        "reversible max relative parameter-gradient error vs autograd": criterion(
            max(row["grad_error"]["parameters"] for row in reversible), "<=", GRADIENT_TOLERANCE
        ),
    }
    if context.quick:

        def growth(method: str) -> int:
            sizes = {
                row["depth"]: activation_without_stack(row)
                for row in results["rows"]
                if row["method"] == method
            }
            return sizes[max(sizes)] - sizes[min(sizes)]

        criteria["reversible memory growth / autograd memory growth, shallowest to deepest"] = criterion(
            growth("reversible") / growth("autograd"), "<=", QUICK_GROWTH_FRACTION
        )
    else:
        criteria["reversible memory flat (deepest / shallowest, less the bit stack)"] = criterion(
            targets["reversible_memory_flat"]["ratio"], "<=", targets["reversible_memory_flat"]["threshold"]
        )
        by_depth = targets["bit_stack_bits"]["ratio_by_depth"]
        criteria["bit stack / (L log2(1/gamma)) at the deepest depth"] = criterion(
            by_depth[max(by_depth)], "<=", targets["bit_stack_bits"]["threshold"]
        )
    return {
        "settings": results["settings"],
        "metrics": {"rows": results["rows"], "targets": targets},
        "criteria": criteria,
    }
