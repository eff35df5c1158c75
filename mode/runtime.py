"""How the library's own runs use the machine."""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def torch_threads(count: int):
    """Run the body with ``count`` torch intra-op threads, then restore the caller's number.

    The checks, experiments and benchmarks run one thread: their tensors are small enough that intra-op
    threads cost more than they save, several-fold on a shared two-core machine, where every operation
    waits for the slowest thread.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
