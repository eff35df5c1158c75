r"""``memory-depth``: the MomentumNet memory and time benchmark (``mode bench memory``), in the report.

It runs :func:`mode.bench.memory.run_memory_benchmark` on one workload, ``wide-mlp`` (the benchmark's
historical workload: blocks :math:`\mathrm{Linear}(32, 1024) \to \tanh \to \mathrm{Linear}(1024, 32)`, batch
256, at full size), at the benchmark's quick or full depths, sizes and settings. The whole benchmark, five
workloads, takes about 40 minutes at full size, too long for the report: ``mode bench memory`` runs it,
and the other workloads measure the same methods on other blocks. The benchmark writes its own
``results.json`` (definitions, caveats, skipped cells, targets) and figures into the subfolder
``benchmark/``; the metrics here repeat its rows and targets for the workload, met or not.

The criteria are what the reversible mode must do on any machine:

* gradients: against float64 autograd, its float32 gradients are at most
  :data:`~mode.bench.summary.GRADIENT_ERROR_RATIO` times as far off as float32 autograd's, at every depth
  (worst of input and parameters): the benchmark's own target, read from its rows;
* memory: it stores no activations. Its activation memory less the bit stack grows per layer by at most
  a fraction of autograd's growth (:data:`FULL_GROWTH_FRACTION`; :data:`QUICK_GROWTH_FRACTION` at the
  quick sizes, where a few hundred kB of resident-set noise weigh more). Storing the blocks' inputs alone
  would cost :math:`d/(d + d_h)` of autograd's growth, 3 % at full size. What it does keep per layer is
  FP-5 (a)'s record of each step that moved an exponent: four int64 with one exponent per tensor;
* bit stack: at the deepest depth, the bits per coordinate the benchmark measured lie within FP-5's
  bounds (d), from the pushes of a replay of the same forward (:func:`mode.analysis.stack_replay`): at
  least :math:`L\log_2(1/\gamma)` plus the bits the exponent moves shifted out, plus one. FP-4's bound on
  the multiplies alone no longer bounds MomentumNet's stack, which holds the exponent moves' bits too;
* the price of relative precision: the bits the exponent moves shift out are at most
  :data:`EXPONENT_BITS_FRACTION` of the :math:`L\log_2(1/\gamma)` bits the multiplies destroy, plus
  :data:`EXPONENT_BITS_ALLOWANCE` for the first layers. One
  exponent per sample fails this on a batch of 256 (some sample moves at almost every layer, and every
  coordinate pays: several times the multiplies' bits); one per tensor moves a few times per thousand
  layers.

Step time is reported and not judged: on a shared machine it measures the neighbours as much as the code.
"""

from __future__ import annotations

import math

from mode.experiments.registry import criterion, experiment

#: Reversible growth in activation memory (less the bit stack) over autograd's, at most.
FULL_GROWTH_FRACTION = 0.02
#: The same for a quick run, whose shallow depths leave the fixed allocations a larger share.
QUICK_GROWTH_FRACTION = 0.1
#: Bits pushed by exponent moves, at most this fraction of the bits the multiplies by gamma destroy plus
#: :data:`EXPONENT_BITS_ALLOWANCE`: the moves of the first layers, while the state leaves the input's
#: scale, are a constant, not a rate.
EXPONENT_BITS_FRACTION = 1.0
#: Bits per coordinate granted to the exponent moves of the first layers (see above).
EXPONENT_BITS_ALLOWANCE = 16
#: The workload (a name, or a :class:`~mode.bench.workloads.Workload`) and, ``None`` for the benchmark's
#: own, the depths and :class:`~mode.bench.workloads.Settings` at the quick and the full size.
QUICK = {"workload": "wide-mlp", "depths": None, "settings": None}
FULL = {"workload": "wide-mlp", "depths": None, "settings": None}


def _bit_stack_criteria(results: dict, name: str) -> tuple[dict, dict]:
    """The bit stack of ``name``'s deepest reversible row against FP-5 (d), and the replay behind it."""
    # Imported here: mode.analysis imports other experiments, and the benchmark's extras.
    from mode.analysis import benchmark_series, stack_replay

    depths, bits = benchmark_series(results, "reversible", "stack_bits_per_coordinate", workload=name)
    replay = {**stack_replay(results, name, int(depths[-1])), "depth": int(depths[-1])}
    criteria = {
        "bit stack at the deepest depth >= FP-5 lower bound, L log2(1/gamma) + exponent bits + 1": criterion(
            bits[-1], ">=", replay["lower"]
        ),
        "bit stack at the deepest depth < FP-5 upper bound": criterion(bits[-1], "<", replay["upper"]),
        f"exponent-move bits <= {EXPONENT_BITS_FRACTION} L log2(1/gamma) + {EXPONENT_BITS_ALLOWANCE}, "
        "deepest depth": criterion(
            replay["exponent_bits"],
            "<=",
            EXPONENT_BITS_FRACTION * replay["multiply_bits"] + EXPONENT_BITS_ALLOWANCE,
        ),
    }
    return criteria, replay


@experiment(
    "memory-depth", "Activation memory, step time and gradient error against depth (mode bench memory)"
)
def run(context) -> dict:
    try:
        from mode.analysis import memory_growth
        from mode.bench.memory import run_memory_benchmark
        from mode.bench.summary import GRADIENT_ERROR_RATIO, evaluate_targets
    except ImportError as error:  # the benchmark compares with the peer packages momentumnet and memcnn
        raise ImportError(
            f"memory-depth runs mode bench memory, which needs: pip install 'momentum-ode[bench]' ({error})"
        ) from error
    size = QUICK if context.quick else FULL
    out = context.out / "benchmark"
    results = run_memory_benchmark(
        workloads=(size["workload"],),
        depths=size["depths"],
        quick=context.quick,
        seed=context.seed,
        out=out,
        settings=size["settings"],
    )
    context.figures.extend(sorted(f"{out.name}/{path.name}" for path in out.glob("*.png")))
    (name,) = results["settings"]["workloads"]
    targets = evaluate_targets(results["rows"], name, results["stacks"])  # measured, as the criteria
    accuracy = targets["gradient_accuracy"]["value"]  # None where no depth had a float64 reference
    growth = memory_growth(results, "reversible", name, bit_stack=False) / memory_growth(
        results, "autograd", name
    )
    criteria = {
        "reversible / float32 autograd gradient error against float64, worst depth": criterion(
            math.inf if accuracy is None else accuracy, "<=", GRADIENT_ERROR_RATIO
        ),
        "reversible memory growth (less the bit stack) / autograd memory growth": criterion(
            growth, "<=", QUICK_GROWTH_FRACTION if context.quick else FULL_GROWTH_FRACTION
        ),
    }
    stack, replay = _bit_stack_criteria(results, name)
    criteria.update(stack)
    return {
        "settings": results["settings"],
        "metrics": {
            "workload": results["workloads"][name],
            "rows": [row for row in results["rows"] if row["workload"] == name],
            "skipped": [cell for cell in results["skipped"] if cell["workload"] == name],
            "targets": targets,
            "memory_check": results["memory_check"][name],
            "stack_replay": replay,
        },
        "criteria": criteria,
    }
