"""Activation memory of one training step, measured in a fresh process per cell, and the server that
runs such processes (for the step timings of :mod:`mode.bench.steps` too).

Activation memory is the peak memory of a training step (forward and backward) minus the memory held
just before it, after an identical warm-up step has allocated the parameters' ``.grad`` tensors, counted
at PyTorch's allocator: on the CPU by :class:`~mode.bench.allocated.TensorPeak`, on a GPU by
``torch.cuda.max_memory_allocated`` minus ``memory_allocated`` before the step. On the CPU the peak
resident set size (``VmHWM``, restarted after the warm-up through ``/proc/self/clear_refs``) minus the
resident set size before the step (``VmRSS``) is reported beside it: it also counts Python objects and
allocator fragmentation, at the resolution of pages. :func:`before_step` and :func:`peak_since` measure
that way for the experiments too.

Each point runs in a fresh process, so that no allocation of another method or depth is cached where
it would hide or inflate the peak. :class:`PointServer` starts ``python -m mode.bench.peak``, which
imports torch once and then forks one child per request (importing torch anew for every point would
cost more than many of the points themselves).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict

import torch

from mode.bench.allocated import TensorPeak
from mode.bench.methods import build, family, forward_loss, make_layers
from mode.bench.rss import MALLOC_ENV, reset_peak, status_bytes
from mode.bench.server import ModuleServer, serve_forked
from mode.bench.steps import measure_depth
from mode.bench.summary import stack_bits_bound
from mode.bench.workloads import Settings, Workload, make_input
from mode.runtime import torch_threads


def before_step(device: torch.device) -> tuple[int, bool]:
    """The memory held now and whether the peak record restarted here (CPU: resident set size and
    ``VmHWM`` reset; GPU: allocated memory and ``reset_peak_memory_stats``)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device), True
    return status_bytes("VmRSS"), reset_peak()


