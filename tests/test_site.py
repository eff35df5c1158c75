"""The documentation site builds with warnings as errors and carries what a reader needs.

``docs/build.py`` stages the sources and runs Sphinx with ``-W``: a broken cross-reference, a docstring
that does not parse or a failing notebook cell fails here. The checks below read the built pages: an API
page for every public name, the theory pages with their claim tables and rendered math, the notebooks
with their figures, and the guides.
"""

import importlib.util
import re
import shutil
from pathlib import Path

import pytest

import mode

pytest.importorskip("sphinx")
pytest.importorskip("myst_nb")
pytest.importorskip("numpydoc")

ROOT = Path(__file__).resolve().parents[1]


def _build_module():
    spec = importlib.util.spec_from_file_location("docs_build", ROOT / "docs" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def site(tmp_path_factory, executed_notebooks) -> Path:
    out = tmp_path_factory.mktemp("site")
    # a stand-in for the output folder of `mode reproduce`: its report.md and a figure it links
    report = tmp_path_factory.mktemp("report")
    (report / "linear-maps").mkdir()
    figure = next((ROOT / "benchmarks" / "memory_depth").glob("*.png"))
    shutil.copy(figure, report / "linear-maps" / "fig.png")
    (report / "report.md").write_text("# Report\n\n![fig](linear-maps/fig.png)\n")
    status = _build_module().build(out, executed_notebooks, report)
    assert status == 0, "sphinx-build -W failed (see the log above)"
    return out / "html"


def test_every_public_name_has_an_api_page_with_its_docstring(site):
    for name in mode.__all__:
        page = site / "generated" / f"mode.{name}.html"
        assert page.exists(), name
        text = page.read_text()
        assert f'id="mode.{name}"' in text, name
    momentum_net = (site / "generated" / "mode.MomentumNet.html").read_text()
    assert "Parameters" in momentum_net and "backprop" in momentum_net


def test_every_module_has_a_page(site):
    modules = [p for p in (ROOT / "mode").rglob("*.py") if p.name != "__main__.py"]
    for path in modules:
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if name in ("mode", "mode.integrate"):  # the package is the API page; integrate is its function
            continue
        assert (site / "generated" / f"{name}.html").exists(), name


def test_theory_pages_render_their_claims_and_math(site):
    for source in sorted((ROOT / "theory").glob("*.md")):
        page = (site / "theory" / f"{source.stem}.html").read_text()
        claims = set(re.findall(r"\b(?:INV|FP|DISC|LM|1D|L2O)-\d+\b", source.read_text()))
        assert claims and all(claim in page for claim in claims), source.name
        assert "<table" in page or "math" in page
        # dollar math became MathJax input, not raw dollars
        assert 'class="math' in page and "mathjax" in page.lower(), source.name


def test_claims_page_lists_every_registered_claim_with_its_check(site):
    from mode.theory.registry import CLAIMS

    page = (site / "theory" / "claims.html").read_text()
    for claim in CLAIMS.values():
        assert claim.id in page and claim.check.__name__ in page, claim.id


def test_a_reproduce_report_becomes_the_results_page(site):
    page = (site / "report" / "report.html").read_text()
    assert re.search(r'<img [^>]*src="[^"]*fig\.png"', page)
    assert 'href="report/report.html"' in (site / "experiments.html").read_text()


def test_notebooks_show_their_figures_and_outputs(site):
    for source in sorted((ROOT / "notebooks").glob("*.ipynb")):
        page = (site / "notebooks" / f"{source.stem}.html").read_text()
        assert re.search(r'<img [^>]*src="[^"]+\.png"', page), f"{source.stem}: no figure"
        assert 'class="output' in page or "cell_output" in page, f"{source.stem}: no outputs"


def test_guides_and_experiments_pages(site):
    for guide in ("second_order_odes", "which_backprop", "coming_from_momentumnet"):
        assert (site / "guides" / f"{guide}.html").exists(), guide
    experiments = (site / "experiments.html").read_text()
    from mode.experiments.runner import load

    assert all(f'id="{name}"' in experiments for name in load())
