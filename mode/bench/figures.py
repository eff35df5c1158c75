"""PNG figures of a memory-benchmark result, drawn with matplotlib's Agg renderer (no display needed).

One figure per workload (memory, step time and gradient error against depth, every method; the float32
errors against autograd are in ``results.json``) and one summary of the reversible mode's step-time
ratios on every workload.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from mode.bench.methods import METHODS, REFERENCE
from mode.bench.summary import MIB, OVER_CHECKPOINT_RATIO, STEP_TIME_RATIO, STEP_TIME_WORKLOADS

STYLE = {
    "resnet": {"color": "tab:gray", "marker": "s"},
    "autograd": {"color": "tab:blue", "marker": "o"},
    "reversible": {"color": "tab:red", "marker": "D"},
    "checkpoint": {"color": "tab:green", "marker": "^"},
    "momentumnet": {"color": "tab:purple", "marker": "v"},
    "memcnn": {"color": "tab:orange", "marker": "P"},
}
#: Where exact (zero) gradient errors are drawn on the logarithmic axis.
ERROR_FLOOR = 1e-12


def _series(rows: list[dict], method: str, value) -> tuple[list[int], list[float]]:
    """Depths and ``value(row)`` of ``method``'s rows where the value is not ``None``, by depth."""
    chosen = sorted((row for row in rows if row["method"] == method), key=lambda row: row["depth"])
    pairs = [(row["depth"], value(row)) for row in chosen]
    return [d for d, v in pairs if v is not None], [v for _, v in pairs if v is not None]


def _axes(fig: Figure, index: int, depths: list[int], title: str, ylabel: str, log_y: bool = True):
    ax = fig.add_subplot(1, 3, index)
    ax.set(xscale="log", yscale="log" if log_y else "linear", xlabel="depth L", ylabel=ylabel)
    # Ticks at the measured depths alone: a log axis labels minor ticks too, which layout pays for.
    ax.set_xticks(depths, [str(depth) for depth in depths])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlim(min(depths) / 1.5, max(depths) * 1.5)  # every depth, measured in this panel or not
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    return ax


def _memory(fig: Figure, rows: list[dict], depths: list[int]) -> None:
    ax = _axes(fig, 1, depths, "Activation memory of one training step", "MiB (peak minus before step)")
    for method in METHODS:
        ax.plot(
            *_series(rows, method, lambda row: row["activation_bytes"] / MIB), label=method, **STYLE[method]
        )
    stack = _series(rows, "reversible", lambda row: row["stack_bytes"] / MIB)
    ax.plot(*stack, ls=":", label="reversible: bit stack", **STYLE["reversible"])
    weights = _series(rows, "reversible", lambda row: row["parameter_bytes"] / MIB)
    ax.plot(*weights, ls="--", color="black", label="parameters (for scale; not included)")
    ax.legend(fontsize=7, loc="upper left")


def _step_time(fig: Figure, rows: list[dict], depths: list[int]) -> None:
    title = "Training step time relative to MomentumNet autograd"
    ax = _axes(fig, 2, depths, title, "time / autograd time", log_y=False)
    for method in METHODS:
        if method != REFERENCE:
            ax.plot(
                *_series(rows, method, lambda row: row["time_ratio_autograd"]), label=method, **STYLE[method]
            )
    ax.axhline(4 / 3, color="black", ls=":", lw=1, label="4/3 (ideal, reversible)")
    ax.axhline(STEP_TIME_RATIO, color="black", ls="--", lw=1, label=f"{STEP_TIME_RATIO} (target)")
    ax.axhline(1, color="tab:blue", lw=1)
    ax.legend(fontsize=7)


def _grad_error(fig: Figure, rows: list[dict], depths: list[int]) -> None:
    title = (
        f"Relative gradient error against float64 autograd of the same model\n(exact 0 at {ERROR_FLOOR:g})"
    )
    ax = _axes(fig, 3, depths, title, "|g - g_float64| / |g_float64|")
    for method in METHODS:
        for part, ls in (("parameters", "-"), ("input", "--")):
            error = _series(rows, method, lambda row, part=part: (row["grad_error_float64"] or {}).get(part))
            if error[0]:
                ax.plot(
                    error[0],
                    [max(e, ERROR_FLOOR) for e in error[1]],
                    ls=ls,
                    label=f"{method}, {part}",
                    **STYLE[method],
                )
    if ax.lines:
        ax.legend(fontsize=6, loc="best")


def _not_run(results: dict, name: str) -> str:
    """A footnote on ``name``'s cells that were skipped and depths that were not timed."""
    by_depth = {}
    for cell in results["skipped"]:
        if cell["workload"] == name:
            by_depth.setdefault(cell["depth"], []).append(cell["method"])
    notes = [f"L={depth}: {', '.join(methods)}" for depth, methods in sorted(by_depth.items())]
    untimed = [t["depth"] for t in results["timings"] if t["workload"] == name and t["reason"]]
    return "; ".join(
        ([f"not run (skipped in results.json): {'; '.join(notes)}"] if notes else [])
        + ([f"not timed (timings): L={', '.join(map(str, untimed))}"] if untimed else [])
    )


def _workload_figure(results: dict, name: str) -> Figure:
    settings, workload = results["settings"], results["workloads"][name]
    rows = [row for row in results["rows"] if row["workload"] == name]
    fig = Figure(figsize=(15, 5), layout="constrained")
    fig.suptitle(
        f"{name}: {workload['block']}, input {tuple(workload['input_shape'])}\n"
        f"memcnn: {workload['coupling']}\ngamma {settings['gamma']}, float32, {settings['device']}",
        fontsize=9,
    )
    for draw in (_memory, _step_time, _grad_error):
        draw(fig, rows, settings["depths"])
    note = _not_run(results, name)
    if note:
        fig.supxlabel(note, fontsize=7)
    return fig


def _summary_figure(results: dict) -> Figure:
    names = results["settings"]["workloads"]
    depths = results["settings"]["depths"]
    fig = Figure(figsize=(11, 4.4), layout="constrained")
    fig.suptitle("Reversible step time per workload (medians of the same interleaved rounds)", fontsize=10)
    panels = (
        ("reversible/checkpoint", OVER_CHECKPOINT_RATIO, "target on every workload"),
        ("reversible/autograd", STEP_TIME_RATIO, f"target on {', '.join(STEP_TIME_WORKLOADS)}"),
    )
    for index, (ratio, threshold, scope) in enumerate(panels):
        ax = fig.add_subplot(1, 2, index + 1)
        for offset, depth in enumerate(depths):
            points = [
                (names.index(entry["workload"]), entry[ratio])
                for entry in results["ratios"]
                if entry["depth"] == depth and ratio in entry
            ]
            shift = (offset - (len(depths) - 1) / 2) * 0.12
            ax.plot([x + shift for x, _ in points], [y for _, y in points], "o", label=f"L={depth}")
        ax.axhline(threshold, color="black", ls="--", lw=1, label=f"{threshold} ({scope})")
        ax.axhline(1, color="gray", lw=1)
        ax.set_xticks(range(len(names)), names, fontsize=8)
        ax.set(ylabel=ratio.replace("/", " / "), title=ratio)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    return fig


def save_figures(results: dict, out: Path) -> list[Path]:
    """Write ``<workload>.png`` for every workload and ``summary.png`` into ``out``; return their paths."""
    figures = {name: _workload_figure(results, name) for name in results["settings"]["workloads"]}
    figures["summary"] = _summary_figure(results)
    paths = []
    for name, fig in figures.items():
        path = Path(out) / f"{name}.png"
        fig.savefig(path, dpi=120)
        paths.append(path)
    return paths