def peak_since(device: torch.device) -> int:
    """The peak memory since :func:`before_step` (``VmHWM`` or ``max_memory_allocated``)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device)
    return status_bytes("VmHWM")


def measure_point(
    method: str, depth: int, workload: Workload, settings: Settings, seed: int, device: str
) -> dict:
    """Measure one training step of ``method`` at ``depth`` in this process (use a fresh one).

    Parameters
    ----------
    method : str
        A key of :data:`mode.bench.methods.METHODS`.
    depth : int
        Number of layers :math:`L`.
    workload : Workload
        The blocks and the input.
    settings : Settings
        ``gamma`` and ``threads`` are used.
    seed : int
        Seed of the weights and the input.
    device : str
        ``"cpu"`` or ``"cuda"``.

    Returns
    -------
    dict
        ``activation_bytes`` (the peak of tensor storage allocated during the step: counted by
        :class:`~mode.bench.allocated.TensorPeak` on the CPU, ``max_memory_allocated`` minus the memory
        allocated before on a GPU), ``resident_bytes`` (CPU: peak resident set minus the resident set
        before the step, which also counts what is not a tensor; ``None`` on a GPU), ``baseline_bytes``
        and ``peak_bytes`` (resident or allocated memory before and at the peak),
        ``parameter_bytes``, ``loss_finite``, ``peak_reset`` (whether the CPU measurement could restart
        the peak record after the warm-up; if not, the peak also covers the warm-up, an equal step),
        ``memory_step_wall_s`` (wall-clock time of the measured step, which the benchmark extrapolates to
        deeper networks), ``forward_wall_s`` (its forward pass alone) and for the reversible method
        ``stack_bytes`` and ``stack_bits_per_coordinate`` of the bit stack after the forward pass with
        their ``stack_bits_bound`` (:func:`~mode.bench.summary.stack_bits_bound`), else ``None``.
    """
    device = torch.device(device)
    with torch_threads(settings.threads):
        return _measure(method, depth, workload, settings.gamma, seed, device)


def _measure(
    method: str, depth: int, workload: Workload, gamma: float, seed: int, device: torch.device
) -> dict:
    net = build(method, make_layers(family(method), depth, workload, seed, device), gamma)
    x = make_input(workload, seed, device)
    # The warm-up allocates every .grad and, at full size, touches every thread, scratch buffer and
    # library page that the measured step will use, so that the measured step counts none of them.
    forward_loss(net, x)[1].backward()
    before, peak_reset = before_step(device)
    start = time.perf_counter()
    _, loss = forward_loss(net, x)
    forward_s = time.perf_counter() - start
    stack = {"stack_bytes": None, "stack_bits_per_coordinate": None, "stack_bits_bound": None}
    if method == "reversible":
        stack = _stack(net, depth)
    loss.backward()
    peak = peak_since(device)
    tensors = None
    if device.type == "cpu":
        # A third, identical step under the allocator count: the profiler's own records would add to
        # the resident set of the step above.
        with TensorPeak(device) as counted:
            forward_loss(net, x)[1].backward()
        tensors = counted.peak_bytes
    return {
        "activation_bytes": peak - before if tensors is None else tensors,
        "resident_bytes": None if tensors is None else peak - before,
        "baseline_bytes": before,
        "peak_bytes": peak,
        "parameter_bytes": sum(p.numel() * p.element_size() for p in net.parameters()),
        **stack,
        "loss_finite": math.isfinite(loss.item()),
        "peak_reset": peak_reset,
        "memory_step_wall_s": time.perf_counter() - start,
        "forward_wall_s": forward_s,
    }


def _stack(net, depth: int) -> dict:
    """The bit stack of a reversible ``net`` of ``depth`` layers, read after its forward pass (when it is
    full: the backward empties it again)."""
    return {
        "stack_bytes": net.bit_stack.nbytes(),
        "stack_bits_per_coordinate": net.bit_stack.bits_per_coordinate(),
        "stack_bits_bound": stack_bits_bound(depth, net.n, net.k),
    }


def measure_stack(depth: int, workload: Workload, settings: Settings, seed: int, device: str) -> dict:
    """The reversible method's bit stack after one forward pass at ``depth``, for a depth whose training
    step is over the budget: the forward alone fills the stack, with a graph as in training.

    Returns
    -------
    dict
        ``stack_bytes``, ``stack_bits_per_coordinate``, ``stack_bits_bound`` and ``loss_finite`` as in
        :func:`measure_point`, and ``forward_wall_s``.
    """
    device = torch.device(device)
    with torch_threads(settings.threads):
        net = build("reversible", make_layers("blocks", depth, workload, seed, device), settings.gamma)
        x = make_input(workload, seed, device)
        start = time.perf_counter()
        _, loss = forward_loss(net, x)  # the pass's graph holds the stack: read it while the loss lives
        seconds = time.perf_counter() - start
        return {**_stack(net, depth), "forward_wall_s": seconds, "loss_finite": math.isfinite(loss.item())}


#: What a :class:`PointServer` can run: a task name -> a function of ``workload`` and ``settings`` (and
#: JSON-ready arguments) that returns a JSON-ready dict.
TASKS = {"memory": measure_point, "stack": measure_stack, "steps": measure_depth}


def _answer(request: dict) -> dict:
    task = TASKS[request.pop("task")]
    workload, settings = Workload(**request.pop("workload")), Settings(**request.pop("settings"))
    return task(workload=workload, settings=settings, **request)


def _serve() -> None:
    """Read one JSON request (``task``, ``workload``, ``settings`` and the task's other arguments) per
    line of stdin; answer each with one JSON line on stdout, computed in a child forked for it alone.

    The server itself runs no torch operation, so every child starts from the same state: modules
    imported, no thread pool, no tensor allocated.
    """
    serve_forked(_answer)


class PointFailed(RuntimeError):
    """A request that the fresh process could not answer; the message holds its traceback."""


class PointServer(ModuleServer):
    """The server of :data:`TASKS`: :data:`.MALLOC_ENV` in its environment for memory points (the
    default); none for timings, which should see the allocator that users run."""

    module = "mode.bench.peak"

    def __init__(self, env: dict[str, str] | None = None):
        super().__init__(MALLOC_ENV if env is None else env)

    def submit(self, task: str, workload: Workload, settings: Settings, **kwargs) -> None:
        """Start :data:`TASKS` ``[task]`` in a fresh process; :meth:`receive` returns its answer."""
        request = {"task": task, "workload": asdict(workload), "settings": asdict(settings), **kwargs}
        self._process.stdin.write(json.dumps(request) + "\n")
        self._process.stdin.flush()

    def receive(self) -> dict:
        """Wait for the answer to the last :meth:`submit`.

        Raises
        ------
        PointFailed
            If the task raised or its process died (its answer's ``error``).
        RuntimeError
            If the server itself stopped.
        """
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"the benchmark server stopped (exit status {self._process.wait()})")
        answer = json.loads(line)
        if "error" in answer:
            raise PointFailed(answer["error"])
        return answer

    def call(self, task: str, workload: Workload, settings: Settings, **kwargs) -> dict:
        """:meth:`submit`, then :meth:`receive`."""
        self.submit(task, workload, settings, **kwargs)
        return self.receive()


if __name__ == "__main__":
    _serve()
