"""Reproducible result files: the environment a number was measured in, and atomic writes."""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PACKAGES = (
    "momentum-ode",
    "torch",
    "torchdiffeq",
    "numpy",
    "scipy",
    "matplotlib",
    "torchvision",
    "scikit-learn",
    "momentumnet",
)


def environment() -> dict:
    """Versions and machine facts to store next to every measured number."""
    import torch

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "versions": versions,
    }


def _replace_atomically(path: Path, write) -> Path:
    """Write through a temporary file in the same folder, then rename: readers see the old file or the
    whole new one, and a failed write leaves any previous file in place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private; give it what open() would
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path, payload) -> Path:
    """Write ``payload`` as indented JSON to ``path`` atomically (NaN and infinity are refused)."""

    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=2, allow_nan=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())

    return _replace_atomically(path, write)


def save_figure(fig, path) -> Path:
    """Save a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    try:
        return _replace_atomically(
            path, lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
        )
    finally:
        plt.close(fig)
