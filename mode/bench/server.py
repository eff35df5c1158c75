"""A server process that imports a benchmark module once and answers each request in a fresh child."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import IO, cast


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
        # Opened with stdin=PIPE, so never None.
        cast(IO[str], self._process.stdin).close()
        self._process.wait()


def serve_forked(answer: Callable[[dict], dict]) -> None:
    """Answer one JSON request per line of stdin with one JSON line on stdout, ``answer(request)``
    computed in a child forked for it alone (an ``{"error": ...}`` line if it raised or died)."""
    # torch.utils.checkpoint and autograd.grad import torch._dynamo on first use, seconds of work that
    # every child would repeat.
    importlib.import_module("torch._dynamo")
    for line in sys.stdin:
        pid = os.fork()
        if pid == 0:
            try:
                result = answer(json.loads(line))
            except BaseException:
                result = {"error": traceback.format_exc()}
            sys.stdout.write(json.dumps(result) + "\n")
            sys.stdout.flush()
            os._exit(0)  # not the server's cleanup: the child shares its stdin
        status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        if status != 0:  # killed before it could answer, e.g. out of memory
            sys.stdout.write(
                json.dumps({"error": f"the measuring process ended with status {status}"}) + "\n"
            )
            sys.stdout.flush()
