"""Build the documentation site: ``python docs/build.py [--out docs/_build]``.

The site gathers pages that live elsewhere in the repository, so the build stages its sources first:
``docs/`` itself, the theory pages of ``theory/`` and a table of their claims from the registry of
machine checks, the six notebooks of ``notebooks/`` executed in that folder (so that their figures and
printed checks appear), a page of the registered experiments generated from their docstrings, and the
report of a ``mode reproduce`` run (the committed ``docs/report/``, or ``--report DIR``). Sphinx then
builds HTML with warnings as errors (``-W``): a broken cross-reference, a docstring that does not parse
or a notebook cell that fails stops the build.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import textwrap
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
#: nbclient's limit for one notebook cell, in seconds.
CELL_TIMEOUT = 300


def execute_notebook(path: Path):
    """``path``'s notebook executed top to bottom in its own folder (raises on the first failing cell)."""
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    resources = {"metadata": {"path": str(path.parent)}}
    NotebookClient(notebook, timeout=CELL_TIMEOUT, kernel_name="python3", resources=resources).execute()
    return notebook


def experiments_page(with_report: bool = False) -> str:
    """A page listing every registered experiment with its docstring and how to run it, and the results
    of a ``mode reproduce`` run (``report/report.md``) when ``with_report``."""
    from mode.experiments.runner import load

    parts = [
        "# Experiments\n",
        "Each experiment trains or measures a model and judges the result by criteria that fail when the "
        "science is wrong. `mode reproduce --quick` runs them all at a reduced size (minutes on two "
        "cores) and writes `report.md`, `results.json` and the figures of each; `mode experiment NAME` "
        "runs one at full size. Every run records its seed, settings and library versions.\n",
    ]
    if with_report:
        parts.append("```{toctree}\n:maxdepth: 1\n\nreport/report\n```\n")
    for name, experiment in load().items():
        module = experiment.run.__module__
        doc = textwrap.dedent(sys.modules[module].__doc__ or "").strip()
        # the docstring's references are relative to its module, as on the module's own page
        parts.append(
            f"## {name}\n\n```{{eval-rst}}\n.. currentmodule:: {module}\n\n{doc}\n```\n\n"
            f"Run: `mode experiment {name}`; code: {{mod}}`{module}`\n"
        )
    return "\n".join(parts)


def claims_page() -> str:
    """A table of every machine-checked claim: its statement, the page that proves it and its check."""
    from mode.theory.registry import CLAIMS
    from mode.theory.runner import load_claims

    failures = load_claims()
    if failures:
        raise RuntimeError(f"theory check modules failed to import: {[f.id for f in failures]}")
    rows = [
        f"| {c.id} | {c.statement.replace('|', '/')} | [{Path(c.doc).stem}]({Path(c.doc).name}) | "
        f"{{func}}`{c.check.__module__}.{c.check.__name__}` |"
        for c in CLAIMS.values()
    ]
    return "\n".join(
        [
            "# Claims\n",
            "Every proposition of the theory pages, with the machine check that `mode check` runs for it.\n",
            "| claim | statement | proved in | check |",
            "|---|---|---|---|",
            *rows,
            "",
        ]
    )


def stage(source: Path, notebooks: dict | None = None, report: Path | None = None) -> None:
    """Copy the site's sources into ``source``: ``notebooks`` maps a notebook's stem to its executed
    notebook (those missing are executed here); ``report`` is the folder of a ``mode reproduce`` run,
    whose ``report.md`` and figures become the experiments' results page in place of the committed
    ``docs/report/``."""
    shutil.copytree(DOCS, source, ignore=shutil.ignore_patterns("_build", "build.py", "__pycache__"))
    (source / "theory").mkdir()
    for page in sorted((ROOT / "theory").glob("*.md")):
        shutil.copy(page, source / "theory" / page.name)
    (source / "theory" / "claims.md").write_text(claims_page())
    if report is not None:
        shutil.rmtree(source / "report", ignore_errors=True)
        shutil.copytree(report, source / "report", ignore=shutil.ignore_patterns("*.json"))
    (source / "notebooks").mkdir()
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        executed = (notebooks or {}).get(path.stem) or execute_notebook(path)
        nbformat.write(executed, source / "notebooks" / path.name)
    (source / "experiments.md").write_text(experiments_page((source / "report" / "report.md").exists()))


def build(out: Path, notebooks: dict | None = None, report: Path | None = None) -> int:
    """Stage the sources into ``out/src`` and build the HTML site into ``out/html``; Sphinx's exit code."""
    from sphinx.cmd.build import build_main

    source = out / "src"
    if source.exists():
        shutil.rmtree(source)
    stage(source, notebooks, report)
    return build_main(
        [
            "-W",
            "--keep-going",
            "-q",
            "-b",
            "html",
            "-d",
            str(out / "doctrees"),
            str(source),
            str(out / "html"),
        ]
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=DOCS / "_build", help="build folder (default docs/_build)"
    )
    parser.add_argument(
        "--mathjax",
        type=Path,
        help="a local MathJax 3 es5 folder (npm's mathjax package), served with the site for offline reading",
    )
    parser.add_argument(
        "--report", type=Path, help="the output folder of a `mode reproduce` run, shown as the results page"
    )
    args = parser.parse_args(argv)
    if args.report is not None and not (args.report / "report.md").is_file():
        parser.error(f"--report {args.report} holds no report.md (give the --out folder of mode reproduce)")
    if args.mathjax is not None:
        if not (args.mathjax / "tex-chtml.js").is_file():
            parser.error(f"--mathjax {args.mathjax} holds no tex-chtml.js (give MathJax 3's es5 folder)")
        os.environ["MODE_DOCS_MATHJAX"] = str(args.mathjax.resolve())
    status = build(args.out, report=args.report)
    if status == 0:
        print(f"site built: {args.out / 'html' / 'index.html'}")
    return status


if __name__ == "__main__":
    sys.exit(main())
