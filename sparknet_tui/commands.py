"""The panel's only way to act on runs: the `sparknet` CLI, run as a subprocess.

These functions block until the command returns, so screens call them from
worker threads. `sys.executable -m engine.cli` works without the console
script on PATH.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from engine.config.loading import PROJECT_ROOT

TIMEOUT_S = 120


@dataclass
class CliResult:
    ok: bool
    message: str  # one line: what happened, or the command's own error line
    stdout: str = ""
    run_id: str | None = None


def cli_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "engine.cli", *args]


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    # a source checkout that is not installed still finds `engine`
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def run_cli(*args: str, timeout: float = TIMEOUT_S) -> CliResult:
    argv = cli_argv(*args)
    shown = "sparknet " + " ".join(args)
    try:
        proc = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, env=cli_env()
        )
    except subprocess.TimeoutExpired:
        return CliResult(False, f"`{shown}` did not finish within {timeout:.0f} s")
    except OSError as e:
        return CliResult(False, f"`{shown}` could not start: {e.strerror or e}")
    if proc.returncode != 0:
        why = last_line(proc.stderr) or last_line(proc.stdout) or f"exit status {proc.returncode}"
        return CliResult(False, why, proc.stdout)
    return CliResult(True, last_line(proc.stdout) or f"`{shown}` done", proc.stdout)


def start_training(profile: str, mix: str | None, overrides: list[str], name: str | None = None) -> CliResult:
    """`sparknet train --profile P [--mix M] [--name N] [--set k=v ...] --detach`; the run id is stdout's last line."""
    args = ["train", "--profile", profile]
    if mix:
        args += ["--mix", mix]
    if name:
        args += ["--name", name]
    for override in overrides:
        args += ["--set", override]
    result = run_cli(*args, "--detach")
    if result.ok:
        result.run_id = last_line(result.stdout) or None
        if not result.run_id:
            return CliResult(False, "`sparknet train --detach` printed no run id", result.stdout)
        result.message = f"started {result.run_id}"
    return result


def check_run_inputs(profile: str, mix: str, overrides: list[str]) -> CliResult:
    """`sparknet train ... --check`: the sources, tokenizer and vocabulary, checked without starting anything."""
    args = ["train", "--profile", profile, "--mix", mix]
    for override in overrides:
        args += ["--set", override]
    return run_cli(*args, "--check")


def stop_run(run_dir: Path) -> CliResult:
    # `sparknet stop` waits for the run's checkpoint (up to its own 120 s limit)
    return run_cli("stop", str(run_dir), timeout=300)


def resume_run(run_dir: Path) -> CliResult:
    return run_cli("resume", str(run_dir), "--detach")


def stop_evaluation(run_dir: Path) -> CliResult:
    """SIGTERM to the process evaluating the run: `sparknet eval` stops at once and leaves eval.json as it was."""
    import signal

    from engine.runs.eval_progress import read_progress

    state = read_progress(run_dir)
    if state is None:
        return CliResult(False, f"no evaluation of {run_dir.name} is running")
    try:
        os.kill(int(state["pid"]), signal.SIGTERM)
    except OSError as e:
        return CliResult(False, f"could not stop the evaluation of {run_dir.name}: {e.strerror}")
    return CliResult(True, f"stopping the evaluation of {run_dir.name}; eval.json stays as it was")


def evaluate_run(run_dir: Path) -> CliResult:
    # a full evaluation scores WikiText-2 and can take minutes on a CPU
    return run_cli("eval", str(run_dir), timeout=3600)
