"""Which cells of the benchmark matrix to run: estimates from the shallower depths already measured.

Memory and step time grow affinely with depth (a fixed part plus so much per layer), so the
measurements of a method at smaller depths of a workload predict a deeper cell before it runs. A cell
whose peak memory would pass the cap (and swap or be killed) or whose training step would pass the
time budget is skipped with the reason, and so are the deeper cells of that method. A depth whose
timing process (every method, several rounds) would pass its budget keeps its memory measurements
and goes untimed; the float64 gradient references have a budget of their own.
"""

from __future__ import annotations

from dataclasses import dataclass

from mode.bench.workloads import GIB, Settings

#: The depth measured first where a sweep starts deeper, so that its first cells have an estimate.
PROBE_DEPTH = 10


def extrapolate(values: dict[int, float], depth: int) -> float | None:
    """Estimate at ``depth`` a quantity that grows affinely with depth from its ``values`` (by depth)
    at smaller depths.

    With two or more: the line through the two deepest, never below either (noise can tilt the line
    down). With one: scaled in proportion to depth, an upper bound, since it scales the fixed
    part too. With none: ``None``.
    """
    below = sorted(d for d in values if d < depth)
    if not below:
        return None
    high = below[-1]
    if len(below) == 1:
        return values[high] * depth / high
    low = below[-2]
    slope = (values[high] - values[low]) / (high - low)
    return max(values[low], values[high], values[high] + slope * (depth - high))


@dataclass(frozen=True)
class Estimate:
    """A cell's predicted peak memory (bytes) and training step (seconds), and the depths they came from."""

    peak_bytes: float
    step_s: float
    from_depths: tuple[int, ...]


def estimate(peaks: dict[int, float], steps: dict[int, float], depth: int) -> Estimate | None:
    """The :class:`Estimate` at ``depth`` from a method's peak memory and step time at smaller depths
    (both by depth), or ``None`` with no peak below ``depth``."""
    below = sorted(d for d in peaks if d < depth)
    if not below:
        return None
    return Estimate(
        peak_bytes=extrapolate(peaks, depth),
        step_s=extrapolate(steps, depth),
        from_depths=tuple(below[-2:]),
    )


def skip_reason(estimate: Estimate, settings: Settings) -> str | None:
    """Why a cell with this estimate must not run, or ``None`` if it fits the cap and the budget."""
    source = "from L=" + ", ".join(map(str, estimate.from_depths))
    if estimate.peak_bytes > settings.memory_cap:
        return (
            f"estimated peak memory {estimate.peak_bytes / GIB:.1f} GiB exceeds the cap of "
            f"{settings.memory_cap / GIB:g} GiB ({source})"
        )
    if estimate.step_s > settings.step_budget_s:
        return (
            f"estimated training step {estimate.step_s:.3g} s exceeds the budget of "
            f"{settings.step_budget_s:g} s per step ({source})"
        )
    return None


def float64_reason(
    reference_s: dict[int, float], autograd_peak: float | None, depth: int, settings: Settings
) -> str | None:
    """Why the float64 references must not run at ``depth``, or ``None``.

    They need autograd's memory twice over (``autograd_peak`` at this depth; ``None`` where autograd
    was not measured) and take the time of their float64 steps, extrapolated from ``reference_s`` (by
    depth) at smaller depths.
    """
    if autograd_peak is None:
        return "autograd, which the gradient references need the memory of, was not measured"
    if 2 * autograd_peak > settings.memory_cap:
        return f"twice autograd's peak memory exceeds the cap of {settings.memory_cap / GIB:g} GiB"
    seconds = extrapolate(reference_s, depth)
    if seconds is not None and seconds > settings.reference_budget_s:
        budget = settings.reference_budget_s
        return f"estimated float64 steps {seconds:.3g} s exceed the budget of {budget:g} s"
    return None


def timing_reason(steps: dict[str, float | None], settings: Settings) -> str | None:
    """Why a depth's timing process must not run, or ``None``: it runs the first round and at least
    ``settings.repeats`` timed rounds of every method, whose steps take ``steps`` (by method; ``None``
    where there is no estimate, which counts as nothing)."""
    seconds = (1 + settings.repeats) * sum(step for step in steps.values() if step is not None)
    if seconds > settings.timing_budget_s:
        return (
            f"estimated timing {seconds:.3g} s ({1 + settings.repeats} rounds) exceeds the budget of "
            f"{settings.timing_budget_s:g} s per depth"
        )
    return None
