"""The measurements of ``mode bench ode``, each in a fresh process: activation memory, time and gradient
error of one method at one setting, the float64 gap of a reversible solve to autograd through the same
steps, and the float64 reference gradient.

:class:`~mode.bench.ode_points.OdeServer` starts ``python -m mode.bench.ode_points``, which imports torch
once and forks one child per request, so that no allocation of another point is cached where it would
hide or inflate a peak.
"""

from __future__ import annotations

import json
import math
import statistics
import time

import torch

from mode.bench.allocated import TensorPeak
from mode.bench.ode_problem import (
    OdeWorkload,
    Spec,
    discrete_gap,
    gradients,
    make_problem,
    relative_errors,
    tight_gradients,
)
from mode.bench.rss import reset_peak, status_bytes
from mode.bench.server import ModuleServer, serve_forked
from mode.runtime import torch_threads

#: glibc's malloc for the memory processes: every block from 16 KiB up gets its own mapping, returned
#: to the system when freed. At the full size one state (128 x 64 float32) is 32 KiB, below glibc's
#: usual threshold, so that the measured step would otherwise reuse the warm-up's heap unseen.
MEMORY_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "16384"}


def _zero(problem) -> None:
    for leaf in problem.leaves():
        if leaf.grad is not None:
            leaf.grad.zero_()


def measure_memory(workload: OdeWorkload, spec: Spec, seed: int, T: float) -> dict:
    """Activation memory of one float32 forward and backward pass in this process (use a fresh one).

    ``activation_bytes``: the peak of tensor storage allocated during the pass
    (:class:`~mode.bench.allocated.TensorPeak`), after an identical warm-up pass that allocates every
    ``.grad``. ``resident_bytes``: the peak resident set size of the pass (``VmHWM``, restarted after the
    warm-up) minus the resident set size before it, which also counts what is not a tensor.
    """
    problem = make_problem(workload, seed, torch.float32)
    gradients(problem, spec, T)
    _zero(problem)
    before, peak_reset = status_bytes("VmRSS"), reset_peak()
    start = time.perf_counter()
    grads, nfe = gradients(problem, spec, T)
    peak = status_bytes("VmHWM")
    wall = time.perf_counter() - start
    _zero(problem)
    # A third, identical pass under the allocator count: the profiler's own records would add to the
    # resident set of the pass above.
    with TensorPeak() as tensors:
        gradients(problem, spec, T)
    return {
        "activation_bytes": tensors.peak_bytes,
        "resident_bytes": peak - before,
        "baseline_bytes": before,
        "peak_bytes": peak,
        "peak_reset": peak_reset,
        "memory_step_wall_s": wall,
        "finite": all(bool(torch.isfinite(g).all()) for g in grads),
    }


def measure_time(
    workload: OdeWorkload, spec: Spec, seed: int, T: float, reference: str, repeats: int, long_s: float
) -> dict:
    """Time and gradient error of float32 forward and backward passes in this process.

    A first pass (``first_step_wall_s``: compilation, lazy imports), then ``repeats`` timed passes, or one
    when the first took longer than ``long_s``; ``step_s`` is their median CPU time of this process
    (``time.process_time``, single-threaded), ``step_wall_s`` the median wall-clock time. The errors are
    those of the last pass against the gradients saved at ``reference``
    (:func:`~mode.bench.ode_problem.relative_errors`).
    """
    problem = make_problem(workload, seed, torch.float32)
    start = time.perf_counter()
    gradients(problem, spec, T)
    first = time.perf_counter() - start
    cpu, wall = [], []
    for _ in range(1 if first > long_s else repeats):
        _zero(problem)
        start_cpu, start = time.process_time(), time.perf_counter()
        grads, nfe = gradients(problem, spec, T)
        cpu.append(time.process_time() - start_cpu)
        wall.append(time.perf_counter() - start)
    errors = relative_errors(grads, torch.load(reference)["reference"])
    return {
        "step_s": statistics.median(cpu),
        "step_s_all": cpu,
        "step_wall_s": statistics.median(wall),
        "first_step_wall_s": first,
        "nfe_forward": nfe[0],
        "nfe_backward": nfe[1],
        "grad_error": errors["all"],
        "grad_error_params": errors["params"],
        "grad_error_x0": errors["x0"],
    }


