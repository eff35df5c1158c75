"""Reproducible result files: the environment a number was measured in, atomic writes, and the checks
that an output location can be written before any work is done."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
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


def _grant_default_mode(path, mode: int) -> None:
    """Give ``path`` the permissions ``open()`` / ``mkdir()`` would have: ``mode`` less the umask
    (``mkstemp`` and ``mkdtemp`` make their results private to the owner)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, mode & ~umask)


def _check_can_create_in(folder: Path, option: str, path: Path) -> None:
    # Creating a file is the only test that sees read-only mounts, ACLs and root alike.
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise ValueError(
            f"{option} {path}: cannot write in {folder} ({error.strerror}); choose a writable location"
        ) from None


def check_output_file(path, option: str, example: str = "results.json") -> Path:
    """Check, before any work, that the file ``path`` can be written (atomically, as :func:`write_json`
    does: its directory must exist and take new files).

    Parameters
    ----------
    path : str or Path
        The file to be written.
    option : str
        What the caller calls ``path`` (``"--json"``), for the message.
    example : str
        A file name suggested when ``path`` is a directory.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        ``path`` is a directory, its directory does not exist (or is a file), or cannot be written in; the
        message names ``option`` and the remedy.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{option} {path} is a directory; name a file, e.g. {option} {path / example}")
    folder = path.absolute().parent
    if not folder.is_dir():
        raise ValueError(
            f"the directory of {option} {path} does not exist (or is a file); create it or choose another"
        )
    _check_can_create_in(folder, option, path)
    return path


def check_output_dir(path, option: str) -> Path:
    """Check, before any work, that the directory ``path`` can be created (with its missing parents) or,
    if it exists, written in.

    Parameters
    ----------
    path : str or Path
        The output directory.
    option : str
        What the caller calls ``path`` (``"--out"``), for the message.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        ``path`` or one of its parents is a file, or the nearest existing one cannot be written in; the
        message names ``option`` and the remedy.
    """
    path = Path(path)
    existing = path.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{option} {path}: {existing} is a file, not a directory; choose a directory")
    _check_can_create_in(existing, option, path)
    return path


def _replace_atomically(path: Path, write) -> Path:
    """Write through a temporary file in the same folder, then rename: readers see the old file or the
    whole new one, and a failed write leaves any previous file in place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        _grant_default_mode(tmp, 0o666)
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@contextlib.contextmanager
def staged_folder(path):
    """Fill a temporary folder beside ``path``, then move it into place as ``path``: readers see the
    previous folder or the whole new one, never files of two runs; an exception or an interrupt in the
    ``with`` body leaves the previous folder as it was.

    The swap is two renames (the previous folder aside, then the new one in), each atomic; only between
    them is ``path`` missing. A process killed outright (SIGKILL) may leave a hidden ``.NAME.*.tmp``
    folder beside ``path``.

    Yields
    ------
    Path
        The temporary folder to write into.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    aside = tmp.with_suffix(".old")
    try:
        _grant_default_mode(tmp, 0o777)
        yield tmp
        moved = False
        if path.exists() or path.is_symlink():
            os.rename(path, aside)
            moved = True
        try:
            os.rename(tmp, path)
        except BaseException:
            if moved:
                os.rename(aside, path)
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if moved:
        if aside.is_dir() and not aside.is_symlink():
            shutil.rmtree(aside, ignore_errors=True)
        else:
            aside.unlink(missing_ok=True)


def _write_file(path, fill) -> Path:
    """Write a UTF-8 text file atomically through ``fill(handle)``, flushed to disk before the rename."""

    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as fh:
            fill(fh)
            fh.flush()
            os.fsync(fh.fileno())

    return _replace_atomically(path, write)


def write_text(path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return _write_file(path, lambda fh: fh.write(text))


def write_json(path, payload) -> Path:
    """Write ``payload`` as indented JSON to ``path`` atomically (NaN and infinity are refused)."""

    def fill(fh):
        json.dump(payload, fh, indent=2, allow_nan=False)
        fh.write("\n")

    return _write_file(path, fill)


def save_figure(fig, path) -> Path:
    """Save a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    try:
        return _replace_atomically(
            path, lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
        )
    finally:
        plt.close(fig)
