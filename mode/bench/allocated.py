"""Peak tensor memory of a piece of code, counted at PyTorch's allocator: the CPU's analogue of
``torch.cuda.max_memory_allocated``.

The resident set size (:mod:`mode.bench.rss`) counts pages, so a few hundred kilobytes of heap or
allocator reuse move it, and it cannot resolve the sub-MiB states of small workloads. The profiler's
memory events give every allocation and free of a tensor's storage, in order, with its size in bytes:

.. math::  \\text{peak} = \\max_j \\sum_{i \\le j} b_i ,

with :math:`b_i > 0` for an allocation and :math:`b_i < 0` for a free, counted from the start of the
block. Tensors allocated before the block do not count, even where the block frees them (the profiler
reports no free of an allocation it did not see), so the peak never undercounts the block's own
allocations. The count is exact and the same in every run; it leaves out what is not a tensor (Python
objects, a library's own scratch space).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from types import TracebackType

import torch
from torch.profiler import ProfilerActivity, profile


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """File descriptor 2 to /dev/null: the profiler's C++ library logs every start and stop there
    (``profiler_start``, a failed GPU query on a machine without one), once per measured point."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _peak(changes: list[int]) -> int:
    live = peak = 0
    for change in changes:
        live += change
        peak = max(peak, live)
    return peak


class TensorPeak:
    """Context manager: the peak bytes of tensor storage allocated on ``device`` inside a ``with`` block.

    Parameters
    ----------
    device : str or torch.device
        The device whose allocations count (``"cpu"`` by default).

    Attributes
    ----------
    peak_bytes : int
        Set on exit: the largest sum of allocated minus freed bytes at any moment of the block (``>= 0``).
    net_bytes : int
        Set on exit: allocated minus freed bytes over the whole block (still held after it).

    Examples
    --------
    >>> import torch
    >>> with TensorPeak() as peak:
    ...     a = torch.empty(1000, dtype=torch.float64)
    ...     del a
    ...     b = torch.empty(10, dtype=torch.float64)
    >>> peak.peak_bytes, peak.net_bytes
    (8000, 80)
    """

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.peak_bytes = 0
        self.net_bytes = 0
        self._profile = profile(activities=[ProfilerActivity.CPU], profile_memory=True)

    def __enter__(self) -> TensorPeak:
        with _native_stderr_silenced():
            self._profile.__enter__()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        with _native_stderr_silenced():
            self._profile.__exit__(kind, error, trace)
            events = self._profile.profiler.kineto_results.events()  # type: ignore[union-attr]
        if kind is not None:
            return
        device = self._device_type()
        memory = [e for e in events if e.name() == "[memory]" and e.device_type() == device]
        # A stable sort by time: events of the same instant keep the order they were recorded in.
        ordered = [e.nbytes() for e in sorted(memory, key=lambda e: e.start_ns())]  # type: ignore[union-attr]
        self.peak_bytes, self.net_bytes = _peak(ordered), sum(ordered)

    def _device_type(self):
        return getattr(torch._C._autograd.DeviceType, self.device.type.upper())
