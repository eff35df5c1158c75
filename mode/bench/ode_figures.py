"""PNG figures of a ``mode bench ode`` result (matplotlib's Agg renderer, no display needed), one panel per
workload in each: ``pareto.png`` (gradient error against activation memory, the Pareto front outlined),
``error_time.png`` (gradient error against time) and ``memory_steps.png`` (memory against steps)."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from mode.bench.ode_problem import METHODS
from mode.records import save_figure

STYLE = {
    "dopri5-direct": {"color": "tab:blue", "marker": "o"},
    "dopri5-adjoint": {"color": "tab:blue", "marker": "o", "mfc": "none", "ls": "--"},
    "rk4-direct": {"color": "tab:green", "marker": "s"},
    "rk4-adjoint": {"color": "tab:green", "marker": "s", "mfc": "none", "ls": "--"},
    "mali": {"color": "tab:purple", "marker": "v"},
    "reversible-momentum": {"color": "tab:orange", "marker": "D"},
    "reversible-leapfrog": {"color": "tab:red", "marker": "D"},
    "checkpoint-leapfrog": {"color": "tab:red", "marker": "^", "mfc": "none", "ls": ":"},
}
MIB = 2**20
#: Where a point that allocated no tensor memory is drawn on the logarithmic axis.
MEMORY_FLOOR_MIB = 1 / 256


def _measured(rows: list[dict], method: str) -> list[dict]:
    return [r for r in rows if r["method"] == method and r.get("grad_error") is not None]


def _mib(row: dict) -> float:
    return max(row["activation_bytes"] / MIB, MEMORY_FLOOR_MIB)


def _panels(results: dict, title: str, xlabel: str, ylabel: str) -> tuple[Figure, list]:
    names = list(results["workloads"])
    fig = Figure(figsize=(5.5 * len(names), 5), layout="constrained")
    fig.suptitle(title, fontsize=10)
    axes = []
    for index, name in enumerate(names):
        ax = fig.add_subplot(1, len(names), index + 1)
        ax.set(xscale="log", yscale="log", xlabel=xlabel, ylabel=ylabel, title=name)
        ax.grid(True, which="both", alpha=0.3)
        axes.append((name, ax))
    return fig, axes


def _pareto(results: dict) -> Figure:
    fig, axes = _panels(
        results,
        "Gradient error against activation memory (float32; error against the float64 true gradient);\n"
        "black outline and line: the Pareto front",
        "activation memory of one forward + backward (MiB)",
        "relative gradient error",
    )
    for name, ax in axes:
        rows = [r for r in results["rows"] if r["workload"] == name]
        for method in METHODS:
            chosen = _measured(rows, method)
            style = {k: v for k, v in STYLE[method].items() if k != "ls"}
            ax.plot(
                [_mib(r) for r in chosen], [r["grad_error"] for r in chosen], ls="none", label=method, **style
            )
        front = sorted((_mib(r), r["grad_error"]) for r in rows if r.get("pareto"))
        if front:
            ax.plot(*zip(*front, strict=True), color="black", lw=1, drawstyle="steps-post")
            ax.plot(*zip(*front, strict=True), ls="none", marker="o", mfc="none", mec="black", ms=11)
        ax.legend(fontsize=7)
    return fig


def _error_time(results: dict) -> Figure:
    fig, axes = _panels(
        results,
        "Gradient error against time of one forward + backward (float32, one thread)",
        "CPU seconds",
        "relative gradient error",
    )
    for name, ax in axes:
        rows = [r for r in results["rows"] if r["workload"] == name]
        for method in METHODS:
            chosen = sorted(_measured(rows, method), key=lambda r: r["step_s"])
            ax.plot(
                [r["step_s"] for r in chosen],
                [r["grad_error"] for r in chosen],
                label=method,
                **STYLE[method],
            )
        ax.legend(fontsize=7)
    return fig


def _memory_steps(results: dict) -> Figure:
    fig, axes = _panels(
        results, "Activation memory against fixed steps N (dopri5 chooses its own steps)", "steps N", "MiB"
    )
    for name, ax in axes:
        rows = [r for r in results["rows"] if r["workload"] == name and r["steps"] is not None]
        for method in METHODS:
            chosen = sorted(
                (r for r in rows if r["method"] == method and r.get("activation_bytes") is not None),
                key=lambda r: r["steps"],
            )
            if chosen:
                ax.plot(
                    [r["steps"] for r in chosen], [_mib(r) for r in chosen], label=method, **STYLE[method]
                )
        ax.legend(fontsize=7)
    return fig


def save_ode_figures(results: dict, out) -> list[Path]:
    """Write ``pareto.png``, ``error_time.png`` and ``memory_steps.png`` into ``out`` atomically."""
    figures = {
        "pareto": _pareto(results),
        "error_time": _error_time(results),
        "memory_steps": _memory_steps(results),
    }
    return [save_figure(fig, Path(out) / f"{name}.png") for name, fig in figures.items()]
