"""A server process that imports a benchmark module once and answers each request in a fresh child."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


class ModuleServer:
    """A ``python -m MODULE`` process (``module``, set by subclasses) that answers requests in fresh
    children; a context manager. It imports this source tree, whether or not it is the installed one, and
    runs with ``env`` added to the environment."""

    module: str

    def __init__(self, env: dict[str, str]):
        self._env = env

    def __enter__(self):
        env = dict(os.environ, **self._env)
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (root, env.get("PYTHONPATH"))))
        self._process = subprocess.Popen(
            [sys.executable, "-m", self.module],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        return self

    def __exit__(self, *exc) -> None:
        self._process.stdin.close()
        self._process.wait()
