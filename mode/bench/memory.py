"""``mode bench memory``: activation memory, step time and gradient error over a matrix of workloads.

For each workload (:mod:`mode.bench.workloads`: MLPs of three shapes, a conv block, a transformer
layer) and depth, it compares a ResNet, MomentumNet with autograd, reversible and checkpointed
backprop, the ``momentumnet`` package's memory-saving mode and memcnn's invertible additive couplings
(:mod:`mode.bench.methods`). Memory is measured in a fresh process per cell (:mod:`mode.bench.peak`),
time and gradients in a fresh process per workload and depth (:mod:`mode.bench.steps`). Cells whose
memory or step time, extrapolated from the shallower depths, would pass the cap or the budget are
skipped with the reason (:mod:`mode.bench.plan`).
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import asdict
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from tqdm.auto import tqdm

from mode.bench.figures import save_figures
from mode.bench.methods import METHODS, REFERENCE, momentumnet_velocity_factor
from mode.bench.peak import PointFailed, PointServer
from mode.bench.plan import PROBE_DEPTH, estimate, extrapolate, float64_reason, skip_reason, timing_reason
from mode.bench.rss import MALLOC_ENV
from mode.bench.steps import clock_name
from mode.bench.summary import compile_time, evaluate_targets, memory_check, time_ratios
from mode.bench.workloads import (
    FULL_DEPTHS,
    FULL_SETTINGS,
    FULL_WORKLOADS,
    QUICK_DEPTHS,
    QUICK_SETTINGS,
    QUICK_WORKLOADS,
    Settings,
    Workload,
)
from mode.records import environment, write_json

DEFAULT_OUT = Path("benchmarks") / "memory_depth"

DEFINITIONS = {
    "activation_bytes": (
        "Peak memory of one training step (forward and backward of mean(x_L**2)) minus the memory held "
        "just before it, after an identical warm-up step has allocated the .grad tensors; measured in a "
        "fresh process per workload, method and depth, counted at PyTorch's allocator. CPU: the largest "
        "running sum of allocated minus freed tensor bytes in the profiler's memory events "
        "(mode.bench.allocated.TensorPeak), from a third, identical step. GPU: "
        "torch.cuda.max_memory_allocated minus memory_allocated before the step."
    ),
    "resident_bytes": (
        "CPU only: peak resident set size of the measured step run without the profiler (VmHWM, "
        "restarted after the warm-up by writing 5 to /proc/self/clear_refs; peak_reset says whether that "
        "worked) minus the resident set size before it (VmRSS). It also counts Python objects, "
        "allocator fragmentation and scratch space outside tensors, at the resolution of pages."
    ),
    "caveats": [
        "activation_bytes counts every tensor byte the step adds: the input's gradient and "
        "temporaries of one layer as well as what the method stores; the extras do not grow with depth.",
        "The memory processes run glibc's malloc with "
        + " ".join(f"{name}={value}" for name, value in MALLOC_ENV.items())
        + ", so that freed tensors leave the resident set at once instead of being cached on the heap, "
        "where the measured step would reuse the warm-up's memory unseen. The timing processes run the "
        "default allocator, as users do.",
        "activation_bytes includes anything the method holds during backward beyond the stored "
        "parameters and gradients: the reversible bit stack (also reported alone as stack_bytes) and, "
        "for momentumnet, the parameter gradients of all layers, which its autograd Function returns "
        "together at the end of backward (one extra copy, parameter_bytes). MomentumNet's reversible "
        "mode and memcnn hand each layer's gradients to autograd as soon as that layer is done.",
        "Step times are medians over interleaved rounds in one fresh process per workload and depth. "
        "settings.step_clock names the clock: process_time (CPU time of the benchmark process, "
        "single-threaded on the CPU) leaves out the time other jobs hold the core but not their effect "
        "on caches; load_average (before and after the run) says how busy the machine was. Ratios "
        "between methods (ratios, from the same rounds) are more reliable than absolute times.",
        "BatchNorm (conv workload) normalises with the batch's statistics in training mode, so the "
        "running statistics, which the recomputing methods update again, change no output or gradient.",
    ],
    "memcnn": (
        "memcnn's AdditiveCoupling, y1 = x1 + Fm(x2), y2 = x2 + Gm(y1), on the two halves of the "
        "workload's dim (workloads.<name>.coupling), wrapped in InvertibleModuleWrapper(keep_input=False): "
        "the forward frees each coupling's input and the backward rebuilds it by inverting the coupling "
        "in floating point. Fm and Gm are blocks of the workload's kind on dim / 2 whose inner width "
        "(coupling_hidden) makes one coupling do the multiply-adds of one block, with as many weights: "
        "the same hidden width for the MLPs and the conv block, dim + dim_feedforward for the "
        "transformer. It is another model than the MomentumNet of the same depth."
    ),
    "stack_bits_bound": (
        "L log2(2**k / n) for the exact gamma = n / 2**k that MomentumNet multiplies by: the bits per "
        "coordinate that the L multiplications destroy"
    ),
    "grad_error": (
        "|g - g_ref| / |g_ref| for the input gradient and for all parameter gradients together, against "
        "MomentumNet autograd on the same weights and input; for memcnn against plain autograd through "
        "the same couplings; none for the ResNet (another model) and where autograd was not measured; a "
        "part is null where the gradients were not finite."
    ),
    "grad_error_float64": (
        "The same relative errors against plain autograd run in float64 on the same weights and input "
        "(MomentumNet autograd, or memcnn's couplings): the part of grad_error that float32 rounding "
        "causes in any method, autograd included, grows with depth. Left out (null) where the float64 "
        "steps would pass settings.memory_cap or settings.reference_budget_s (see references)."
    ),
    "grad_error_own_rule": (
        "momentumnet's memory-saving forward multiplies v by gamma rounded to a fraction with denominator "
        "2**16 (settings.momentumnet_velocity_factor) while the force keeps 1 - gamma, and its backward "
        "uses gamma itself; this error is against plain autograd through that forward rule. Neither "
        "reference matches that mixture exactly, which shows at small depth (about 1e-5); at depth the "
        "error of the reversal dominates against both."
    ),
    "compile": (
        "Per workload: the wall-clock time of the first reversible training step in a fresh timing "
        "process (after autograd's first step) minus the median wall-clock time of its later steps, at "
        "the shallowest timed depth (by_depth: at each). It is what the first step pays beyond a normal "
        "one: compilation (settings.MODE_COMPILE), lazy imports and caches. Every timing and memory "
        "process compiles anew; inductor's on-disk cache may serve the later ones."
    ),
    "skipped": (
        "Cells not run: peak memory or training step, extrapolated from the same method at shallower "
        "depths (linear through the two deepest, or in proportion to depth from one), above "
        "settings.memory_cap or settings.step_budget_s; the deeper cells of a method skipped or failed "
        "at a shallower depth; cells whose memory process failed (reason and error). Step times come "
        "from the timing processes, or where a depth was not timed from the memory processes "
        "(memory_step_wall_s, slower under their allocator setting). A sweep that starts deeper than "
        f"L={PROBE_DEPTH} first measures each method's memory there (probes) to have an estimate."
    ),
    "stacks": (
        "Where the reversible cell of a depth was skipped (its training step over the budget): its bit "
        "stack after one forward pass alone, which fills the stack as in training (stack_bytes, "
        "stack_bits_per_coordinate, stack_bits_bound, forward_wall_s), run if the forward pass, "
        "extrapolated from the shallower ones (estimated_forward_s), is within settings.stack_budget_s; "
        "reason says why not otherwise. The bit-stack target is judged at the deepest depth measured "
        "either way."
    ),
    "timings": (
        "Per workload and depth: reason is null where the timing process ran, else why not: its "
        "estimated time, (1 + settings.repeats) steps of every method, above settings.timing_budget_s "
        "(its rows keep their memory and have null times and gradient errors), or its failure. "
        "float64_reason is null where the float64 references ran (reference_wall_s long), else why not."
    ),
}


def select_workloads(workloads, quick: bool) -> tuple[Workload, ...]:
    """The workloads to run: ``None`` for all, else names (from
    :data:`~mode.bench.workloads.QUICK_WORKLOADS` with ``quick``, else ``FULL_WORKLOADS``) or
    :class:`~mode.bench.workloads.Workload` objects, in the given order."""
    table = {workload.name: workload for workload in (QUICK_WORKLOADS if quick else FULL_WORKLOADS)}
    if workloads is None:
        return tuple(table.values())
    unknown = [w for w in workloads if not isinstance(w, Workload) and w not in table]
    if unknown:
        raise ValueError(f"unknown workloads {unknown}; expected some of {tuple(table)}")
    return tuple(w if isinstance(w, Workload) else table[w] for w in workloads)


#: The timing columns of a row at a depth that was not timed.
UNTIMED = {
    "step_s": None,
    "step_s_all": [],
    "step_wall_s": None,
    "first_step_wall_s": None,
    "grad_error": None,
    "grad_error_float64": None,
    "time_ratio_autograd": None,
    "time_ratio_resnet": None,
}


def _failure(error: PointFailed) -> str:
    return f"failed: {str(error).strip().splitlines()[-1]}"


class _Sweep:
    """One workload over the depths: plans, runs and records its cells (into ``record``).

    ``memory_servers`` measure memory points, as many at once as there are servers; ``step_server``
    runs the timing processes.
    """

    def __init__(self, workload: Workload, settings: Settings, seed: int, device: str, servers, record):
        self.workload, self.settings, self.seed, self.device = workload, settings, seed, device
        self.memory_servers, self.step_server = servers
        self.record = record
        self.peaks = {method: {} for method in METHODS}  # depth -> peak bytes, probes included
        # depth -> seconds per step in the timing processes, and in the memory processes (slower: their
        # allocator maps every tensor afresh, and two run at once)
        self.timed_s = {method: {} for method in METHODS}
        self.memory_s = {method: {} for method in METHODS}
        self.forward_s = {}  # depth -> seconds of the reversible forward pass, by memory or stack points
        self.dropped = {}  # method -> (depth, reason) where it was skipped or failed
        self.reference_s = {}  # depth -> wall-clock seconds of the float64 references

    def _cell(self, method: str, depth: int) -> dict:
        return {"workload": self.workload.name, "method": method, "depth": depth}

    def _skip(self, method: str, depth: int, reason: str, **extra) -> None:
        self.dropped.setdefault(method, (depth, reason))
        self.record["skipped"].append({**self._cell(method, depth), "reason": reason, **extra})

    def _submit(self, server, method: str, depth: int) -> None:
        kwargs = {"method": method, "depth": depth, "seed": self.seed, "device": self.device}
        server.submit("memory", self.workload, self.settings, **kwargs)

    def _note(self, method: str, depth: int, point: dict) -> None:
        self.peaks[method][depth] = point["peak_bytes"]
        self.memory_s[method][depth] = point["memory_step_wall_s"]
        if method == "reversible":
            self.forward_s[depth] = point["forward_wall_s"]

    def _stack_point(self, depth: int) -> None:
        """Where the reversible cell is skipped: its bit stack from a forward pass alone (the stack is a
        function of the forward), if the pass is estimated within ``settings.stack_budget_s``; recorded in
        ``stacks`` with ``reason`` null, or why not."""
        guess = extrapolate(self.forward_s, depth)
        cell = {**self._cell("reversible", depth), "estimated_forward_s": guess}
        budget = self.settings.stack_budget_s
        if guess is None or guess > budget:
            why = (
                "no shallower forward pass to estimate it from"
                if guess is None
                else f"estimated forward pass {guess:.3g} s exceeds the budget of {budget:g} s"
            )
            self.record["stacks"].append({**cell, "reason": why})
            return
        try:
            point = self.memory_servers[0].call(
                "stack", self.workload, self.settings, depth=depth, seed=self.seed, device=self.device
            )
        except PointFailed as error:
            self.record["stacks"].append({**cell, "reason": _failure(error), "error": str(error)})
            return
        self.forward_s[depth] = point["forward_wall_s"]
        self.record["stacks"].append({**cell, "reason": None, **point})

    def _plan(self, method: str, depth: int) -> tuple[str | None, dict]:
        """Why the cell must not run (or ``None``), and its estimate for the record."""
        if method in self.dropped:
            shallower, reason = self.dropped[method]
            return f"dropped at L={shallower}: {reason}", {}
        if depth > PROBE_DEPTH and not any(d < depth for d in self.peaks[method]):
            server = self.memory_servers[0]
            self._submit(server, method, PROBE_DEPTH)
            probe = server.receive()
            self._note(method, PROBE_DEPTH, probe)
            self.record["probes"].append({**self._cell(method, PROBE_DEPTH), **probe})
        guess = estimate(self.peaks[method], {**self.memory_s[method], **self.timed_s[method]}, depth)
        if guess is None:
            return None, {}
        return skip_reason(guess, self.settings), {"estimate": asdict(guess)}

    def _batches(self, planned: dict[str, dict]) -> list[list[str]]:
        """The planned methods in groups of at most one per memory server whose estimated peaks fit the
        cap together (a method without an estimate, at the first depth, counts as nothing)."""
        batches, peak = [], 0.0
        for method, extra in planned.items():
            need = extra.get("estimate", {}).get("peak_bytes", 0.0)
            full = batches and len(batches[-1]) == len(self.memory_servers)
            if not batches or full or peak + need > self.settings.memory_cap:
                batches.append([])
                peak = 0.0
            batches[-1].append(method)
            peak += need
        return batches

    def _memory_points(self, depth: int, progress) -> dict[str, dict]:
        planned = {}
        for method in METHODS:
            progress.set_postfix_str(f"{self.workload.name} plan {method} L={depth}")
            try:
                reason, extra = self._plan(method, depth)
            except PointFailed as error:
                reason, extra = _failure(error), {"error": str(error)}
            if reason is None:
                planned[method] = extra
            else:
                self._skip(method, depth, reason, **extra)
                progress.update()
        measured = {}
        for batch in self._batches(planned):
            progress.set_postfix_str(f"{self.workload.name} memory {', '.join(batch)} L={depth}")
            for server, method in zip(self.memory_servers, batch, strict=False):
                self._submit(server, method, depth)
            for server, method in zip(self.memory_servers, batch, strict=False):
                try:
                    measured[method] = server.receive()
                    self._note(method, depth, measured[method])
                except PointFailed as error:
                    self._skip(method, depth, _failure(error), error=str(error), **planned[method])
                progress.update()
        return measured

    def run(self, depths: tuple[int, ...], progress) -> None:
        for depth in depths:
            memory = self._memory_points(depth, progress)
            if "reversible" not in memory:
                progress.set_postfix_str(f"{self.workload.name} bit stack L={depth}")
                self._stack_point(depth)
            progress.set_postfix_str(f"{self.workload.name} time and gradients L={depth}")
            if memory:
                self._steps(depth, memory)
            progress.update()

    def _timing(self, depth: int, memory: dict[str, dict]) -> dict:
        """Whether and how ``depth`` is timed: its entry of ``timings`` in the record.

        Its steps are extrapolated from the shallower timed depths; without those, a depth up to
        :data:`~mode.bench.plan.PROBE_DEPTH` is timed, and a deeper one is judged by its memory
        processes' steps (an overestimate).
        """
        steps = {m: extrapolate(self.timed_s[m], depth) for m in memory}
        if depth > PROBE_DEPTH:
            steps = {m: memory[m]["memory_step_wall_s"] if s is None else s for m, s in steps.items()}
        autograd_peak = memory.get(REFERENCE, {}).get("peak_bytes")
        return {
            "workload": self.workload.name,
            "depth": depth,
            "estimated_step_s": steps,
            "reason": timing_reason(steps, self.settings),
            "float64_reason": float64_reason(self.reference_s, autograd_peak, depth, self.settings),
            "reference_wall_s": None,
        }

    def _timed(self, depth: int, methods: list[str], timing: dict) -> dict[str, dict]:
        """Run the timing process of ``depth``; its rows by method, ``{}`` where it failed (then
        ``timing`` says why)."""
        try:
            steps = self.step_server.call(
                "steps",
                self.workload,
                self.settings,
                depth=depth,
                seed=self.seed,
                device=self.device,
                methods=methods,
                float64=timing["float64_reason"] is None,
            )
        except PointFailed as error:
            timing.update(reason=f"timing {_failure(error)}", error=str(error))
            return {}
        timing["reference_wall_s"] = steps["reference_wall_s"]
        if steps["reference_wall_s"] is not None:
            self.reference_s[depth] = steps["reference_wall_s"]
        return steps["rows"]

    def _steps(self, depth: int, memory: dict[str, dict]) -> None:
        timing = self._timing(depth, memory)
        self.record["timings"].append(timing)
        timed = self._timed(depth, list(memory), timing) if timing["reason"] is None else {}
        for method, point in memory.items():
            row = {**self._cell(method, depth), **point, **timed.get(method, UNTIMED)}
            if method in timed:
                self.timed_s[method][depth] = row["step_wall_s"]
                for name, other in (("time_ratio_autograd", REFERENCE), ("time_ratio_resnet", "resnet")):
                    row[name] = row["step_s"] / timed[other]["step_s"] if other in timed else None
            self.record["rows"].append(row)


def _environment() -> dict:
    """:func:`mode.records.environment` with memcnn's version, which the benchmark also compares with."""
    env = environment()
    try:
        env["versions"]["memcnn"] = version("memcnn")
    except PackageNotFoundError:
        env["versions"]["memcnn"] = None
    return env


