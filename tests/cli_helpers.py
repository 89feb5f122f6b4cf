"""Running the real `sparknet` command in tests, and reading what a run wrote."""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from engine.files import read_json, read_jsonl, wait_for
from engine.runs.rundir import effective_status

PROJECT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT.parent / "shared" / "data"
DEMO_TOKENIZER = PROJECT / "profiles" / "mixes" / "demo" / "tokenizer"  # the demo mix's own 1,024-token BPE

# a small, fast variant of tiny-cpu: 16 micro-batches of 8 x 128 tokens per step
FAST = ["--set", "batch.grad_accum=1", "--set", "run.log_every=1", "--set", "run.eval_every=10",
        "--set", "run.eval_tokens=8192", "--set", "run.final_eval=false"]


# What starting Python and importing torch takes on a quiet 2-core machine; the tests' patience is in
# seconds of such a machine and grows with how much slower this one is when the session starts.
QUIET_TORCH_START_S = 1.5


@functools.cache
def slowness() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch; torch.ones(256, 256) @ torch.ones(256, 256)"], check=True)
    return max(1.0, (time.perf_counter() - start) / QUIET_TORCH_START_S)


def scaled(seconds: float) -> float:
    """A wait of `seconds` on a quiet machine, stretched to this machine's measured speed."""
    return seconds * slowness()


def sparknet(*args, check=True, timeout=120, env=None, process=None) -> subprocess.CompletedProcess:
    """`sparknet ARGS`, with its exit code and what it printed. In this process (the command's own `main`, with its
    environment, working folder, signal handlers and logging put back afterwards) unless `process` asks for a
    process of its own: a detached run, a call from another thread, or a test of the process itself. Starting
    Python and torch again takes seconds, and the suite calls the command a few hundred times. `timeout` is in
    seconds of a quiet machine and bounds a process of its own."""
    if process is None:
        process = "--detach" in args or threading.current_thread() is not threading.main_thread()
    if process:
        proc = subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=PROJECT, capture_output=True,
                              text=True, timeout=scaled(timeout), env=env, stdin=subprocess.DEVNULL)
    else:
        proc = _in_process([str(a) for a in args], env)
    if check and proc.returncode != 0:
        raise AssertionError(f"sparknet {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-3000:]}")
    return proc


def _in_process(args: list[str], env: dict | None) -> subprocess.CompletedProcess:
    from engine.cli.main import main

    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    out, err = io.StringIO(), io.StringIO()
    if env is not None:
        os.environ.clear()
        os.environ.update(env)
    os.chdir(PROJECT)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(args)
            except SystemExit as e:  # argparse's usage errors
                code = e.code if isinstance(e.code, int) else 2
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        os.chdir(saved_cwd)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        root = logging.getLogger()
        for handler in list(root.handlers):  # the run's console and train.log handlers
            root.removeHandler(handler)
            handler.close()
    return subprocess.CompletedProcess(["sparknet", *args], code, out.getvalue(), err.getvalue())


def only_run(logs: Path) -> Path:
    runs = [d for d in logs.iterdir() if d.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def losses(run_dir: Path) -> dict[int, float]:
    return {row["step"]: row["loss"] for row in read_jsonl(run_dir / "metrics.jsonl")}


def events(run_dir: Path) -> list[dict]:
    return read_jsonl(run_dir / "events.jsonl")


def reaches(run_dir: Path, predicate, timeout: float = 60, interval: float = 0.05) -> bool:
    """Wait until predicate(status) holds; give up at once when the run has ended without it."""
    def check() -> bool:
        status = read_json(run_dir / "status.json") or {}
        if predicate(status):
            return True
        if status.get("state") in ("failed", "finished", "stopped") and effective_status(run_dir)["state"] == \
                status["state"]:
            raise AssertionError(f"run {run_dir.name} ended {status['state']} first: {status.get('error', '')}")
        return False

    return wait_for(check, scaled(timeout), interval)


def reaches_step(run_dir: Path, step: int, timeout: float = 60) -> bool:
    return reaches(run_dir, lambda s: s.get("step", 0) >= step, timeout)
