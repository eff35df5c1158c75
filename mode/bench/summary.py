"""The targets per workload, checked against the measured rows; time ratios; a Markdown table."""

from __future__ import annotations

import math
from collections.abc import Sequence

from mode.bench.methods import METHODS, REFERENCE

#: Reversible activation memory without the bit stack, deepest over shallowest run.
FLAT_MEMORY_RATIO = 1.2
#: Bit stack bits per coordinate over L log2(1 / gamma).
STACK_BITS_RATIO = 2.0
#: Reversible step time over MomentumNet autograd; the ideal (four evaluations of f against three) is 4/3.
STEP_TIME_RATIO = 1.5
#: Reversible step time over checkpointing, which also evaluates every block once more in the backward.
OVER_CHECKPOINT_RATIO = 1.10
#: Reversible (float32) gradient error against float64 over float32 autograd's: float32 rounding in a
#: different order, not a different gradient, may cost up to this factor.
GRADIENT_ERROR_RATIO = 2.0
#: Reversible activation memory over memcnn's.
MEMCNN_MEMORY_RATIO = 1.5
#: The workloads on which the step-time and the memcnn-memory targets are set.
STEP_TIME_WORKLOADS = ("square-mlp", "conv")
MEMCNN_MEMORY_WORKLOADS = ("square-mlp",)
#: The step-time ratios reported at every depth: (method, divided by method).
RATIOS = (
    ("reversible", "autograd"),
    ("reversible", "checkpoint"),
    ("checkpoint", "autograd"),
    ("memcnn", "autograd"),
    ("momentumnet", "autograd"),
    ("reversible", "memcnn"),
)

MIB = 2**20


def _by_method(rows: list[dict], method: str) -> dict[int, dict]:
    return {row["depth"]: row for row in rows if row["method"] == method}


def stack_bits_bound(depth: int, n: int, k: int) -> float:
    r""":math:`L \log_2(1/\gamma)` for the exact :math:`\gamma = n / 2^k`: the information destroyed."""
    return depth * (k - math.log2(n))


def activation_without_stack(row: dict) -> int:
    """A row's activation bytes less its bit stack (the methods without one have ``stack_bytes`` None)."""
    return row["activation_bytes"] - (row["stack_bytes"] or 0)


def time_ratios(rows: list[dict]) -> list[dict]:
    """The :data:`RATIOS` of median step times at each workload and depth where both methods ran.

    Each entry has ``workload``, ``depth`` and ``"a/b"`` ratios: both medians come from the same
    interleaved rounds in one process.
    """
    cells = {}
    for row in (row for row in rows if row["step_s"] is not None):
        cells.setdefault((row["workload"], row["depth"]), {})[row["method"]] = row["step_s"]
    return [
        {
            "workload": workload,
            "depth": depth,
            **{f"{a}/{b}": steps[a] / steps[b] for a, b in RATIOS if a in steps and b in steps},
        }
        for (workload, depth), steps in cells.items()
    ]


def compile_time(rows: list[dict], workload: str) -> dict | None:
    """What the first reversible step of ``workload`` costs beyond a later one, by timed depth.

    ``compile_s`` (at the shallowest depth, also in ``by_depth``) is the wall-clock time of the first
    step in the fresh timing process minus the median of the later ones; ``None`` where the reversible
    method was never timed.
    """
    timed = [row for row in rows if row["workload"] == workload and row["step_s"] is not None]
    reversible = _by_method(timed, "reversible")
    if not reversible:
        return None
    by_depth = {d: row["first_step_wall_s"] - row["step_wall_s"] for d, row in reversible.items()}
    depth = min(by_depth)
    return {
        "compile_s": by_depth[depth],
        "depth": depth,
        "first_step_wall_s": reversible[depth]["first_step_wall_s"],
        "step_wall_s": reversible[depth]["step_wall_s"],
        "by_depth": by_depth,
    }


