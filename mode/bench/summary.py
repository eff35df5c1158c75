"""The issue's targets, checked against the measured rows, and a Markdown table of the rows."""

from __future__ import annotations

import math

from mode.bench.methods import METHODS, REFERENCE

#: Reversible activation memory without the bit stack, deepest over shallowest run.
FLAT_MEMORY_RATIO = 1.2
#: Bit stack bits per coordinate over L log2(1 / gamma).
STACK_BITS_RATIO = 2.0
#: Reversible step time over MomentumNet autograd; the ideal (four evaluations of f against three) is 4/3.
STEP_TIME_RATIO = 1.5

MIB = 2**20


def _by_method(rows: list[dict], method: str) -> dict[int, dict]:
    return {row["depth"]: row for row in rows if row["method"] == method}


def stack_bits_bound(depth: int, n: int, k: int) -> float:
    r""":math:`L \log_2(1/\gamma)` for the exact :math:`\gamma = n / 2^k`: the information destroyed."""
    return depth * (k - math.log2(n))


def activation_without_stack(row: dict) -> int:
    """A row's activation bytes less its bit stack (the methods without one have ``stack_bytes`` None)."""
    return row["activation_bytes"] - (row["stack_bytes"] or 0)


def evaluate_targets(rows: list[dict]) -> dict[str, dict]:
    """Check the targets; each entry says what was compared, the measured ratios and ``met``.

    The memory target compares the deepest with the shallowest depth measured. The gradient target is
    not the issue's (which asks for agreement with float32 autograd in the unit tests, on well-conditioned
    blocks) but what can be asked of a float32 method at depth 1000: to be no further from the float64
    gradient than float32 autograd itself is.
    """
    reversible, reference = _by_method(rows, "reversible"), _by_method(rows, REFERENCE)
    low, high = min(reversible), max(reversible)

    flat = activation_without_stack(reversible[high]) / activation_without_stack(reversible[low])
    stack = {
        depth: row["stack_bits_per_coordinate"] / row["stack_bits_bound"] for depth, row in reversible.items()
    }
    step = {depth: reversible[depth]["step_s"] / reference[depth]["step_s"] for depth in reversible}
    checkpoint = _by_method(rows, "checkpoint")
    floor = {depth: checkpoint[depth]["step_s"] / reference[depth]["step_s"] for depth in checkpoint}
    accuracy = {
        depth: max(
            row["grad_error_float64"][part] / reference[depth]["grad_error_float64"][part]
            for part in ("input", "parameters")
        )
        for depth, row in reversible.items()
    }
    return {
        "reversible_memory_flat": {
            "target": f"reversible activation memory minus bit stack at L={high} within "
            f"{FLAT_MEMORY_RATIO}x of L={low}",
            "threshold": FLAT_MEMORY_RATIO,
            "ratio": flat,
            "met": flat <= FLAT_MEMORY_RATIO,
        },
        "bit_stack_bits": {
            "target": f"bit stack within {STACK_BITS_RATIO}x of L log2(1/gamma) bits per coordinate "
            f"(judged at L={high}; the 64-bit live word dominates at small L)",
            "threshold": STACK_BITS_RATIO,
            "ratio_by_depth": stack,
            "met_at_depths": [depth for depth, ratio in stack.items() if ratio <= STACK_BITS_RATIO],
            "met": stack[high] <= STACK_BITS_RATIO,
        },
        "step_time": {
            "target": f"reversible step time <= {STEP_TIME_RATIO}x MomentumNet autograd at every depth "
            "(ideal 4/3)",
            "threshold": STEP_TIME_RATIO,
            "ratio_by_depth": step,
            "met": all(ratio <= STEP_TIME_RATIO for ratio in step.values()),
            # Checkpointing evaluates every block once more, as the reversible backward must: its ratio is
            # what recomputation costs on this workload, the ideal 4/3 only where backward = 2 forward.
            "recompute_floor_by_depth": floor,
            "over_checkpoint_by_depth": {
                depth: step[depth] / floor[depth] for depth in step if depth in floor
            },
        },
        "gradient_accuracy": {
            "target": "reversible (float32) gradient error against float64 autograd at most that of "
            "float32 autograd, at every depth (ratio of the two errors, worst of input and parameters)",
            "threshold": 1.0,
            "ratio_by_depth": accuracy,
            "met": all(ratio <= 1.0 for ratio in accuracy.values()),
        },
    }


def memory_check(rows: list[dict], saved_bytes_per_layer: int) -> dict:
    """Validate the memory measurement: autograd's growth per layer against what it must store.

    Autograd keeps each block's input and its tanh output (which the second ``Linear`` also saves),
    ``batch * (dim + hidden)`` floats per layer; the measured slope between the shallowest and the
    deepest run should match it.
    """
    autograd = _by_method(rows, REFERENCE)
    low, high = min(autograd), max(autograd)
    slope = (autograd[high]["activation_bytes"] - autograd[low]["activation_bytes"]) / (high - low)
    return {
        "autograd_bytes_per_layer": slope,
        "expected_bytes_per_layer": saved_bytes_per_layer,
        "ratio": slope / saved_bytes_per_layer,
    }


def _error(row: dict, key: str) -> str:
    error = row.get(key)
    return "-" if error is None else f"{error['input']:.1e} / {error['parameters']:.1e}"


def markdown_table(rows: list[dict]) -> str:
    """One line per method and depth: memory, bit stack, step time and gradient errors."""
    lines = [
        "| method | L | activation MiB | of which bit stack MiB | stack bits/coord (L log2(1/gamma)) "
        "| step s | vs autograd | vs ResNet | grad error vs autograd, input / params "
        "| vs float64 autograd |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for method in METHODS:
        for depth, row in sorted(_by_method(rows, method).items()):
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
                f"| {method} | {depth} | {row['activation_bytes'] / MIB:.1f} | {stack} | {bits} "
                f"| {row['step_s']:.3f} | {row['time_ratio_autograd']:.2f} | {row['time_ratio_resnet']:.2f} "
                f"| {error} | {_error(row, 'grad_error_float64')} |"
            )
    return "\n".join(lines)
