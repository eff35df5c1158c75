"""The experiment registry and the context an experiment runs in."""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from tqdm.auto import tqdm  # noqa: E402

from mode.records import save_figure  # noqa: E402

_OPERATORS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


def criterion(value: float, op: str, bound: float) -> dict:
    """A pass criterion ``value op bound`` as stored in ``results.json``."""
    return {
        "value": float(value),
        "op": op,
        "bound": float(bound),
        "passed": bool(_OPERATORS[op](value, bound)),
    }


@dataclass
class Context:
    """What an experiment receives: its size, seed, output folder, an optional local data set
    (experiments never download), and where its figures go.

    ``out`` is the run's own temporary folder, moved into place as ``OUT/NAME`` once the run has
    written ``results.json``: write every file of the run there, and record paths relative to it."""

    quick: bool
    seed: int
    out: Path
    data: Path | None = None
    figures: list[str] = field(default_factory=list)

    def save(self, fig, name: str) -> Path:
        """Save ``fig`` as ``name``.png in the output folder and list it in the results."""
        path = save_figure(fig, self.out / f"{name}.png")
        self.figures.append(path.name)
        return path

    def progress(self, iterable, **kwargs):
        """``tqdm`` over ``iterable``: long loops show progress on a terminal (``disable=None``: quiet when
        the output is a file or a pipe, as in a log)."""
        return tqdm(iterable, leave=False, disable=None, **kwargs)


@dataclass(frozen=True)
class Experiment:
    """A registered experiment: ``run(context)`` returns ``{"settings", "metrics", "criteria"}``."""

    name: str
    title: str
    run: Callable[[Context], dict]


EXPERIMENTS: dict[str, Experiment] = {}


def experiment(name: str, title: str):
    """Register ``run(context) -> dict`` as experiment ``name``."""

    def register(run):
        if name in EXPERIMENTS:
            raise ValueError(f"experiment {name!r} is registered twice")
        EXPERIMENTS[name] = Experiment(name, title, run)
        return run

    return register