def _target(text: str, threshold: float, by_depth: dict[int, float], judged_at: str, **extra) -> dict:
    """A target judged at the deepest depth (``judged_at="deepest"``) or at every depth (``"every"``).

    ``value`` is the judged ratio (the worst one for ``"every"``); ``None``, and the target not met,
    where nothing could be measured.
    """
    if not by_depth:
        value = None
    else:
        value = by_depth[max(by_depth)] if judged_at == "deepest" else max(by_depth.values())
    return {
        "target": text,
        "threshold": threshold,
        "value": value,
        "met": value is not None and value <= threshold,
        "by_depth": by_depth,
        **extra,
    }


def _step_ratio(rows: list[dict], over: str) -> dict[int, float]:
    timed = [row for row in rows if row["step_s"] is not None]
    reversible, other = _by_method(timed, "reversible"), _by_method(timed, over)
    return {d: reversible[d]["step_s"] / other[d]["step_s"] for d in reversible if d in other}


def _gradient_accuracy(rows: list[dict]) -> dict[int, float]:
    """Reversible over autograd gradient error against float64, worst of input and parameters, at the
    depths where both errors are finite."""
    reversible, reference = _by_method(rows, "reversible"), _by_method(rows, REFERENCE)
    ratios = {}
    for depth, row in reversible.items():
        mine = row["grad_error_float64"]
        theirs = reference.get(depth, {}).get("grad_error_float64")
        parts = ("input", "parameters")
        if mine and theirs and all(mine[p] is not None and theirs[p] for p in parts):
            ratios[depth] = max(mine[p] / theirs[p] for p in parts)
    return ratios


def evaluate_targets(rows: list[dict], workload: str, stacks: Sequence[dict] = ()) -> dict[str, dict]:
    """Check the targets on ``workload``'s rows; each has ``target`` (in words), ``threshold``, the judged
    ``value``, ``met`` and ``by_depth``.

    The memory target compares each depth with the shallowest measured and is judged at the deepest.
    The bit-stack target also reads ``stacks``, the forward-only measurements at depths whose
    reversible cell was skipped (``reason`` null where measured).
    The gradient target is what can be asked of a float32 method at depth 1000 (the unit tests hold
    agreement with float32 autograd on well-conditioned blocks): to be no further from the float64
    gradient than float32 autograd itself is, within :data:`GRADIENT_ERROR_RATIO`.
    """
    rows = [row for row in rows if row["workload"] == workload]
    reversible = _by_method(rows, "reversible")
    flat = {}
    if len(reversible) > 1:
        low = activation_without_stack(reversible[min(reversible)])
        flat = {
            d: activation_without_stack(row) / low for d, row in reversible.items() if d > min(reversible)
        }
    alone = [cell for cell in stacks if cell["workload"] == workload and cell["reason"] is None]
    stack = {
        cell["depth"]: cell["stack_bits_per_coordinate"] / cell["stack_bits_bound"]
        for cell in [*alone, *reversible.values()]
    }
    targets = {
        "reversible_memory_flat": _target(
            f"reversible activation memory minus bit stack at the deepest depth within {FLAT_MEMORY_RATIO}x "
            f"of the shallowest (L={min(reversible, default=None)})",
            FLAT_MEMORY_RATIO,
            flat,
            "deepest",
        ),
        "bit_stack_bits": _target(
            f"bit stack within {STACK_BITS_RATIO}x of L log2(1/gamma) bits per coordinate (judged at the "
            "deepest depth, from a forward pass alone where the training step was over budget; the "
            "64-bit live word dominates at small L)",
            STACK_BITS_RATIO,
            stack,
            "deepest",
            met_at_depths=[depth for depth, ratio in stack.items() if ratio <= STACK_BITS_RATIO],
        ),
        "reversible_over_checkpoint": _target(
            f"reversible step time <= {OVER_CHECKPOINT_RATIO}x checkpointing at every timed depth (both "
            "evaluate every block once more in the backward pass)",
            OVER_CHECKPOINT_RATIO,
            _step_ratio(rows, "checkpoint"),
            "every",
        ),
        "gradient_accuracy": _target(
            f"reversible (float32) gradient error against float64 autograd within {GRADIENT_ERROR_RATIO}x "
            "that of float32 autograd, at every depth with a float64 reference (ratio of the two errors, "
            "worst of input and parameters)",
            GRADIENT_ERROR_RATIO,
            _gradient_accuracy(rows),
            "every",
        ),
    }
    if workload in STEP_TIME_WORKLOADS:
        targets["step_time"] = _target(
            f"reversible step time <= {STEP_TIME_RATIO}x MomentumNet autograd at every timed depth "
            "(ideal 4/3)",
            STEP_TIME_RATIO,
            _step_ratio(rows, REFERENCE),
            "every",
        )
    if workload in MEMCNN_MEMORY_WORKLOADS:
        memcnn = _by_method(rows, "memcnn")
        targets["memory_vs_memcnn"] = _target(
            f"reversible activation memory (bit stack included) within {MEMCNN_MEMORY_RATIO}x of memcnn's "
            "(judged at the deepest depth both ran)",
            MEMCNN_MEMORY_RATIO,
            {
                d: row["activation_bytes"] / memcnn[d]["activation_bytes"]
                for d, row in reversible.items()
                if d in memcnn
            },
            "deepest",
        )
    return targets


