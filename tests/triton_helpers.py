"""Checking the engine's Triton kernels on the CPU: a script run in a fresh process under Triton's interpreter."""

from __future__ import annotations

import os
import subprocess
import sys

from cli_helpers import PROJECT, scaled


def run_under_the_interpreter(script: str, *args: str, says: str) -> None:
    """Runs `script` with TRITON_INTERPRET=1 (set before Triton is imported, hence the fresh process) and checks
    that it finished and printed `says`."""
    # the scripts import test modules, which import their helpers as the tests do
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=os.pathsep.join([str(PROJECT), str(PROJECT / "tests")]))
    done = subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True, text=True,
                          timeout=scaled(300), cwd=PROJECT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert says in done.stdout
