"""Run directories for the control panel's tests, produced by real tiny-cpu runs in the test session.

`tiny_runs` trains a real (very short) tiny-cpu run on the demo mix through
the `sparknet` CLI and makes a real failed run (a mix with a broken record).
Frozen copies of them for snapshot tests are made in frozen_runs.py.

Test modules load this file with `pytest_plugins = ["tui_fixtures"]` (one
session-wide set of runs) and also import its helpers, so pytest does not
rewrite its asserts: PYTEST_DONT_REWRITE.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from cli_helpers import DEMO_TOKENIZER, PROJECT, scaled, sparknet

from engine.runs.lock import RunLock, lock_held

# A tiny-cpu run cut to 5 steps that logs and evaluates on every step or two,
# so the panel has curves, validation points, checkpoints and an eval.json.
# The shape, batch and schedule are pinned so that later edits of the saved
# tiny-cpu profile do not change what the snapshots show.
TINY_OVERRIDES = [
    "model.n_layer=2",
    "model.n_embd=64",
    "model.n_head=4",
    "model.context=128",
    "batch.micro_batch=8",
    "batch.grad_accum=2",
    "optim.lr=3e-3",
    "optim.min_lr=3e-4",
    "schedule.warmup=0.05",
    'schedule.decay="cosine"',
    "run.tokens=10240",
    "run.log_every=1",
    "run.eval_every=2",
    "run.eval_tokens=2048",
    "run.checkpoint_every=5",
    "run.final_eval_tokens=2048",
]

TEXT_FILES = ("run.toml", "status.json", "metrics.jsonl", "system.jsonl", "events.jsonl", "train.log", "eval.json")

BROKEN_LINE_AFTER = 50_000  # records of 26 characters: past the 1 MB a pre-start check reads


def run_dir_named(logs: Path, name: str) -> Path:
    found = [p for p in logs.iterdir() if p.is_dir() and p.name.endswith(f"-{name}")]
    assert len(found) == 1, f"expected one run named {name} in {logs}, found {found}"
    return found[0]


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child is dead for our purposes
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def wait_for_state(run_dir: Path, states: tuple[str, ...], timeout: float) -> bool:
    """Wait until the run's recorded state is one of `states` and its process is gone (timeout as in scaled)."""
    end = time.monotonic() + scaled(timeout)
    while time.monotonic() < end:
        try:
            status = json.loads((run_dir / "status.json").read_text())
        except (OSError, ValueError):
            status = {}
        if status.get("state") in states and not pid_alive(status.get("pid")):
            return True
        time.sleep(0.2)
    return False


held_locks: list = []


@dataclass
class TinyRuns:
    logs: Path  # a logs/ folder holding both runs
    finished: Path
    failed: Path


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory, worker_id) -> TinyRuns:
    """The two runs, made once a session. Under xdist the session's folder above the workers' own is shared: the
    first worker to ask trains them there and the others wait for it, rather than each training its own pair. The
    tests only read them (copy_run makes a copy to change)."""
    if worker_id == "master":
        return _make_tiny_runs(tmp_path_factory.mktemp("tiny-runs"))
    folder = tmp_path_factory.getbasetemp().parent / "tiny-runs"
    folder.mkdir(exist_ok=True)
    with open(folder / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also when the maker fails
        if not (folder / "made").exists():
            _make_tiny_runs(folder)
            (folder / "made").write_text("")
    logs = folder / "logs"
    return TinyRuns(logs, run_dir_named(logs, "finished"), run_dir_named(logs, "failed"))


def _make_tiny_runs(folder: Path) -> TinyRuns:
    logs = folder / "logs"
    logs.mkdir()
    env = dict(os.environ, SPARKNET_LOGS=str(logs))
    overrides = [a for o in TINY_OVERRIDES for a in ("--set", o)]
    sparknet("train", "--profile", "tiny-cpu", "--mix", "demo", "--name", "finished", *overrides, env=env)
    finished = run_dir_named(logs, "finished")
    # beside the demo's own held-out section, both WikiText ones: the tables with GPT-2 and CodeLion rows
    for protocol in ("standard", "sparknet-2000"):
        sparknet("eval", str(finished), "--protocol", protocol, "--max-tokens", "2048", env=env)

    mix_folder = folder / "mix"
    mix_folder.mkdir()
    # the records the pre-start check reads (its first 1 MB of text) are good, so the run starts; a later one is
    # broken, so the run fails while preparing
    (mix_folder / "broken-data.jsonl").write_text('{"text": "a good record, one of many"}\n' * BROKEN_LINE_AFTER
                                                  + '{"text": "cut off\n')
    broken = mix_folder / "broken-data.toml"
    broken.write_text(f'description = "a source with a broken record"\ntokenizer = "{DEMO_TOKENIZER}"\n'
                      '[[sources]]\nname = "broken"\nweight = 1.0\npath = "broken-data.jsonl"\n')
    # detached, as the panel starts runs: its output, error included, goes to train.log
    sparknet("train", "--profile", "tiny-cpu", "--mix", str(broken), "--name", "failed", *overrides, "--detach",
             env=env)
    runs = TinyRuns(logs, run_dir_named(logs, "finished"), run_dir_named(logs, "failed"))
    assert json.loads((runs.finished / "status.json").read_text())["state"] == "finished"
    assert (runs.finished / "eval.json").exists()
    assert wait_for_state(runs.failed, ("failed",), timeout=120), (runs.failed / "train.log").read_text()[-2000:]
    return runs


def copy_run(src: Path, logs: Path, run_id: str | None = None) -> Path:
    """The run's text files (not its checkpoints or model) under logs/, optionally renamed."""
    dst = logs / (run_id or src.name)
    dst.mkdir(parents=True)
    (dst / "checkpoints").mkdir()
    for name in TEXT_FILES:
        if (src / name).exists():
            shutil.copy2(src / name, dst / name)
    if lock_held(src):  # a live run's copy is live too: this test process owns it
        held_locks.append(RunLock.acquire(dst))
    return dst


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def panel_env(monkeypatch, tiny_runs):
    """SPARKNET_LOGS at the session's real runs (read-only use)."""
    monkeypatch.setenv("SPARKNET_LOGS", str(tiny_runs.logs))
    return tiny_runs


@pytest.fixture
def private_logs(tmp_path, monkeypatch) -> Path:
    """An empty logs/ of the test's own, for tests that add, change or delete runs."""
    logs = tmp_path / "logs"
    logs.mkdir()
    monkeypatch.setenv("SPARKNET_LOGS", str(logs))
    return logs


@pytest.fixture
def private_profiles(tmp_path, monkeypatch) -> Path:
    """A copy of the project's profiles/ (with the demo mix's data) that tests may write into."""
    dst = tmp_path / "profiles"
    shutil.copytree(PROJECT / "profiles", dst)
    monkeypatch.setenv("SPARKNET_PROFILES", str(dst))
    return dst
