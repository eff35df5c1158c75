r"""``mode bench ode``: gradient error, activation memory and time of neural-ODE gradient methods.

On :math:`\varepsilon \ddot x + \dot x = f(x, t)` over :math:`[0, 1]` (:mod:`mode.bench.ode_problem`) it
compares torchdiffeq's dopri5 and fixed-grid rk4, each by direct backpropagation and by the adjoint
method, MALI (TorchDiffEqPack's reverse-accurate asynchronous leapfrog), and mode's reversible momentum
and leapfrog solves and checkpointed leapfrog, all in float32. Each method's gradient (of a fixed
random linear functional of :math:`x(T), v(T)` with respect to the field's parameters and :math:`x_0`)
is compared with the true gradient of the ODE, a float64 dopri5 solve at tight tolerance cross-checked
against float64 rk4 with the adjoint method. For mode's reversible methods it also records the
float64 gap to autograd through the same discrete steps. Every point runs in a fresh process
(:mod:`mode.bench.ode_points`).
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from tqdm.auto import tqdm

from mode.bench.ode_figures import save_ode_figures
from mode.bench.ode_points import MEMORY_MALLOC_ENV, OdeServer, finite, last_line
from mode.bench.ode_problem import METHODS, REVERSIBLE, WEIGHT_GAIN, OdeWorkload, Spec
from mode.records import environment, write_json

DEFAULT_OUT = Path("benchmarks") / "ode"
GIB = 1024**3

#: Reversible activation memory at the most steps, over that at the fewest.
FLAT_MEMORY_RATIO = 1.2
#: Relative float64 gap between the reversible gradient and autograd's through the same steps.
DISCRETE_GAP = 1e-10


@dataclass(frozen=True)
class OdeSettings:
    """What ``mode bench ode`` runs.

    Attributes
    ----------
    steps : tuple of int
        Step counts of the fixed-step methods (rk4, MALI, mode's reversible methods).
    checkpoint_steps : tuple of int
        Step counts of mode's checkpointed leapfrog.
    rtols : tuple of float
        Tolerances of dopri5 (``atol = rtol``).
    reference_tol : float
        ``rtol = atol`` of the float64 reference.
    reference_check_steps : int
        Steps of the reference's cross-check (float64 rk4 with the adjoint method).
    repeats : int
        Timed passes per point after a first, untimed one.
    long_step_s : float
        A point whose first pass takes longer is timed once.
    memory_cap : int
        Bytes; a point whose peak, extrapolated from the method's previous step count in proportion to
        the steps, passes it is skipped.
    point_budget_s : float
        A point whose four passes (two for memory, two for time), extrapolated in proportion to the
        steps, would take longer is skipped, and the method's larger step counts with it.
    threads : int
        Torch threads.
    T : float
        Horizon.
    """

    steps: tuple[int, ...] = (16, 64, 256, 1024, 4096)
    checkpoint_steps: tuple[int, ...] = (16, 256, 4096)
    rtols: tuple[float, ...] = (1e-3, 1e-5, 1e-7)
    reference_tol: float = 1e-12
    reference_check_steps: int = 4096
    repeats: int = 3
    long_step_s: float = 1.0
    memory_cap: int = 3 * GIB
    point_budget_s: float = 120.0
    threads: int = 1
    T: float = 1.0


#: The committed run's settings.
FULL_SETTINGS = OdeSettings()
#: ``--quick``: two step counts, one tolerance, a short reference (for the test suite).
QUICK_SETTINGS = OdeSettings(
    steps=(16, 64),
    checkpoint_steps=(16,),
    rtols=(1e-5,),
    reference_tol=1e-10,
    reference_check_steps=512,
    repeats=1,
    point_budget_s=30.0,
)

#: The stiff-ish workload: the damping :math:`-Ax` with eigenvalues over ``1 .. 100`` at
#: :math:`\varepsilon = 0.1` gives phase-space modes from :math:`|\mu| \approx 1.1` (slow decay) to
#: :math:`|\mu| = \sqrt{100 / 0.1} \approx 32` (fast, damped oscillation), so that explicit steps are set by
#: stability (:math:`h \lesssim 2 / 32`) more than by accuracy, by a factor of about 30: stiff-ish, not
#: stiff enough to call for an implicit method.
FULL_WORKLOADS = (
    OdeWorkload("mlp-eps0.1", dim=64, batch=128, hidden=64, eps=0.1),
    OdeWorkload("mlp-eps1", dim=64, batch=128, hidden=64, eps=1.0),
    OdeWorkload("stiff-eps0.1", dim=64, batch=128, hidden=64, eps=0.1, stiff=True),
)
QUICK_WORKLOADS = (
    OdeWorkload("mlp-eps0.1", dim=8, batch=16, hidden=8, eps=0.1),
    OdeWorkload("stiff-eps0.1", dim=8, batch=16, hidden=8, eps=0.1, stiff=True),
)

DEFINITIONS = {
    "problem": (
        "eps x'' + x' = f(x, t) on [0, T] in phase space (x' = v, eps v' = f(x, t) - v), "
        "f(x, t) = W2 tanh(W1 x + t c + b1) + b2 - A x (A = 0 but for the stiff workload; A = Q diag(lambda) "
        "Q^T, lambda log-spaced over [lambda_min, lambda_max], Q a seeded random rotation, not trained), "
        f"weights N(0, {WEIGHT_GAIN}**2 / fan_in), c ~ N(0, 1), biases N(0, 0.01); x0 ~ N(0, 1), "
        "v0 ~ N(0, 0.25); loss = <a, x(T)> + <b, v(T)>, a, b ~ N(0, 1 / (batch dim)), all seeded. Every "
        "method runs in float32 from the float64 draw rounded."
    ),
    "grad_error": (
        "|g - g_ref| / |g_ref| (2-norms, float64) over the gradients of all parameters and of x0 "
        "together; grad_error_params and grad_error_x0 split it. g_ref is the reference (references): the "
        "true gradient of the ODE to about its cross-check gap. null where the gradient was not finite."
    ),
    "activation_bytes": (
        "Peak of the tensor storage allocated during one float32 forward and backward pass, counted at "
        "PyTorch's allocator from the profiler's memory events (mode.bench.allocated.TensorPeak: the "
        "largest running sum of allocated minus freed bytes, the CPU analogue of "
        "torch.cuda.max_memory_allocated), after an identical warm-up pass that allocates every .grad, in "
        "a fresh process per point. It counts stored activations, the reversible bit stack and "
        "temporaries, exactly and the same in every run; not Python objects."
    ),
    "resident_bytes": (
        "Peak resident set size of the same pass run without the profiler (VmHWM, restarted after the "
        "warm-up through /proc/self/clear_refs) minus the resident set size before it, with a malloc that "
        "gives every block from 16 KiB up its own mapping ("
        + " ".join(f"{k}={v}" for k, v in MEMORY_MALLOC_ENV.items())
        + "): everything the pass adds, Python objects and fragmentation included, at the resolution of "
        "pages (a few hundred KiB of noise)."
    ),
    "step_s": (
        "Median CPU time (time.process_time, one thread) of the timed forward and backward passes in a "
        "fresh process with the default allocator, after a first pass (first_step_wall_s, which also "
        "pays compilation of the reversible kernels); step_wall_s is the median wall-clock time."
    ),
    "float64_gaps": (
        "For mode's reversible methods at every step count: |g_rev - g_autograd| / |g_autograd| in float64, "
        "with g_autograd from backprop='autograd' through the same scheme and steps: how far the "
        "reversible gradient is from that of the discrete solve."
    ),
    "pareto": (
        "Per workload, over every measured float32 point with a finite gradient error: a point is on the "
        "front when no other point has both activation_bytes <= and grad_error <= its own with one of them "
        "strictly smaller (pareto_front)."
    ),
    "skipped": (
        "Points not run: their memory (extrapolated in proportion to the steps from the method's previous "
        "point) above settings.memory_cap or their four passes above settings.point_budget_s; larger step "
        "counts of a skipped method follow it."
    ),
}


def pareto_front(points: list[tuple[float, float]]) -> list[bool]:
    """Which of the points ``(memory, error)`` are on the Pareto front when both are minimised: not
    dominated by a point at most as large in both and smaller in one. Equal points are all on it."""
    return [not any(m <= mem and e <= err and (m < mem or e < err) for m, e in points) for mem, err in points]


def specs(settings: OdeSettings) -> list[Spec]:
    """Every method at every setting, method by method, settings increasing in cost."""
    out = [Spec(m, rtol=r) for m in ("dopri5-direct", "dopri5-adjoint") for r in settings.rtols]
    for method in ("rk4-direct", "rk4-adjoint", "mali", *REVERSIBLE):
        out += [Spec(method, steps=n) for n in settings.steps]
    return out + [Spec("checkpoint-leapfrog", steps=n) for n in settings.checkpoint_steps]


def _skip_reason(spec: Spec, previous: dict | None, settings: OdeSettings) -> str | None:
    """Why ``spec`` must not run, judged from the same method's previous point (``None``: run it)."""
    if previous is None or spec.steps is None or previous.get("steps") is None:
        return None
    if previous.get("error") is not None and previous.get("activation_bytes") is None:
        return None
    if "skipped" in previous:
        return f"skipped at N={previous['steps']}"
    scale = spec.steps / previous["steps"]
    peak = previous["activation_bytes"] * scale
    if peak > settings.memory_cap:
        cap = settings.memory_cap / GIB
        return f"estimated activation memory {peak / GIB:.1f} GiB above the cap {cap:g} GiB"
    wall = 2 * previous["memory_step_wall_s"] + 2 * (previous.get("step_wall_s") or 0.0)
    if wall * scale > settings.point_budget_s:
        return f"estimated {wall * scale:.0f} s for its passes above the budget {settings.point_budget_s:g} s"
    return None


class _Workload:
    """One workload's points: reference, every method's rows, the reversible gaps."""

    def __init__(self, workload: OdeWorkload, settings: OdeSettings, seed: int, servers, folder: str):
        self.workload, self.settings, self.seed = workload, settings, seed
        self.memory_server, self.time_server = servers
        self.reference_path = os.path.join(folder, f"{workload.name}.pt")

    def _request(self, **extra) -> dict:
        return {
            "workload": asdict(self.workload),
            "seed": self.seed,
            "T": self.settings.T,
            "threads": self.settings.threads,
            **extra,
        }

    def reference(self) -> dict:
        answer = self.time_server.call(
            "reference",
            **self._request(
                tol=self.settings.reference_tol,
                check_steps=self.settings.reference_check_steps,
                path=self.reference_path,
            ),
        )
        if "error" in answer:
            raise RuntimeError(f"the reference of {self.workload.name} failed:\n{answer['error']}")
        return answer

    def point(self, spec: Spec, previous: dict | None) -> dict:
        row = {
            "workload": self.workload.name,
            "method": spec.method,
            "family": METHODS[spec.method][0],
            "steps": spec.steps,
            "rtol": spec.rtol,
            "setting": spec.setting,
            "error": None,
        }
        reason = _skip_reason(spec, previous, self.settings)
        if reason is not None:
            return {**row, "skipped": reason}
        request = self._request(spec=asdict(spec))
        memory = self.memory_server.call("memory", **request)
        if "error" in memory:
            return {**row, "error": memory["error"], "error_line": last_line(memory["error"])}
        timed = self.time_server.call(
            "time",
            **request,
            reference=self.reference_path,
            repeats=self.settings.repeats,
            long_s=self.settings.long_step_s,
        )
        if "error" in timed:
            return {**row, **memory, "error": timed["error"], "error_line": last_line(timed["error"])}
        return {**row, **memory, **timed}

    def gap(self, spec: Spec) -> dict:
        scheme = REVERSIBLE[spec.method]
        answer = self.time_server.call("gap", **self._request(scheme=scheme, steps=spec.steps))
        return {
            "workload": self.workload.name,
            "method": spec.method,
            "scheme": scheme,
            "steps": spec.steps,
            **answer,
        }


def evaluate_targets(rows: list[dict], gaps: list[dict], workload: str) -> dict[str, dict]:
    """The targets on ``workload``: each has ``target`` (in words), ``threshold``, the judged ``value``,
    ``met`` and ``by_steps``.

    * ``reversible_memory_flat_<scheme>``: activation memory at the most steps over that at the fewest,
      at most :data:`~mode.bench.ode.FLAT_MEMORY_RATIO`.
    * ``discrete_gap_<scheme>``: the largest float64 gap over the step counts, at most
      :data:`~mode.bench.ode.DISCRETE_GAP` (``None``, not met, where a gap is not finite or missing).
    * ``leapfrog_on_pareto_front``: how many exact-leapfrog points lie on the front; at least 1.
    """
    rows = [row for row in rows if row["workload"] == workload]
    targets = {}
    for method, scheme in REVERSIBLE.items():
        memory = {
            r["steps"]: r["activation_bytes"]
            for r in rows
            if r["method"] == method and r.get("activation_bytes") is not None
        }
        ratios = {n: memory[n] / memory[min(memory)] for n in memory if n > min(memory)} if memory else {}
        top = ratios.get(max(ratios)) if ratios else None
        targets[f"reversible_memory_flat_{scheme}"] = {
            "target": f"reversible {scheme} activation memory at the most steps within {FLAT_MEMORY_RATIO}x "
            f"of that at the fewest (N={min(memory, default=None)})",
            "threshold": FLAT_MEMORY_RATIO,
            "value": top,
            "met": top is not None and top <= FLAT_MEMORY_RATIO,
            "by_steps": ratios,
        }
        by_steps = {
            g["steps"]: g.get("gap") for g in gaps if g["workload"] == workload and g["method"] == method
        }
        values = list(by_steps.values())
        worst = max(values) if values and all(finite(v) for v in values) else None
        targets[f"discrete_gap_{scheme}"] = {
            "target": f"float64 reversible {scheme} gradient within {DISCRETE_GAP:g} (relative) of autograd "
            "through the same discrete solve, at every step count",
            "threshold": DISCRETE_GAP,
            "value": worst,
            "met": worst is not None and worst <= DISCRETE_GAP,
            "by_steps": by_steps,
        }
    front = {r["steps"]: r["pareto"] for r in rows if r["method"] == "reversible-leapfrog" and "pareto" in r}
    count = sum(front.values())
    targets["leapfrog_on_pareto_front"] = {
        "target": "at least one exact (reversible) leapfrog point on the Pareto front of float32 gradient "
        "error against activation memory, over every measured point of the workload",
        "threshold": 1,
        "value": count,
        "met": count >= 1,
        "by_steps": front,
    }
    return targets


def _mark_front(rows: list[dict]) -> None:
    """Set ``pareto`` on every row with finite memory and gradient error, per workload."""
    for name in dict.fromkeys(r["workload"] for r in rows):
        chosen = [
            r
            for r in rows
            if r["workload"] == name and finite(r.get("grad_error")) and finite(r.get("activation_bytes"))
        ]
        for row, on in zip(
            chosen, pareto_front([(r["activation_bytes"], r["grad_error"]) for r in chosen]), strict=True
        ):
            row["pareto"] = on


def _versions() -> dict:
    env = environment()
    for package in ("torchdiffeq", "TorchDiffEqPack"):
        try:
            env["versions"][package] = version(package)
        except PackageNotFoundError:
            env["versions"][package] = None
    return env


def run_ode_benchmark(
    quick: bool = False, seed: int = 0, out=DEFAULT_OUT, settings: OdeSettings | None = None, workloads=None
) -> dict:
    """Measure every method on every workload; write ``results.json`` and the figures into ``out``.

    Parameters
    ----------
    quick : bool
        The small workloads and :data:`~mode.bench.ode.QUICK_SETTINGS`.
    seed : int
        Seed of the fields, initial states and loss weights.
    out : str or Path
        Directory for ``results.json`` and the PNG figures (created if missing).
    settings : OdeSettings, optional
        Overrides the settings ``quick`` chooses.
    workloads : sequence of OdeWorkload, optional
        Overrides the workloads ``quick`` chooses.

    Returns
    -------
    dict
        What ``results.json`` holds: ``settings``, ``workloads``, ``methods``, ``seed``, ``environment``,
        ``definitions``, ``references`` (per workload, with the cross-check gap), ``rows`` (one per method
        and setting, with ``skipped`` or ``error`` where it did not run), ``float64_gaps``, ``targets``
        per workload and ``elapsed_s``.
    """
    settings = settings or (QUICK_SETTINGS if quick else FULL_SETTINGS)
    workloads = tuple(workloads or (QUICK_WORKLOADS if quick else FULL_WORKLOADS))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started, load_before = time.perf_counter(), os.getloadavg()
    plan = specs(settings)
    gap_specs = [s for s in plan if s.method in REVERSIBLE]
    rows, gaps, references = [], [], {}
    # Compiling the reversible kernels costs seconds in every fresh process, more than a quick run's
    # points themselves; the quick run computes the same bits eagerly, unless told otherwise.
    compile_env = {"MODE_COMPILE": "0"} if quick and "MODE_COMPILE" not in os.environ else {}
    with (
        tempfile.TemporaryDirectory() as folder,
        OdeServer({**MEMORY_MALLOC_ENV, **compile_env}) as memory_server,
        OdeServer(compile_env) as time_server,
        tqdm(
            total=len(workloads) * (1 + len(plan) + len(gap_specs)),
            desc="mode bench ode",
            unit="point",
            disable=None,
        ) as progress,
    ):
        for workload in workloads:
            sweep = _Workload(workload, settings, seed, (memory_server, time_server), folder)
            progress.set_postfix_str(f"{workload.name} reference")
            references[workload.name] = sweep.reference()
            progress.update()
            previous: dict[str, dict] = {}
            for spec in plan:
                progress.set_postfix_str(f"{workload.name} {spec.method} {spec.setting}")
                row = sweep.point(spec, previous.get(spec.method))
                previous[spec.method] = row
                rows.append(row)
                progress.update()
            for spec in gap_specs:
                progress.set_postfix_str(f"{workload.name} float64 gap {spec.method} {spec.setting}")
                gaps.append(sweep.gap(spec))
                progress.update()
    _mark_front(rows)
    results = {
        "benchmark": "ode",
        "settings": {
            **asdict(settings),
            "quick": quick,
            "device": "cpu",
            "dtype": "float32",
            "loss": "<a, x(T)> + <b, v(T)>",
            "MODE_COMPILE": compile_env.get("MODE_COMPILE", os.environ.get("MODE_COMPILE")),
        },
        "workloads": {w.name: {**asdict(w), "spectrum": w.spectrum()} for w in workloads},
        "methods": {
            name: {"family": family, "description": text} for name, (family, text) in METHODS.items()
        },
        "seed": seed,
        "environment": _versions(),
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "definitions": DEFINITIONS,
        "references": references,
        "rows": rows,
        "float64_gaps": gaps,
        "targets": {w.name: evaluate_targets(rows, gaps, w.name) for w in workloads},
        "elapsed_s": time.perf_counter() - started,
    }
    write_json(out / "results.json", results)
    save_ode_figures(results, out)
    return results


def summary_table(results: dict) -> str:
    """A Markdown table of the rows: memory (MiB), time (s) and gradient error per method and setting."""
    lines = ["| workload | method | setting | memory MiB | step s | grad error | front |", "|---" * 7 + "|"]
    for r in results["rows"]:
        if "skipped" in r or r.get("error") is not None:
            note = r.get("skipped") or r.get("error_line")
            lines.append(f"| {r['workload']} | {r['method']} | {r['setting']} | not run: {note} | | | |")
            continue
        error = "nan" if r["grad_error"] is None else f"{r['grad_error']:.2e}"
        lines.append(
            f"| {r['workload']} | {r['method']} | {r['setting']} | {r['activation_bytes'] / 2**20:.2f} | "
            f"{r['step_s']:.3f} | {error} | {'*' if r.get('pareto') else ''} |"
        )
    return "\n".join(lines)
