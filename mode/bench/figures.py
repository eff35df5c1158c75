"""PNG figures of a memory-benchmark result, drawn with matplotlib's Agg renderer (no display needed)."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from mode.bench.methods import METHODS, REFERENCE
from mode.bench.summary import MIB, STEP_TIME_RATIO

STYLE = {
    "resnet": {"color": "tab:gray", "marker": "s"},
    "autograd": {"color": "tab:blue", "marker": "o"},
    "reversible": {"color": "tab:red", "marker": "D"},
    "checkpoint": {"color": "tab:green", "marker": "^"},
    "momentumnet": {"color": "tab:purple", "marker": "v"},
}
#: Where exact (zero) gradient errors are drawn on the logarithmic axis.
ERROR_FLOOR = 1e-12


def _series(rows: list[dict], method: str, value) -> tuple[list[int], list[float]]:
    chosen = sorted((row for row in rows if row["method"] == method), key=lambda row: row["depth"])
    return [row["depth"] for row in chosen], [value(row) for row in chosen]


def _figure(title: str, ylabel: str) -> tuple[Figure, object]:
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.add_subplot()
    ax.set_xscale("log")
    ax.set_xlabel("depth L")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    return fig, ax


def _memory(rows: list[dict], subtitle: str) -> Figure:
    fig, ax = _figure(f"Activation memory of one training step\n{subtitle}", "MiB (peak minus before step)")
    ax.set_yscale("log")
    for method in METHODS:
        depths, mib = _series(rows, method, lambda row: row["activation_bytes"] / MIB)
        ax.plot(depths, mib, label=method, **STYLE[method])
    depths, stack = _series(rows, "reversible", lambda row: row["stack_bytes"] / MIB)
    ax.plot(depths, stack, ls=":", label="reversible: bit stack", **STYLE["reversible"])
    depths, grads = _series(rows, "reversible", lambda row: row["parameter_bytes"] / MIB)
    ax.plot(depths, grads, ls="--", color="black", label="parameters (for scale; not included)")
    ax.legend(fontsize=8, loc="upper left")
    return fig


def _step_time(rows: list[dict], subtitle: str) -> Figure:
    fig, ax = _figure(
        f"Training step time relative to MomentumNet autograd\n{subtitle}", "time / autograd time"
    )
    for method in METHODS:
        if method != REFERENCE:
            ax.plot(
                *_series(rows, method, lambda row: row["time_ratio_autograd"]), label=method, **STYLE[method]
            )
    ax.axhline(4 / 3, color="black", ls=":", lw=1, label="4/3 (ideal, reversible)")
    ax.axhline(STEP_TIME_RATIO, color="black", ls="--", lw=1, label=f"{STEP_TIME_RATIO} (target)")
    ax.axhline(1, color="tab:blue", lw=1)
    ax.legend(fontsize=8)
    return fig


def _grad_error(rows: list[dict], subtitle: str) -> Figure:
    fig = Figure(figsize=(11, 4.6), layout="constrained")
    fig.suptitle(f"Relative gradient error (exact 0 drawn at {ERROR_FLOOR:g})\n{subtitle}", fontsize=10)
    panels = (
        ("grad_error", "against MomentumNet autograd (float32)"),
        ("grad_error_float64", "against float64"),
    )
    for index, (key, title) in enumerate(panels):
        ax = fig.add_subplot(1, 2, index + 1)
        ax.set(xscale="log", yscale="log", xlabel="depth L", title=title)
        ax.grid(True, which="both", alpha=0.3)
        for method in METHODS:
            if all(row[key] is None for row in rows if row["method"] == method):
                continue
            for part, ls in (("parameters", "-"), ("input", "--")):
                depths, error = _series(rows, method, lambda row, key=key, part=part: row[key][part])
                label = f"{method}, {part}"
                ax.plot(depths, [max(e, ERROR_FLOOR) for e in error], ls=ls, label=label, **STYLE[method])
        if key == "grad_error":
            depths, error = _series(rows, "momentumnet", lambda row: row["grad_error_own_rule"]["parameters"])
            label = "momentumnet, parameters, against its own rule"
            ax.plot(depths, error, ls=":", label=label, **STYLE["momentumnet"])
        ax.legend(fontsize=7, loc="best")
    return fig


def save_figures(results: dict, out: Path) -> list[Path]:
    """Write ``memory.png``, ``step_time.png`` and ``grad_error.png`` into ``out``; return their paths."""
    settings = results["settings"]
    subtitle = (
        f"MLP {settings['dim']}-{settings['hidden']}-{settings['dim']}, batch {settings['batch']}, "
        f"gamma {settings['gamma']}, {settings['device']}"
    )
    paths = []
    for name, draw in (("memory", _memory), ("step_time", _step_time), ("grad_error", _grad_error)):
        path = out / f"{name}.png"
        draw(results["rows"], subtitle).savefig(path, dpi=120)
        paths.append(path)
    return paths
