"""Run directories for the control panel's tests, produced by real tiny-cpu runs in the test session.

`tiny_runs` trains a real (very short) tiny-cpu run on the demo mix through
the `sparknet` CLI and makes a real failed run (a mix with a broken record).
`frozen_runs` copies them for snapshot tests and freezes what differs from
one machine or moment to the next (times, speeds, losses, sampled text, the
run id's timestamp); the files, keys, steps, tokens and events stay the real
run's. GPU telemetry cannot exist on a CPU machine, so frozen system rows
carry one stand-in GPU: that is the only invented part.

Test modules load this file with `pytest_plugins = ["tui_fixtures"]` (one
session-wide set of runs) and also import its helpers, so pytest does not
rewrite its asserts: PYTEST_DONT_REWRITE.
"""

from __future__ import annotations

import fcntl
import json
import math
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

# The fixed moment snapshot tests render relative times against.
FROZEN_NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
FROZEN_START = FROZEN_NOW - 3600
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


_held_locks: list = []


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
        _held_locks.append(RunLock.acquire(dst))
    return dst


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def iso(t: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def frozen_loss(step: float) -> float:
    return round(3.2 + 7.6 * math.exp(-step / 2.5) + 0.08 * math.sin(step * 1.7), 4)


def stand_in_gpu(i: int, hot: bool) -> dict:
    """What NVML reports on a DGX Spark (GB10): no memory total, unified memory; a stand-in since no GPU is here."""
    return {"index": 0, "name": "NVIDIA GB10", "temp_c": (80 + i) if hot else 62 + (i % 5),
            "power_w": 38.0 + 4 * (i % 4), "util_pct": 90 + (i % 3) * 4, "sm_clock_mhz": 2405,
            "mem_used_b": 9_663_676_416 + i * 1_048_576, "mem_total_b": None, "unified_memory": True,
            "throttle": ["thermal"] if hot and i >= 8 else []}


def freeze_run(src: Path, logs: Path, run_id: str, *, state: str | None = None, pid: int | None = None,
               gpu: bool = False, hot: bool = False) -> Path:
    """A copy of a real run whose machine- and moment-dependent values are fixed (see the module docstring)."""
    dst = copy_run(src, logs, run_id)
    old_id = src.name

    def t_at(seconds: float) -> str:
        return iso(FROZEN_START + seconds)

    run_toml = (dst / "run.toml").read_text().replace(old_id, run_id)
    lines = [f'created_at = "{t_at(0)}"' if line.startswith("created_at = ") else line
             for line in run_toml.splitlines()]
    (dst / "run.toml").write_text("\n".join(lines) + "\n")

    metrics = read_jsonl(dst / "metrics.jsonl")
    if state == "running":
        metrics = metrics[:max(1, len(metrics) - 2)]  # caught mid-run
    for row in metrics:
        step = row["step"]
        row["loss"] = frozen_loss(step)
        row["grad_norm"] = 0.85
        row["tokens_per_s"] = 2000.0 + 25 * (step % 4)
        row["elapsed_s"] = round(step * 4.0, 2)
        if "val_loss" in row:
            row["val_loss"] = round(frozen_loss(step) + 0.15, 4)
        if row.get("wikitext_ppl") is not None:
            row["wikitext_ppl"] = round(math.exp(frozen_loss(step) + 0.9), 3)
    write_jsonl(dst / "metrics.jsonl", metrics)

    status = json.loads((dst / "status.json").read_text())
    last = metrics[-1] if metrics else {}
    status.update(run_id=run_id, started_at=t_at(0), updated_at=t_at(last.get("elapsed_s", 5.0)),
                  tokens_per_s=last.get("tokens_per_s"), loss=last.get("loss"))
    if "val_loss" in status or any("val_loss" in r for r in metrics):
        status["val_loss"] = next((r["val_loss"] for r in reversed(metrics) if "val_loss" in r), None)
    if "finished_at" in status:
        status["finished_at"] = t_at(last.get("elapsed_s", 5.0) + 30)
    if isinstance(status.get("error"), str):
        status["error"] = _freeze_text(status["error"], old_id, run_id)
    if state is not None:
        status["state"] = state
    if pid is not None:
        status["pid"] = pid
    if state in ("running", "preparing"):
        # frozen in time, so it must not read as stalled: its status says it updates once in decades
        status.update(phase="training", eta_s=95.0, step=last.get("step", 0), tokens=last.get("tokens", 0),
                      update_every_s=1e9)
        status.pop("finished_at", None)
    elif "eta_s" in status:
        status["eta_s"] = 0 if status.get("state") == "finished" else None
    if "mfu" in status:
        status["mfu"] = None
    (dst / "status.json").write_text(json.dumps(status, indent=1))

    events = read_jsonl(dst / "events.jsonl")
    if state == "running":  # what a run caught mid-way has not written yet
        events = [e for e in events if e.get("event") not in ("finished", "eval") and "final" not in
                  str(e.get("message"))]
    for i, ev in enumerate(events):
        ev["t"] = t_at(i * 2)
        ev["message"] = _freeze_text(str(ev.get("message", "")), old_id, run_id)
    if hot:
        events.append({"t": t_at(len(events) * 2), "event": "warning",
                       "message": "GPU0 at 88°C, above the 85°C warning threshold"})
    write_jsonl(dst / "events.jsonl", events)

    samples = 16
    rows = []
    for i in range(samples):
        rows.append({"t": FROZEN_START + 5 * i, "time": t_at(5 * i), "cpu_pct": 150.0 + 10 * (i % 4),
                     "ram_used_b": 2_000_000_000 + i * 20_000_000, "ram_total_b": 25_276_502_016,
                     "ram_available_b": 23_276_502_016 - i * 20_000_000, "run_rss_b": 900_000_000 + i * 1_000_000,
                     "gpus": [stand_in_gpu(i, hot)] if gpu else []})
    write_jsonl(dst / "system.jsonl", rows)

    total = status.get("steps") or 1
    log = [f"{t_at(0)[11:19]} started: training {total} steps on cpu"]
    for row in metrics:
        log.append(f"{t_at(row['elapsed_s'])[11:19]} step {row['step']}/{total} loss {row['loss']:.4f} "
                   f"lr {row['lr']:.2e} gnorm 0.850 {row['tokens_per_s']:.0f} tok/s"
                   + (f" val {row['val_loss']:.4f}" if "val_loss" in row else ""))
    if status.get("state") == "failed":
        log.append(f"error: {status.get('error')}")
    (dst / "train.log").write_text("\n".join(log) + "\n")

    eval_path = dst / "eval.json"
    if eval_path.exists():
        doc = json.loads(eval_path.read_text())
        doc["created_at"] = t_at(200)
        doc["target"] = f"logs/{run_id}"
        for section in doc.get("evaluations", []):
            _freeze_section(section, run_id)
        for s in doc.get("samples", []):
            s["continuation"] = " of the valley, the old mill stood by the river and the town grew around it."
        settings = doc.get("settings")
        if isinstance(settings, dict):
            settings["wikitext"] = "wikitext-2-raw"
        eval_path.write_text(json.dumps(doc, indent=1))
    return dst


def _freeze_section(section: dict, run_id: str) -> None:
    """One protocol's measured figures pinned, so snapshots do not move with the machine's arithmetic.

    The held-out figure is above ln(1,024), as a demo model's is after a few steps."""
    loss = 7.0123 if section.get("protocol", {}).get("name") == "held-out" else 6.8123
    for r in section.get("results", []):
        if r.get("source") == "measured":
            r.update(loss=loss, perplexity=round(math.exp(loss), 2), bits_per_byte=2.4571,
                     path=f"logs/{run_id}")
    for d in section.get("deltas", []):
        for key, value in (("loss_delta", 3.1), ("perplexity_ratio", 30.5), ("bits_per_byte_delta", 1.2)):
            if d.get(key) is not None:
                d[key] = value


def _freeze_text(text: str, old_id: str, run_id: str) -> str:
    """Messages without this session's temporary paths, run id or measured loss."""
    import re

    text = text.replace(old_id, run_id)
    text = re.sub(r"/[^\s`'\"]+/([^/\s`'\"]+)", r"\1", text)  # a path -> its last part
    return re.sub(r"final loss [0-9.]+", "final loss 3.2000", text)


@dataclass
class FrozenRuns:
    logs: Path
    running: Path
    finished: Path
    failed: Path
    profiles: Path  # a profiles folder with fixed contents for the New run snapshot


# A benchmark table as `sparknet eval --tasks card` writes one (the real harness is driven in test_benchmarks.py;
# the card's own tasks need their data from the hub): figures near chance, as a 70M model's are.
FROZEN_BENCHMARKS = {
    "harness": "lm-eval 0.4.13", "limit": None,
    "tasks": [{"task": task, "metric": metric, "value": value, "stderr": stderr, "examples": n, "num_fewshot": shots,
               "chance": chance, "harness_version": "0.4.13"}
              for task, metric, value, stderr, n, shots, chance in (
                  ("mmlu", "acc", 23.9, 0.36, 14042, 5, 25.0), ("hellaswag", "acc_norm", 26.8, 0.44, 10042, 0, 25.0),
                  ("arc_challenge", "acc_norm", 22.1, 1.21, 1172, 0, 25.0),
                  ("piqa", "acc_norm", 58.3, 1.15, 1838, 0, 50.0), ("winogrande", "acc", 50.9, 1.4, 1267, 0, 50.0),
                  ("truthfulqa_mc2", "acc", 46.2, 1.6, 817, 0, None))],
    "published": [{"task": task, "CodeLion GPT-2 70M": codelion, "GPT-2 (124M)": gpt2,
                   "source": "codelion/gpt-2-70m model card"}
                  for task, codelion, gpt2 in (("mmlu", 24.11, 26.0), ("hellaswag", 27.03, 30.0),
                                               ("arc_challenge", 21.67, 24.0), ("piqa", 57.29, 63.0),
                                               ("winogrande", 51.46, 51.0), ("truthfulqa_mc2", 47.31, 40.0))],
}

FROZEN_PROFILE = """\
description = "A tiny GPT-2 for CPU smoke runs"
mix = "demo"

[model]
arch = "gpt2"
n_layer = 2
n_embd = 64
n_head = 4
context = 128
vocab_size = 1024

[optim]
lr = 3e-3
min_lr = 3e-4

[schedule]
warmup = 0.05
decay = "cosine"

[batch]
micro_batch = 8
grad_accum = 2

[run]
tokens = 300_000
precision = "fp32"
compile = false
device = "cpu"
"""

FROZEN_MIX = """\
description = "A made-up valley told as stories, town guides and worksheets"
tokenizer = "demo/tokenizer"
validation_share = 0.1

[[sources]]
name = "stories"
weight = 0.7
path = "demo/stories.jsonl"

[[sources]]
name = "towns"
weight = 0.1
path = "demo/towns"

[[sources]]
name = "worksheets"
weight = 0.2
path = "demo/worksheets"
"""


@pytest.fixture(scope="session")
def frozen_runs(tiny_runs, tmp_path_factory) -> FrozenRuns:
    root = tmp_path_factory.mktemp("tui-frozen")
    logs = root / "logs"
    logs.mkdir()
    finished = freeze_run(tiny_runs.finished, logs, "20251231-220000-tiny-cpu")
    doc = json.loads((finished / "eval.json").read_text())
    doc["benchmarks"] = FROZEN_BENCHMARKS
    (finished / "eval.json").write_text(json.dumps(doc, indent=1))
    failed = freeze_run(tiny_runs.failed, logs, "20251231-221500-failed")
    # still running: its pid is this test process, alive for the whole session
    running = freeze_run(tiny_runs.finished, logs, "20251231-223000-tiny-cpu", state="running", pid=os.getpid(),
                         gpu=True, hot=True)
    _held_locks.append(RunLock.acquire(running))  # a live run owns its lock; held for the whole session
    (running / "eval.json").unlink(missing_ok=True)
    profiles = root / "profiles"
    (profiles / "mixes").mkdir(parents=True)
    (profiles / "tiny-cpu.toml").write_text(FROZEN_PROFILE)
    (profiles / "mixes" / "demo.toml").write_text(FROZEN_MIX)
    shutil.copytree(PROJECT / "profiles" / "mixes" / "demo", profiles / "mixes" / "demo")  # the mix's own data
    return FrozenRuns(logs, running, finished, failed, profiles)


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


FROZEN_SWEEP = "demo-lr"


@pytest.fixture(scope="session")
def frozen_sweep(tiny_runs, tmp_path_factory) -> Path:
    """A logs/ folder holding one finished sweep of two variants: frozen copies of the session's real tiny run, the
    second learning a little slower, and the sweep.json `sparknet sweep` would write for them."""
    from engine.runs.sweep import Entry, SweepState, summarize_run

    logs = tmp_path_factory.mktemp("tui-sweep") / "logs"
    folder = logs / "sweeps" / FROZEN_SWEEP
    folder.mkdir(parents=True)
    entries = []
    for i, (variant, lr) in enumerate((("lr=0.01", "0.01"), ("lr=0.003", "0.003"))):
        run = freeze_run(tiny_runs.finished, folder, f"2025123{i}-220000-{FROZEN_SWEEP}-lr-{lr}-s1")
        rows = read_jsonl(run / "metrics.jsonl")
        for row in rows:  # the slower variant: its losses 3% higher
            for key in ("loss", "val_loss"):
                if isinstance(row.get(key), float) and i:
                    row[key] = round(row[key] * 1.03, 4)
        write_jsonl(run / "metrics.jsonl", rows)
        entry = Entry(variant, 1, [f"optim.lr={lr}"], state="finished", run=run.name)
        entry.summary = summarize_run(run, 0)
        entries.append(entry)
    spec = {"name": FROZEN_SWEEP, "profile": "tiny-cpu", "mix": "demo", "tokens": 10240, "seeds": [1],
            "metric": "val_loss", "set": [], "variants": [{"name": e.variant, "set": e.overrides} for e in entries]}
    SweepState(folder, spec, entries, state="finished").save()
    return logs
