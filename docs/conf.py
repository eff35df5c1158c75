"""Sphinx configuration of the momentum-ode documentation; build it with ``python docs/build.py``."""

import importlib
import os
import pkgutil

import mode

project = "momentum-ode"
author = "momentum-ode developers"
copyright = "2026, momentum-ode developers"
release = mode.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "myst_nb",
]

# The notebooks arrive executed (docs/build.py runs them in notebooks/, where they read their data);
# a build never runs them a second time.
nb_execution_mode = "off"
myst_enable_extensions = ["dollarmath", "amsmath"]
# the theory pages put $$ display equations inside paragraphs
myst_dmath_double_inline = True
myst_heading_anchors = 3

autosummary_generate = True
autosummary_imported_members = False
# Each object is documented in the module that defines it and, under its public name, on the API page
# (``mode.<name>``) or its package's page (``mode.exact.BitStack``). A name that both ``mode`` and a
# subpackage export is left to the API page: two public names for one class would be two descriptions.
autosummary_ignore_module_all = True


def _exported_by_mode() -> dict[str, str]:
    """For each subpackage, the names of its ``__all__`` that ``mode`` exports too (``exclude-members``)."""
    top = {id(getattr(mode, name)) for name in mode.__all__}
    excluded = {}
    for info in pkgutil.walk_packages(mode.__path__, "mode."):
        if info.ispkg:
            package = importlib.import_module(info.name)
            names = [n for n in getattr(package, "__all__", ()) if id(getattr(package, n)) in top]
            if names:
                excluded[info.name] = ", ".join(names)
    return excluded


autosummary_context = {"exclude": _exported_by_mode()}
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
# torch's docstrings (nn.Module.forward and the like) are torch's to render, not this site's.
autodoc_inherit_docstrings = False
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False

# Every cross-reference must resolve; names of the libraries this one builds on are not documented here.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(torch|numpy|np|scipy|torchdiffeq|matplotlib|tqdm)(\..*)?"),
    (r"py:.*", r"(pathlib|argparse|time|collections|typing|contextlib|os)(\..*)?"),
    (r"py:.*", r"(nn|Tensor|optional|callable|array_like|path-like|mapping|sequence|iterable)(\..*)?"),
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "build.py", "jupyter_execute", "**.ipynb_checkpoints"]
html_theme = "furo"
html_title = "momentum-ode"
# MathJax comes from its CDN unless MODE_DOCS_MATHJAX names a local copy of its es5 folder
# (``docs/build.py --mathjax DIR``), which is then served with the site for reading it offline.
if os.environ.get("MODE_DOCS_MATHJAX"):
    html_static_path = [os.environ["MODE_DOCS_MATHJAX"]]
    mathjax_path = "tex-chtml.js"
