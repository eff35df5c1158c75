"""``mode bench memory``: activation memory, step time and gradient error against depth.

Compares a ResNet, MomentumNet with autograd, reversible and checkpointed backprop, and the
``momentumnet`` package's memory-saving mode, on the same blocks (see :mod:`mode.bench.methods`).
Memory is measured in a fresh process per method and depth (:mod:`mode.bench.peak`), time and
gradients in this process (:mod:`mode.bench.steps`).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path

from tqdm.auto import tqdm

from mode.bench.figures import save_figures
from mode.bench.methods import METHODS, REFERENCE, Workload, momentumnet_velocity_factor
from mode.bench.peak import PointServer
from mode.bench.rss import MALLOC_ENV
from mode.bench.steps import clock_name, measure_depth
from mode.bench.summary import evaluate_targets, memory_check
from mode.records import environment, write_json

FULL_DEPTHS = (10, 30, 100, 300, 1000)
QUICK_DEPTHS = (10, 30, 100)
#: A hidden width of 1024 makes f cost several times the reversible mode's integer bookkeeping (which
#: scales with batch * dim alone); a batch well above 2 * dim makes autograd's stored activations,
#: batch * (dim + hidden) floats per layer, outweigh a copy of the weights, 2 * dim * hidden per layer.
FULL = Workload(batch=256, dim=32, hidden=1024)
QUICK = Workload(batch=128, dim=32, hidden=512, min_seconds=0.2)
DEFAULT_OUT = Path("benchmarks") / "memory_depth"

DEFINITIONS = {
    "activation_bytes": (
        "Peak memory of one training step (forward and backward of mean(x_L**2)) minus the memory held "
        "just before it, after an identical warm-up step has allocated the .grad tensors; measured in a "
        "fresh process per method and depth. CPU: peak resident set size (VmHWM, restarted after the "
        "warm-up by writing 5 to /proc/self/clear_refs; peak_reset says whether that worked) minus the "
        "resident set size before the step (VmRSS). GPU: torch.cuda.max_memory_allocated minus "
        "memory_allocated before the step."
    ),
    "caveats": [
        "On the CPU the figure counts every resident byte the step adds: the input's gradient, "
        "temporaries of one layer and allocator fragmentation as well as what the method stores; the "
        "extras do not grow with depth.",
        "The point processes run glibc's malloc with "
        + " ".join(f"{name}={value}" for name, value in MALLOC_ENV.items())
        + ", so that freed tensors leave the resident set at once instead of being cached on the heap, "
        "where the measured step would reuse the warm-up's memory unseen.",
        "activation_bytes includes anything the method holds during backward beyond the stored "
        "parameters and gradients: the reversible bit stack (also reported alone as stack_bytes) and, "
        "for momentumnet, the parameter gradients of all layers, which its autograd Function returns "
        "together at the end of backward (one extra copy, parameter_bytes). MomentumNet's reversible "
        "mode hands each layer's gradients to autograd as soon as that layer is done.",
        "Step times are medians over interleaved rounds. settings.step_clock names the clock: "
        "process_time (CPU time of the benchmark process, single-threaded on the CPU) leaves out the "
        "time other jobs hold the core but not their effect on caches; load_average (before and after "
        "the run) says how busy the machine was. Ratios between methods are more reliable than "
        "absolute times.",
    ],
    "stack_bits_bound": (
        "L log2(2**k / n) for the exact gamma = n / 2**k that MomentumNet multiplies by: the bits per "
        "coordinate that the L multiplications destroy"
    ),
    "grad_error": (
        "|g - g_ref| / |g_ref| for the input gradient and for all parameter gradients together, against "
        "MomentumNet autograd on the same weights and input; none for the ResNet (another model)."
    ),
    "grad_error_float64": (
        "The same relative errors against MomentumNet autograd run in float64 on the same weights and "
        "input: the part of grad_error that float32 rounding causes in any method, autograd included, "
        "grows with depth."
    ),
    "grad_error_own_rule": (
        "momentumnet's memory-saving forward multiplies v by gamma rounded to a fraction with denominator "
        "2**16 (settings.momentumnet_velocity_factor) while the force keeps 1 - gamma, and its backward "
        "uses gamma itself; this error is against plain autograd through that forward rule. Neither "
        "reference matches that mixture exactly, which shows at small depth (about 1e-5); at depth the "
        "error of the reversal dominates against both."
    ),
}


def _rows(memory: dict, steps: dict) -> list[dict]:
    rows = []
    for (method, depth), point in sorted(memory.items(), key=lambda item: item[0][1]):
        row = {"method": method, "depth": depth, **point, **steps[depth][method]}
        row["time_ratio_autograd"] = row["step_s"] / steps[depth][REFERENCE]["step_s"]
        row["time_ratio_resnet"] = row["step_s"] / steps[depth]["resnet"]["step_s"]
        rows.append(row)
    return rows


def run_memory_benchmark(
    depths=None,
    quick: bool = False,
    seed: int = 0,
    out=DEFAULT_OUT,
    device: str = "cpu",
    workload: Workload | None = None,
) -> dict:
    """Measure activation memory, step time and gradient error against depth; write JSON and figures.

    Parameters
    ----------
    depths : sequence of int, optional
        Depths :math:`L` (default 10, 30, 100, 300, 1000; with ``quick`` 10, 30, 100).
    quick : bool
        Use the smaller default workload and depths.
    seed : int
        Seed of the weights and the input.
    out : str or Path
        Directory for ``results.json`` and the PNG figures (created if missing).
    device : {"cpu", "cuda"}
        Where to run.
    workload : Workload, optional
        Overrides the default sizes and thread count (:data:`FULL`, or :data:`QUICK` with ``quick``).

    Returns
    -------
    dict
        What ``results.json`` holds: ``settings``, ``seed``, ``versions``, ``definitions``, ``methods``,
        ``rows`` (one per method and depth), ``targets`` and ``memory_check``.
    """
    depths = tuple(sorted(depths or (QUICK_DEPTHS if quick else FULL_DEPTHS)))
    workload = workload or (QUICK if quick else FULL)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    load_before = os.getloadavg()
    with tqdm(total=len(depths) * (len(METHODS) + 1), desc="mode bench memory", unit="point") as progress:
        memory = {}
        with PointServer() as server:
            for depth in depths:
                for method in METHODS:
                    progress.set_postfix_str(f"memory {method} L={depth}")
                    memory[method, depth] = server.measure(method, depth, workload, seed, device)
                    progress.update()
        steps = {}
        for depth in depths:
            progress.set_postfix_str(f"time and gradients L={depth}")
            steps[depth] = measure_depth(depth, workload, seed, device)
            progress.update()
    rows = _rows(memory, steps)
    results = {
        "benchmark": "memory_depth",
        "settings": {
            "depths": list(depths),
            "quick": quick,
            "device": device,
            **asdict(workload),
            "momentumnet_velocity_factor": momentumnet_velocity_factor(workload.gamma),
            "dtype": "float32",
            "block": "Linear(dim, hidden) -> tanh -> Linear(hidden, dim), own weights per layer",
            "loss": "mean(x_L ** 2)",
            "step_clock": clock_name(device, workload.threads),
        },
        "seed": seed,
        "environment": environment(),
        # Other processes slow the steps down: how busy the machine was (1, 5, 15-minute averages).
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "definitions": DEFINITIONS,
        "methods": METHODS,
        "rows": rows,
        "targets": evaluate_targets(rows),
        "memory_check": memory_check(rows, workload.batch * (workload.dim + workload.hidden) * 4),
        "elapsed_s": time.perf_counter() - started,
    }
    write_json(out / "results.json", results)
    save_figures(results, out)
    return results
