"""The suite runs the exact kernels eagerly (compiling each new shape and gamma would dominate its time),
in this process and in the processes it starts (the benchmark's); ``tests/exact/test_fusion.py`` checks
that the compiled kernels agree with the eager ones bit for bit. ``MODE_COMPILE=1`` in the environment
runs everything compiled."""

import os

import pytest
import torch

import mode.exact

os.environ.setdefault("MODE_COMPILE", "0")
mode.exact.set_compile(os.environ["MODE_COMPILE"] not in ("0", "false", "False", "no"))

if "PYTEST_XDIST_WORKER" in os.environ:
    # One thread per pytest-xdist worker, in its own process and those it starts: the workers already use
    # every core, and torch's own thread pools on top of them would oversubscribe it.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def executed_notebooks() -> dict:
    """The notebooks executed so far in this process, by stem: ``tests/test_notebooks.py`` runs each one
    and the documentation build (``tests/test_site.py``) shows their outputs without running them again
    (a pytest-xdist worker that did not run them runs them for the site)."""
    return {}
