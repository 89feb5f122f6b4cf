"""Running the real `sparknet` command in tests, and reading what a run wrote."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from engine.rundir import read_jsonl

PROJECT = Path(__file__).resolve().parents[1]

# a small, fast variant of tiny-cpu: 16 micro-batches of 8 x 128 tokens per step
FAST = ["--set", "batch.grad_accum=1", "--set", "run.log_every=1", "--set", "run.eval_every=10",
        "--set", "run.eval_tokens=8192", "--set", "run.final_eval=false"]


def sparknet(*args, check=True, timeout=600, env=None) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=PROJECT, capture_output=True, text=True,
                          timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"sparknet {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def only_run(logs: Path) -> Path:
    runs = [d for d in logs.iterdir() if d.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def losses(run_dir: Path) -> dict[int, float]:
    return {row["step"]: row["loss"] for row in read_jsonl(run_dir / "metrics.jsonl")}


def events(run_dir: Path) -> list[dict]:
    return read_jsonl(run_dir / "events.jsonl")
