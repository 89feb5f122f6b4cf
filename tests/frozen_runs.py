"""Frozen copies of the session's real tiny runs, for snapshot tests: what differs from one machine or moment to
the next (times, speeds, losses, sampled text, the run id's timestamp) is fixed; the files, keys, steps, tokens and
events stay the real run's. GPU telemetry cannot exist on a CPU machine, so frozen system rows carry one stand-in
GPU: that is the only invented part.

Test modules load it with `pytest_plugins = ["tui_fixtures", "frozen_runs"]` and also import its helpers, so
pytest does not rewrite its asserts: PYTEST_DONT_REWRITE.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from cli_helpers import PROJECT
from tui_fixtures import copy_run, held_locks, read_jsonl, write_jsonl

from engine.runs.lock import RunLock

# The fixed moment snapshot tests render relative times against.
FROZEN_NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
FROZEN_START = FROZEN_NOW - 3600


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
    held_locks.append(RunLock.acquire(running))  # a live run owns its lock; held for the whole session
    (running / "eval.json").unlink(missing_ok=True)
    profiles = root / "profiles"
    (profiles / "mixes").mkdir(parents=True)
    (profiles / "tiny-cpu.toml").write_text(FROZEN_PROFILE)
    (profiles / "mixes" / "demo.toml").write_text(FROZEN_MIX)
    shutil.copytree(PROJECT / "profiles" / "mixes" / "demo", profiles / "mixes" / "demo")  # the mix's own data
    return FrozenRuns(logs, running, finished, failed, profiles)


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
