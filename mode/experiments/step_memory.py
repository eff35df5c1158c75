"""Activation memory of one training step, each point measured in a process of its own.

The definition of ``mode bench memory`` (:mod:`mode.bench.peak`): the peak memory of a training step
minus the memory held just before it, after an identical warm-up step has allocated every ``.grad`` and
scratch buffer the measured step will use. On the CPU the peak resident set size, restarted after the
warm-up, minus the resident set size before the step; on a GPU ``max_memory_allocated`` minus
``memory_allocated``.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

import torch

from mode.bench import rss
from mode.bench.peak import before_step, peak_since


def step_activation_memory(step: Callable[[], object], device: torch.device) -> dict:
    """Run the training step ``step()`` twice, a warm-up and a measured one, in this process.

    Returns
    -------
    dict
        ``activation_bytes`` (peak minus baseline of the measured step), ``peak_reset`` (False: the
        CPU peak record could not be restarted, so the peak also covers the equal warm-up step) and
        ``step_s``, the wall time of the measured step.
    """
    step()
    before, peak_reset = before_step(device)
    start = time.perf_counter()
    step()
    peak = peak_since(device)
    return {
        "activation_bytes": peak - before,
        "peak_reset": peak_reset,
        "step_s": time.perf_counter() - start,
    }


def measure_in_processes(function: Callable[..., dict], points: list[dict], context) -> list[dict]:
    """``function(**point)`` for every point, each in a process of its own, so that no allocation of
    another point is cached where it would hide or inflate the peak.

    ``function`` must be defined at module level (the processes import it by name). The processes are
    forked from multiprocessing's fork server, which imports torch and ``function``'s module once and
    runs nothing else (importing torch per point would cost more than the points), and runs with the
    benchmark's ``MALLOC_ENV``, under which freed tensors leave the resident set at once. As with every
    start method but ``fork``, the children import the main module: a script that runs an experiment
    measuring memory needs the ``if __name__ == "__main__":`` guard (the ``mode`` command and pytest
    have it).
    """
    forkserver = multiprocessing.get_context("forkserver")
    forkserver.set_forkserver_preload([function.__module__])
    saved = {name: os.environ.get(name) for name in rss.MALLOC_ENV}
    os.environ.update(rss.MALLOC_ENV)  # read by the server when it starts (this process's malloc is set up)
    try:
        results = []
        for point in context.progress(points, desc="memory, one process per point"):
            with ProcessPoolExecutor(1, mp_context=forkserver) as pool:
                results.append(pool.submit(function, **point).result())
        return results
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name)
            else:
                os.environ[name] = value