def run_memory_benchmark(
    workloads=None,
    depths=None,
    quick: bool = False,
    seed: int = 0,
    out=DEFAULT_OUT,
    device: str = "cpu",
    settings: Settings | None = None,
) -> dict:
    """Measure activation memory, step time and gradient error over workloads and depths; write
    ``results.json`` and the figures.

    Parameters
    ----------
    workloads : sequence of str or Workload, optional
        Which workloads, by name or given (default all five; see :func:`select_workloads`).
    depths : sequence of int, optional
        Depths :math:`L` (default 10, 100, 1000; with ``quick`` 10, 100).
    quick : bool
        Use the small workloads, depths and settings.
    seed : int
        Seed of the weights and the input.
    out : str or Path
        Directory for ``results.json`` and the PNG figures (created if missing).
    device : {"cpu", "cuda"}
        Where to run.
    settings : Settings, optional
        Overrides :data:`~mode.bench.workloads.FULL_SETTINGS` (or ``QUICK_SETTINGS`` with
        ``quick``): momentum, threads, rounds, memory cap and time budgets.

    Returns
    -------
    dict
        What ``results.json`` holds: ``settings``, ``workloads``, ``seed``, ``environment``,
        ``definitions``, ``methods``, ``rows`` (one per measured cell), ``skipped`` (with reasons),
        ``probes``, ``stacks`` (bit stacks from a forward pass alone where the reversible cell was
        skipped), ``timings`` (per workload and depth: timed or why not, float64 references or why
        not), ``ratios``, ``compile``, and per workload ``targets`` and ``memory_check``.
    """
    workloads = select_workloads(workloads, quick)
    depths = tuple(sorted(depths or (QUICK_DEPTHS if quick else FULL_DEPTHS)))
    settings = settings or (QUICK_SETTINGS if quick else FULL_SETTINGS)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    load_before = os.getloadavg()
    record = {"rows": [], "skipped": [], "probes": [], "stacks": [], "timings": []}
    total = len(workloads) * len(depths) * (len(METHODS) + 1)
    with contextlib.ExitStack() as stack:
        progress = stack.enter_context(tqdm(total=total, desc="mode bench memory", unit="cell", disable=None))
        memory_servers = [stack.enter_context(PointServer()) for _ in range(settings.memory_workers)]
        step_server = stack.enter_context(PointServer(env={}))
        for workload in workloads:
            sweep = _Sweep(workload, settings, seed, device, (memory_servers, step_server), record)
            sweep.run(depths, progress)
    rows = record["rows"]
    names = [workload.name for workload in workloads]
    results = {
        "benchmark": "memory_depth",
        "settings": {
            "workloads": names,
            "depths": list(depths),
            "quick": quick,
            "device": device,
            **asdict(settings),
            "momentumnet_velocity_factor": momentumnet_velocity_factor(settings.gamma),
            "dtype": "float32",
            "loss": "mean(x_L ** 2)",
            "step_clock": clock_name(device, settings.threads),
            "probe_depth": PROBE_DEPTH,
            # The library's switch for compiling the reversible kernels (unset: on), which compile reports.
            "MODE_COMPILE": os.environ.get("MODE_COMPILE"),
        },
        "workloads": {workload.name: {**asdict(workload), **workload.describe()} for workload in workloads},
        "seed": seed,
        "environment": _environment(),
        # Other processes slow the steps down: how busy the machine was (1, 5, 15-minute averages).
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "definitions": DEFINITIONS,
        "methods": METHODS,
        **record,
        "ratios": time_ratios(rows),
        "compile": {name: compile_time(rows, name) for name in names},
        "targets": {name: evaluate_targets(rows, name, record["stacks"]) for name in names},
        "memory_check": {
            workload.name: memory_check(rows, workload.name, 4 * workload.saved_floats_per_layer)
            for workload in workloads
        },
        "elapsed_s": time.perf_counter() - started,
    }
    write_json(out / "results.json", results)
    save_figures(results, out)
    return results
