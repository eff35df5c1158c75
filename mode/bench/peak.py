"""Activation memory of one training step, measured in a fresh process per method and depth.

Activation memory is the peak memory of a training step (forward and backward) minus the memory held
just before it, after an identical warm-up step has allocated the parameters' ``.grad`` tensors. On
the CPU: the peak resident set size (``VmHWM``, restarted after the warm-up through
``/proc/self/clear_refs``) minus the resident set size before the step (``VmRSS``). On a GPU:
``torch.cuda.max_memory_allocated`` minus ``memory_allocated`` before the step.

Each point runs in a fresh process, so that no allocation of another method or depth is cached where
it would hide or inflate the peak. :class:`PointServer` starts ``python -m mode.bench.peak``, which
imports torch once and then forks one child per point (importing torch anew for every point would cost
more than many of the points themselves).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import traceback
from dataclasses import asdict
from pathlib import Path

import torch

from mode.bench.methods import (
    Workload,
    build,
    forward_loss,
    make_blocks,
    make_input,
)
from mode.bench.rss import MALLOC_ENV, reset_peak, status_bytes
from mode.bench.summary import stack_bits_bound
from mode.runtime import torch_threads


def _before_step(device: torch.device) -> tuple[int, bool]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device), True
    return status_bytes("VmRSS"), reset_peak()


def _peak(device: torch.device) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device)
    return status_bytes("VmHWM")


def measure_point(method: str, depth: int, workload: dict, seed: int, device: str) -> dict:
    """Measure one training step of ``method`` at ``depth`` in this process (use a fresh one).

    Parameters
    ----------
    method : str
        A key of :data:`mode.bench.methods.METHODS`.
    depth : int
        Number of blocks :math:`L`.
    workload : dict
        The fields of a :class:`~mode.bench.methods.Workload`.
    seed : int
        Seed of the weights and the input.
    device : str
        ``"cpu"`` or ``"cuda"``.

    Returns
    -------
    dict
        ``activation_bytes`` (peak minus baseline), ``baseline_bytes``, ``peak_bytes``,
        ``parameter_bytes``, ``loss_finite``, ``peak_reset`` (whether the CPU measurement could restart
        the peak record after the warm-up; if not, the peak also covers the warm-up, an equal step) and
        for the reversible method ``stack_bytes`` and ``stack_bits_per_coordinate`` of
        the bit stack after the forward pass with their ``stack_bits_bound``
        (:func:`~mode.bench.summary.stack_bits_bound`), else ``None``.
    """
    device, workload = torch.device(device), Workload(**workload)
    with torch_threads(workload.threads):
        return _measure(method, depth, workload, seed, device)


def _measure(method: str, depth: int, workload: Workload, seed: int, device: torch.device) -> dict:
    net = build(method, make_blocks(depth, workload, seed, device), workload.gamma)
    x = make_input(workload, seed, device)
    # The warm-up allocates every .grad and, at full size, touches every thread, scratch buffer and
    # library page that the measured step will use, so that the measured step counts none of them.
    forward_loss(net, x)[1].backward()
    before, peak_reset = _before_step(device)
    _, loss = forward_loss(net, x)
    stack = {"stack_bytes": None, "stack_bits_per_coordinate": None, "stack_bits_bound": None}
    if method == "reversible":
        # Read after the forward, when the stack is full: the backward empties it again.
        stack = {
            "stack_bytes": net.bit_stack.nbytes(),
            "stack_bits_per_coordinate": net.bit_stack.bits_per_coordinate(),
            "stack_bits_bound": stack_bits_bound(depth, net.n, net.k),
        }
    loss.backward()
    peak = _peak(device)
    return {
        "activation_bytes": peak - before,
        "baseline_bytes": before,
        "peak_bytes": peak,
        "parameter_bytes": sum(p.numel() * p.element_size() for p in net.parameters()),
        **stack,
        "loss_finite": math.isfinite(loss.item()),
        "peak_reset": peak_reset,
    }


def _serve() -> None:
    """Read one JSON object of :func:`measure_point` arguments per line of stdin; answer each with one
    JSON line on stdout, measured in a child forked for that point alone.

    The server itself runs no torch operation, so every child starts from the same state: modules
    imported, no thread pool, no tensor allocated.
    """
    for line in sys.stdin:
        pid = os.fork()
        if pid == 0:
            try:
                answer = measure_point(**json.loads(line))
            except BaseException:
                answer = {"error": traceback.format_exc()}
            sys.stdout.write(json.dumps(answer) + "\n")
            sys.stdout.flush()
            os._exit(0)  # not the server's cleanup: the child shares its stdin
        status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        if status != 0:  # killed before it could answer, e.g. out of memory
            sys.stdout.write(
                json.dumps({"error": f"the measuring process ended with status {status}"}) + "\n"
            )
            sys.stdout.flush()


class PointServer:
    """A ``python -m mode.bench.peak`` process that measures points in fresh children; a context manager.

    It runs with :data:`MALLOC_ENV` and imports this source tree, whether or not it is the installed one.
    """

    def __enter__(self) -> PointServer:
        env = dict(os.environ, **MALLOC_ENV)
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (root, env.get("PYTHONPATH"))))
        self._process = subprocess.Popen(
            [sys.executable, "-m", "mode.bench.peak"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        return self

    def __exit__(self, *exc) -> None:
        self._process.stdin.close()
        self._process.wait()

    def measure(self, method: str, depth: int, workload: Workload, seed: int, device: str) -> dict:
        """:func:`measure_point` in a fresh process; raises ``RuntimeError`` if it failed."""
        kwargs = {
            "method": method,
            "depth": depth,
            "workload": asdict(workload),
            "seed": seed,
            "device": device,
        }
        self._process.stdin.write(json.dumps(kwargs) + "\n")
        self._process.stdin.flush()
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"the memory server stopped (exit status {self._process.wait()})")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"memory point {method} at L={depth} failed:\n{answer['error']}")
        return answer


if __name__ == "__main__":
    _serve()
