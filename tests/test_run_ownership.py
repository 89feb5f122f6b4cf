"""One trainer per run: the run lock, racing resumes, what `runs` and `stop` believe, stalls, one evaluation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cli_helpers import FAST, PROJECT, reaches_step, scaled, sparknet

from engine.files import utc_now, wait_for
from engine.runs.lock import EVAL_LOCK_NAME, RunLock, lock_held
from engine.runs.rundir import RunWriter, effective_status
from engine.train.watchdog import StallWatch


def detached_run(*extra) -> Path:
    run_id = sparknet("train", "--profile", "tiny-cpu", *FAST, "--set", "run.checkpoint_every=2",
                      *extra, "--detach").stdout.strip().splitlines()[-1]
    return Path(os.environ["SPARKNET_LOGS"]) / run_id


def trainers_of(run_dir: Path) -> list[int]:
    """Training processes of this run, found in /proc by their command line."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and b"_run" in argv and str(run_dir).encode() in argv:
            found.append(int(pid))
    return found


@pytest.mark.long
@pytest.mark.slow
def test_racing_resumes_never_start_two_trainers(logs):
    run = detached_run("--set", "run.tokens=204_800")
    assert reaches_step(run, 2)
    sparknet("stop", str(run))
    assert wait_for(lambda: not trainers_of(run), scaled(60), 0.05)  # the stopped trainer has exited
    for attempt in range(3):  # each a real race of two resumes; the lock decides every one alike
        with ThreadPoolExecutor(2) as pool:
            procs = list(pool.map(lambda _: sparknet("resume", str(run), "--detach", check=False), range(2)))
        codes = sorted(p.returncode for p in procs)
        assert codes == [0, 2], (attempt, [(p.returncode, p.stderr) for p in procs])
        loser = next(p for p in procs if p.returncode == 2)
        assert loser.stderr.count("\n") == 1 and "already has a trainer running" in loser.stderr
        found = trainers_of(run)
        assert len(found) == 1, (attempt, found)
        os.kill(found[0], signal.SIGKILL)  # a crash: the lock goes with the process
        assert wait_for(lambda: not lock_held(run) and not trainers_of(run), scaled(60), 0.02)
    assert effective_status(run)["state"] == "failed"


@pytest.mark.slow
def test_a_second_trainer_refuses_and_train_refuses_a_held_run(logs):
    run = logs / "20260101-000000-held"
    run.mkdir()
    (run / "run.toml").write_text('run_id = "held"\nprofile_name = "tiny-cpu"\n')
    (run / "status.json").write_text(json.dumps({"state": "stopped", "step": 3}))
    lock = RunLock.acquire(run)
    try:
        proc = sparknet("resume", str(run), check=False)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        # the training process itself, started by hand, refuses too and writes nothing
        before = (run / "status.json").read_text()
        worker = subprocess.run([sys.executable, "-m", "engine.cli", "_run", str(run), "--resume"], cwd=PROJECT,
                                capture_output=True, text=True, timeout=scaled(300))
        assert worker.returncode == 2 and "already has a trainer running" in worker.stderr
        assert (run / "status.json").read_text() == before
    finally:
        lock.release()


def test_a_pid_from_before_a_reboot_is_not_a_live_run(logs):
    run = logs / "20260101-000000-reboot"
    run.mkdir()
    (run / "run.toml").write_text('run_id = "reboot"\nprofile_name = "tiny-cpu"\n')
    # after a reboot the recorded pid can belong to an unrelated live process (here: this test)
    (run / "status.json").write_text(json.dumps({"state": "running", "pid": os.getpid(), "step": 3}))
    assert effective_status(run)["state"] == "failed"
    assert "failed" in sparknet("runs").stdout
    proc = sparknet("stop", str(run), check=False)
    assert proc.returncode == 2 and "not running" in proc.stderr


def test_a_run_that_ended_without_writing_its_status_is_told_by_its_last_event(logs):
    run = logs / "20260101-000000-full"
    run.mkdir()
    (run / "run.toml").write_text('run_id = "full"\nprofile_name = "tiny-cpu"\n')
    (run / "status.json").write_text(json.dumps({"state": "running", "pid": 999999, "step": 7}))
    reason = "disk full writing metrics.jsonl; 0 MB free; the checkpoint from step 4 is intact"
    with open(run / "events.jsonl", "w") as f:  # the status write failed, the short event line did not
        f.write(json.dumps({"t": utc_now(), "event": "error", "message": reason}) + "\n" + '{"t": "2026-01-0')
    assert effective_status(run)["error"] == reason
    (run / "events.jsonl").write_text(json.dumps({"t": utc_now(), "event": "warning", "message": "GPU 0 at 91 C"}))
    error = effective_status(run)["error"]
    assert "ended without saying so" in error and error.endswith("its last event: warning: GPU 0 at 91 C")


