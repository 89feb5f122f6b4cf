"""The memory guard: a run checkpoints and stops itself before the machine runs out of memory."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import FAST, reaches, reaches_step, scaled, sparknet

from engine.files import read_json, read_jsonl, wait_for
from engine.hardware.memory_guard import GIB, MemoryGuard, available_memory_b, read_meminfo
from engine.models.checkpoint import verify_checkpoint
from engine.runs.lock import lock_held
from engine.runs.rundir import iter_checkpoints


def write_meminfo(path: Path, available_gb: float) -> None:
    # the layout of /proc/meminfo, in kB
    path.write_text(f"MemTotal:       {128 * 1024 * 1024} kB\nMemFree:        {1024} kB\n"
                    f"MemAvailable:   {int(available_gb * 1024 * 1024)} kB\nHugePages_Total:       0\n")


def test_meminfo_fields_in_bytes(tmp_path, monkeypatch):
    path = tmp_path / "meminfo"
    write_meminfo(path, 2.5)
    fields = read_meminfo(path)
    assert fields["MemTotal"] == 128 * GIB and fields["MemAvailable"] == int(2.5 * GIB)
    assert fields["HugePages_Total"] == 0  # a count, not kB
    assert read_meminfo(tmp_path / "absent") == {}
    monkeypatch.setenv("SPARKNET_MEMINFO", str(path))
    assert available_memory_b() == int(2.5 * GIB)


def test_the_guard_reads_at_most_once_a_second_and_names_the_setting(tmp_path, monkeypatch):
    path = tmp_path / "meminfo"
    monkeypatch.setenv("SPARKNET_MEMINFO", str(path))
    now = [0.0]
    guard = MemoryGuard(3.0, clock=lambda: now[0])
    write_meminfo(path, 50)
    assert guard.low() is None
    write_meminfo(path, 1.2)
    assert guard.low() is None  # read a moment ago: not again yet
    now[0] = 1.5
    reason = guard.low()
    assert reason == "available memory fell to 1.2 GB, below the floor of 3.0 GB (run.memory_floor_gb)"
    assert MemoryGuard(0).low() is None  # 0 turns the guard off


@pytest.mark.slow
def test_a_run_stops_with_a_checkpoint_when_memory_runs_low_and_resumes_after(logs, tmp_path, monkeypatch):
    meminfo = tmp_path / "meminfo"
    write_meminfo(meminfo, 100)
    monkeypatch.setenv("SPARKNET_MEMINFO", str(meminfo))
    run_id = sparknet("train", "--profile", "tiny-cpu", *FAST, "--set", "run.tokens=40_960",
                      "--set", "run.checkpoint_every=1000", "--detach").stdout.strip().splitlines()[-1]
    run = logs / run_id
    assert reaches_step(run, 3)
    write_meminfo(meminfo, 1.0)
    assert reaches(run, lambda s: s.get("state") == "failed")
    assert wait_for(lambda: not lock_held(run), scaled(30))  # the trainer has exited
    status = read_json(run / "status.json")
    assert status["error"].startswith("available memory fell to 1.0 GB, below the floor of 3.0 GB")
    assert f"the checkpoint from step {status['step']} is kept" in status["error"]
    assert "\n" not in status["error"]
    newest = next(iter_checkpoints(run))
    assert newest.name == f"step-{status['step']:08d}" and status["step"] < 40
    verify_checkpoint(newest)
    assert any(e["event"] == "error" and "memory" in e["message"] for e in read_jsonl(run / "events.jsonl"))
    write_meminfo(meminfo, 100)
    sparknet("resume", run_id)
    assert read_json(run / "status.json")["state"] == "finished"