def measure_gap(workload: OdeWorkload, scheme: str, steps: int, seed: int, T: float) -> dict:
    """:func:`~mode.bench.ode_problem.discrete_gap` in float64."""
    start = time.perf_counter()
    gap = discrete_gap(make_problem(workload, seed, torch.float64), scheme, steps, T)
    return {
        "gap": gap["all"],
        "gap_params": gap["params"],
        "gap_x0": gap["x0"],
        "wall_s": time.perf_counter() - start,
    }


def measure_reference(
    workload: OdeWorkload, seed: int, T: float, tol: float, check_steps: int, path: str
) -> dict:
    """The float64 reference gradient (torchdiffeq dopri5, direct backpropagation, ``rtol = atol =
    tol``) and its cross-check (torchdiffeq's fixed-grid rk4 with ``check_steps`` steps and the adjoint
    method: another integrator, no step-size control, and another way to the gradient); both saved to
    ``path``, their gap returned.

    The cross-check is not dopri8 with the adjoint method: at ``rtol = atol = 1e-12`` its gradient stays
    about 3e-7 from dopri5's, which agrees with rk4 (direct or adjoint) and with dopri5's own adjoint to
    1e-10 and better.
    """
    start = time.perf_counter()
    reference, nfe = tight_gradients(
        make_problem(workload, seed, torch.float64), "dopri5", "autograd", tol, T
    )
    middle = time.perf_counter()
    check, check_nfe = gradients(
        make_problem(workload, seed, torch.float64), Spec("rk4-adjoint", steps=check_steps), T
    )
    torch.save({"reference": reference, "cross_check": check}, path)
    gap = relative_errors(check, reference)
    return {
        "method": f"torchdiffeq dopri5, direct backpropagation, float64, rtol = atol = {tol:g}",
        "nfe": nfe,
        "wall_s": middle - start,
        "cross_check": {
            "method": f"torchdiffeq rk4 (3/8 rule), {check_steps} fixed steps, adjoint method, float64",
            "nfe": sum(check_nfe),
            "wall_s": time.perf_counter() - middle,
            "gap": gap["all"],
            "gap_params": gap["params"],
            "gap_x0": gap["x0"],
        },
    }


#: Task name -> function of the request's other fields.
TASKS = {"memory": measure_memory, "time": measure_time, "gap": measure_gap, "reference": measure_reference}


def _answer(request: dict) -> dict:
    task = TASKS[request.pop("task")]
    threads = request.pop("threads")
    request["workload"] = OdeWorkload(**request["workload"])
    if "spec" in request:
        request["spec"] = Spec(**request["spec"])
    with torch_threads(threads):
        return task(**request)


def _serve() -> None:
    """Answer one JSON request per line of stdin with one JSON line on stdout, computed in a child forked
    for it alone; the server itself runs no torch operation, so every child starts from the same state."""
    serve_forked(_answer)


class OdeServer(ModuleServer):
    """The server of :data:`~mode.bench.ode_points.TASKS`, answering each request in a fresh child."""

    module = "mode.bench.ode_points"

    def call(self, task: str, **request) -> dict:
        """Run :data:`~mode.bench.ode_points.TASKS` ``[task]`` in a fresh process; its answer, with
        ``error`` (the traceback) where it raised or died."""
        self._process.stdin.write(json.dumps({"task": task, **request}) + "\n")
        self._process.stdin.flush()
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"the benchmark server stopped (exit status {self._process.wait()})")
        return json.loads(line)


def last_line(error: str) -> str:
    """The last line of a traceback: the exception and its message."""
    return error.strip().splitlines()[-1]


def finite(value) -> bool:
    """Whether ``value`` is a finite number."""
    return isinstance(value, (int, float)) and math.isfinite(value)


if __name__ == "__main__":
    _serve()