def _live_status(run: Path, **fields) -> None:
    status = {"state": "running", "phase": "training", "pid": os.getpid(), "step": 40, "steps": 100,
              "update_every_s": 2.0, "updated_at": utc_now(), **fields}
    (run / "status.json").write_text(json.dumps(status))


def test_a_quiet_live_run_shows_as_stalled_with_how_long(logs):
    run = logs / "20260101-000000-quiet"
    run.mkdir()
    (run / "run.toml").write_text('run_id = "quiet"\nprofile_name = "tiny-cpu"\n')
    lock = RunLock.acquire(run)
    try:
        _live_status(run)
        assert effective_status(run)["state"] == "running"
        later = time.time() + 600  # ten minutes without a step, where steps came every 2 s
        stalled = effective_status(run, now=later)
        assert stalled["state"] == "stalled" and 595 <= stalled["stalled_s"] <= 605
        # preparation counts its progress file as a sign of life
        _live_status(run, state="preparing", phase="preparing data")
        (run / "prepare.json").write_text("{}")
        assert effective_status(run, now=time.time() + 200)["state"] == "preparing"
        assert effective_status(run, now=time.time() + 400)["state"] == "stalled"
        # the trainer's clock two hours behind the reader's: what it writes in the file is not what counts
        _live_status(run, updated_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 7200)))
        assert effective_status(run)["state"] == "running"
        assert "running" in sparknet("runs").stdout
        # a stalled run is still live: `stop` may act on it
        old = time.time() - 900
        os.utime(run / "status.json", (old, old))
        table = sparknet("runs").stdout
        assert "stalled 15m" in table or "stalled 14m" in table
        assert sparknet("stop", str(run), "--wait", "0").returncode == 0
    finally:
        lock.release()


def test_the_trainer_raises_the_stall_alarm_once_and_clears_it(tmp_path, monkeypatch):
    rd = RunWriter(tmp_path)
    seen = []
    watch = StallWatch(rd, lambda name, message: seen.append((name, message)))
    rd.update_status(state="running", phase="training", step=7, update_every_s=1.0)
    start = time.monotonic()
    watch.check(start)
    # the wall clock jumps a day forward while the run is quiet: quiet is measured on the monotonic clock
    monkeypatch.setattr(time, "time", lambda: start + 86400)
    watch.check(start + 60)
    assert seen == []
    watch.check(start + 500)
    watch.check(start + 501)
    assert [name for name, _ in seen] == ["stalled"] and "step 7" in seen[0][1] and "'training'" in seen[0][1]
    rd.update_status(step=8)
    watch.check(start + 502)
    assert [name for name, _ in seen] == ["stalled", "recovered"]
    # preparation: its progress file changing is a sign of life
    rd.update_status(state="preparing", phase="preparing data")
    for t in (600, 800, 1000):
        (tmp_path / "prepare.json").write_text(json.dumps({"tokens": t, "documents": "x" * t}))
        watch.check(start + t)
    assert [name for name, _ in seen] == ["stalled", "recovered"]


@pytest.mark.slow
def test_one_evaluation_at_a_time_per_run(logs):
    run = logs / "20260101-000000-evaluated"
    run.mkdir()
    (run / "run.toml").write_text('run_id = "evaluated"\nprofile_name = "tiny-cpu"\n')
    (run / "status.json").write_text(json.dumps({"state": "stopped", "step": 3}))
    lock = RunLock.acquire(run, what="evaluation", name=EVAL_LOCK_NAME)
    try:
        assert effective_status(run)["evaluating"] is True
        proc = sparknet("eval", str(run), check=False)
        assert proc.returncode == 2 and "already has an evaluation running" in proc.stderr
        assert proc.stderr.count("\n") == 1
    finally:
        lock.release()
    assert "evaluating" not in effective_status(run)


@pytest.mark.slow
def test_a_second_run_on_the_machine_is_warned_that_both_go_at_half_speed(logs):
    first = sparknet("train", "--profile", "tiny-cpu", *FAST, "--set", "run.tokens=4_096_000", "--name", "long",
                     "--detach").stdout.strip().splitlines()[-1]
    try:
        assert reaches_step(logs / first, 1)
        second = sparknet("train", "--profile", "tiny-cpu", *FAST, "--set", "run.tokens=2048", "--name", "short")
        warning = [line for line in second.stderr.splitlines() if "warning" in line]
        assert warning == [f"sparknet: warning: {first} is training on this machine; runs sharing a GPU (or the CPU)"
                           " each go at about half speed"]
    finally:
        sparknet("stop", first)
    alone = sparknet("train", "--profile", "tiny-cpu", *FAST, "--set", "run.tokens=2048", "--name", "alone")
    assert "warning" not in alone.stderr  # the first run has stopped: nothing to share with
