"""Run experiments and write ``results.json`` and ``report.md``."""

from __future__ import annotations

import importlib
import time
from pathlib import Path

import torch

from mode.experiments.registry import EXPERIMENTS, Context, Experiment
from mode.records import check_output_dir, environment, staged_folder, write_json, write_text
from mode.runtime import torch_threads

#: Experiment modules, in report order; each registers itself on import.
MODULES = (
    "linear_maps",
    "crossing_1d",
    "parity",
    "nested_rings",
    "spheres",
    "learning_to_optimize",
    "discretizations",
    "depth_limit",
    "depth_sweep",
    "memory_depth",
    "transformer_depth",
    "convert_finetune",
    "second_order_family",
)


def load() -> dict:
    """Import every experiment module and return the registry in report order (that of ``MODULES``;
    experiments registered elsewhere follow)."""
    for name in MODULES:
        importlib.import_module(f"mode.experiments.{name}")
    # registration order is import order, which whoever imported a module first decided
    rank = {f"mode.experiments.{name}": i for i, name in enumerate(MODULES)}
    return dict(sorted(EXPERIMENTS.items(), key=lambda item: rank.get(item[1].run.__module__, len(rank))))


def resolve(name: str, out="runs", option: str = "out") -> tuple[Experiment, Path]:
    """The experiment registered as ``name`` and its output folder ``out/name``, checked before anything
    runs.

    Parameters
    ----------
    name : str
        A registered experiment.
    out : str or Path
        The folder that holds the experiments' folders.
    option : str
        What the caller calls ``out`` (``"--out"`` on the command line), for the message.

    Raises
    ------
    ValueError
        ``name`` is not registered (the message lists those that are), or ``out/name`` cannot be created
        or written in (:func:`~mode.records.check_output_dir`).
    """
    registry = load()
    if name not in registry:
        raise ValueError(
            f"unknown experiment {name!r}; choose one of: {', '.join(registry)} (mode experiment --list)"
        )
    return registry[name], check_output_dir(Path(out) / name, option)


def resolve_all(out="runs", option: str = "out") -> list[str]:
    """The registered experiments' names, in report order, once every one's output folder ``out/name`` is
    checked (:func:`resolve`); raises its ``ValueError`` before anything runs."""
    names = list(load())
    for name in names:
        resolve(name, out, option)
    return names


def run_experiment(name: str, *, quick: bool = False, seed: int = 0, out="runs", data=None) -> dict:
    """Run experiment ``name`` into ``out/name/`` and return what ``results.json`` holds.

    The run writes into a temporary folder beside ``out/name/``, which replaces the previous folder only
    once ``results.json`` is written (:func:`~mode.records.staged_folder`): an interrupted or failed run
    leaves the previous run's files as they were, and never a mix of two runs.
    """
    exp, folder = resolve(name, out)
    with staged_folder(folder) as staging:
        context = Context(quick=quick, seed=seed, out=staging, data=None if data is None else Path(data))
        torch.manual_seed(seed)
        start = time.perf_counter()
        with torch_threads(1):
            result = exp.run(context)
            env = environment()
        payload = {
            "experiment": name,
            "title": exp.title,
            "quick": quick,
            "seed": seed,
            "settings": result.get("settings", {}),
            "metrics": result.get("metrics", {}),
            "criteria": result.get("criteria", {}),
            "figures": context.figures,
            "wall_time_s": time.perf_counter() - start,
            "environment": env,
        }
        payload["passed"] = all(c["passed"] for c in payload["criteria"].values())
        write_json(staging / "results.json", payload)
    return payload


def _format(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_report(results: list[dict], out: Path) -> Path:
    """``report.md``: a results table, then every experiment's criteria, metrics and figures."""
    lines = ["# momentum-ode: experiment report", ""]
    lines += ["| experiment | quick | wall time (s) | criteria |", "| --- | --- | --- | --- |"]
    for r in results:
        verdict = "pass" if r["passed"] else "**FAIL**"
        lines.append(
            f"| [{r['experiment']}](#{r['experiment']}) | {r['quick']} | {r['wall_time_s']:.1f} | {verdict} |"
        )
    for r in results:
        lines += ["", f"## {r['experiment']}", "", r["title"], ""]
        if r["criteria"]:
            lines += ["| criterion | value | bound | passed |", "| --- | --- | --- | --- |"]
            for key, c in r["criteria"].items():
                lines.append(
                    f"| {key} | {_format(c['value'])} | {c['op']} {_format(c['bound'])} | {c['passed']} |"
                )
            lines.append("")
        for key, value in r["metrics"].items():
            if isinstance(value, (int, float, str, bool)):
                lines.append(f"- {key}: {_format(value)}")
        lines += [f"\n![{fig}]({r['experiment']}/{fig})" for fig in r["figures"]]
    env = results[0]["environment"] if results else environment()
    lines += ["", "## Environment", "", "```", *[f"{k}: {v}" for k, v in env.items()], "```", ""]
    return write_text(Path(out) / "report.md", "\n".join(lines))


def reproduce(*, quick: bool = False, seed: int = 0, out="runs", data=None) -> tuple[list[dict], Path]:
    """Run every experiment and write ``out/report.md``; every output folder is checked
    (:func:`.resolve_all`) before the first experiment runs."""
    results = [run_experiment(name, quick=quick, seed=seed, out=out, data=data) for name in resolve_all(out)]
    return results, write_report(results, Path(out))
