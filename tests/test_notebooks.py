"""The notebooks of ``notebooks/``: the six theory checks of the design and the comparison of the
second-order family, stored without outputs, that run top to bottom without error (each holds
``assert``s of the theory, so a notebook that stops agreeing with the theory fails here)."""

import re
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
EXPECTED = [
    "01_momentum_as_second_order_ode",
    "02_invertibility_and_exact_reversal",
    "03_linear_maps",
    "04_compare_discretizations",
    "05_memory_and_time",
    "06_first_vs_second_order_node",
    "07_second_order_family",
]
#: nbclient's limit for one cell, in seconds; a whole notebook runs in well under a minute on two CPU cores.
CELL_TIMEOUT = 120
#: Claim IDs of ``theory/*.md`` (INV-1, FP-4, DISC-2, LM-6, 1D-3, L2O-1, ...).
CLAIM_ID = re.compile(r"\b(?:INV|FP|DISC|LM|1D|L2O)-\d+\b")

PATHS = sorted(NOTEBOOKS.glob("*.ipynb"))


def _read(path: Path):
    return nbformat.read(path, as_version=4)


def test_the_notebooks_are_those_of_the_design():
    assert [path.stem for path in PATHS] == EXPECTED


@pytest.mark.parametrize("path", PATHS, ids=[path.stem for path in PATHS])
def test_notebook_is_stored_stripped_and_mixes_prose_equations_and_asserts(path):
    notebook = _read(path)
    nbformat.validate(notebook)
    assert notebook.metadata.kernelspec.name == "python3"
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    markdown = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "markdown")
    assert code and all(cell.outputs == [] and cell.execution_count is None for cell in code), (
        "store notebooks without outputs (clear them before committing)"
    )
    assert "$" in markdown and CLAIM_ID.search(markdown), "prose with equations, citing the claims it checks"
    assert any(re.search(r"^\s*assert ", cell.source, re.M) for cell in code)


@pytest.mark.parametrize("path", PATHS, ids=[path.stem for path in PATHS])
def test_notebook_runs_top_to_bottom(path, record_property, executed_notebooks):
    notebook = _read(path)
    resources = {"metadata": {"path": str(NOTEBOOKS)}}  # run in notebooks/, as Jupyter would
    client = NotebookClient(notebook, timeout=CELL_TIMEOUT, kernel_name="python3", resources=resources)
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error
    seconds = time.perf_counter() - start
    record_property("seconds", round(seconds, 1))
    print(f"{path.name}: {seconds:.1f} s")
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert any("image/png" in output.get("data", {}) for output in outputs), "at least one inline plot"
    executed_notebooks[path.stem] = notebook