def memory_check(rows: list[dict], workload: str, saved_bytes_per_layer: int | None) -> dict | None:
    """Validate the memory measurement: autograd's growth per layer against what it must store.

    The measured slope between the shallowest and the deepest autograd run of ``workload`` should match
    ``saved_bytes_per_layer`` (:meth:`~mode.bench.workloads.Workload.saved_floats_per_layer`, in bytes);
    ``None`` where autograd ran at fewer than two depths.
    """
    autograd = _by_method([row for row in rows if row["workload"] == workload], REFERENCE)
    if len(autograd) < 2:
        return None
    low, high = min(autograd), max(autograd)
    slope = (autograd[high]["activation_bytes"] - autograd[low]["activation_bytes"]) / (high - low)
    return {
        "autograd_bytes_per_layer": slope,
        "expected_bytes_per_layer": saved_bytes_per_layer,
        "ratio": slope / saved_bytes_per_layer,
    }


def _error(row: dict, key: str) -> str:
    error = row.get(key)
    if error is None:
        return "-"
    return " / ".join(
        "inf" if error[part] is None else f"{error[part]:.1e}" for part in ("input", "parameters")
    )


def _number(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def markdown_table(rows: list[dict]) -> str:
    """One line per workload, method and depth: memory, bit stack, step time and gradient errors."""
    lines = [
        "| workload | method | L | activation MiB | of which bit stack MiB | stack bits/coord "
        "(L log2(1/gamma)) | step s | vs autograd | vs ResNet | grad error, input / params "
        "| vs float64 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    order = {method: index for index, method in enumerate(METHODS)}
    workloads = list(dict.fromkeys(row["workload"] for row in rows))
    for row in sorted(rows, key=lambda r: (workloads.index(r["workload"]), order[r["method"]], r["depth"])):
        stack = "-" if row["stack_bytes"] is None else f"{row['stack_bytes'] / MIB:.2f}"
        bits = (
            "-"
            if row["stack_bits_per_coordinate"] is None
            else f"{row['stack_bits_per_coordinate']} ({row['stack_bits_bound']:.1f})"
        )
        error = _error(row, "grad_error")
        if "grad_error_own_rule" in row:
            error += f" (own rule: {_error(row, 'grad_error_own_rule')})"
        lines.append(
            f"| {row['workload']} | {row['method']} | {row['depth']} | {row['activation_bytes'] / MIB:.1f} "
            f"| {stack} | {bits} | {_number(row['step_s'], '.3f')} | {_number(row['time_ratio_autograd'])} "
            f"| {_number(row['time_ratio_resnet'])} | {error} | {_error(row, 'grad_error_float64')} |"
        )
    return "\n".join(lines)
