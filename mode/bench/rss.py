"""Resident memory of this process on Linux: now, at its peak, and restarting the peak record.

Kept free of heavy imports so that scripts outside the benchmark (the examples) can measure the same way.
"""

from __future__ import annotations

#: glibc raises its mmap threshold after freeing a large block and then serves later large tensors
#: from the heap, whose freed pages stay resident, so that the measured step would reuse the warm-up's
#: memory unseen; a fixed threshold gives every block from 64 KiB up its own mapping, returned when freed.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}


def status_bytes(field: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``: resident now, ``VmHWM``: peak), in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field} field")


def reset_peak() -> bool:
    """Restart the kernel's peak-RSS record (``VmHWM``) from the current RSS; ``False`` where refused."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # Linux >= 4.0
    except OSError:
        return False
    return True
