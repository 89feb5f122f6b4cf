"""The run directory: the only channel between a run and whoever watches it.

Pure Python (no torch): the control panel reads runs with this module.
status.json is replaced atomically; *.jsonl files are append-only and
readers tolerate a partial last line.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from engine import SparkNetError
from engine.config import PROJECT_ROOT

# "stalled" is never written: readers derive it for a live run that has gone quiet for too long
LIVE_STATES = ("preparing", "running", "stopping", "stalled")


def sharing_warning(live_run_ids: list[str]) -> str:
    """What a second run on the machine costs, said before it starts (the CLI and the panel say the same)."""
    verb = "is" if len(live_run_ids) == 1 else "are"
    return (f"{', '.join(live_run_ids)} {verb} training on this machine; runs sharing a GPU (or the CPU) each go "
            "at about half speed")


MAX_NAME = 64
# How long a live run may go without a sign of progress before it is shown as stalled, by phase. Training
# uses the larger of its floor and STALL_FACTOR times the measured interval between its status updates.
STALL_AFTER_S = {"preparing data": 300.0, "compiling": 1800.0, "exporting model": 900.0, "evaluating": 3600.0,
                 "checkpointing": 900.0}
STALL_TRAINING_FLOOR_S = 120.0
STALL_FACTOR = 10.0


def logs_dir() -> Path:
    return Path(os.environ.get("SPARKNET_LOGS", PROJECT_ROOT / "logs"))


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def new_run_id(profile: str, name: str | None = None) -> str:
    if name is not None and len(name) > MAX_NAME:
        raise SparkNetError(f"--name is {len(name)} characters long; give at most {MAX_NAME}")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", name or profile).strip("-") or "run"
    run_id = f"{stamp}-{base}"
    n = 2
    while (logs_dir() / run_id).exists():
        run_id = f"{stamp}-{base}-{n}"
        n += 1
    return run_id


def resolve_run(run: str) -> Path:
    """A run id (under logs/) or a run directory path."""
    p = Path(os.path.expanduser(run))
    if p.is_dir():
        if (p / "run.toml").exists():
            return p
        if p.is_absolute() or os.sep in run:
            raise SparkNetError(f"{p}: not a run directory (no run.toml)")
    q = logs_dir() / run
    if q.is_dir() and (q / "run.toml").exists():
        return q
    raise SparkNetError(f"run '{run}' not found: give a run id from `sparknet runs` or a run directory path")


def write_text_atomic(path: Path, text: str) -> None:
    """Written under a temporary name and renamed: readers see the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); run files follow the umask like every other file of the run,
        # so a panel started by another user of the box can read them
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=1) + "\n")


def append_jsonl(path: Path, obj: dict) -> None:
    """Append one line in one write(). A partial last line (a writer killed mid-write) is cut off first,
    so the new record is never glued to the fragment and lost with it."""
    line = (json.dumps(obj, separators=(",", ":")) + "\n").encode()
    with open(path, "ab+") as f:
        size = f.seek(0, os.SEEK_END)
        if size:
            f.seek(size - 1)
            if f.read(1) != b"\n":
                _drop_partial_line(f, size)
        f.write(line)


def _drop_partial_line(f, size: int) -> None:
    end = size
    while end > 0:
        start = max(0, end - (1 << 16))
        f.seek(start)
        cut = f.read(end - start).rfind(b"\n")
        if cut >= 0:
            f.truncate(start + cut + 1)
            return
        end = start
    f.truncate(0)


def read_json(path: Path) -> dict | None:
    """A JSON object from a file; None when missing, unreadable or not an object."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_jsonl(path: Path) -> list[dict]:
    return JsonlFollower(path).read_new()


class JsonlFollower:
    """Reads only what was appended since the last call; keeps a partial last line for later."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.offset = 0
        self._partial = b""

    def read_new(self) -> list[dict]:
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < self.offset:  # file replaced: start over
                    self.offset, self._partial = 0, b""
                f.seek(self.offset)
                chunk = f.read()
        except OSError:
            return []
        self.offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()  # b"" when data ended with a newline
        out = []
        for line in lines:
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                out.append(obj)
        return out


def tail_text(path: Path, max_bytes: int = 8192, lines: int = 20) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return []
    return data.decode("utf-8", "replace").splitlines()[-lines:]


@dataclass
class RunInfo:
    run_id: str
    path: Path
    status: dict
    config: dict

    @property
    def state(self) -> str:
        return self.status.get("state", "unknown")


def effective_status(run_dir: Path, now: float | None = None) -> dict:
    """status.json as a reader should believe it.

    A live state whose owner no longer holds the run's lock is reported as failed (the process ended without
    saying so, or the machine rebooted); a live run without a sign of progress for much longer than usual is
    reported as stalled, with stalled_s. `evaluating` says whether an evaluation of the run is under way.
    """
    from engine.runlock import EVAL_LOCK_NAME, lock_held

    status = dict(read_json(run_dir / "status.json") or {"state": "unknown"})
    if lock_held(run_dir, EVAL_LOCK_NAME):
        status["evaluating"] = True
    if status.get("state") not in LIVE_STATES:
        return status
    if not lock_held(run_dir):
        status["state"] = "failed"
        status["error"] = status.get("error") or (f"process {status.get('pid')} ended without saying so "
                                                  "(crashed, killed or the machine restarted)")
        return status
    quiet = (time.time() if now is None else now) - last_progress(run_dir, status)
    if quiet > stall_after_s(status):
        status["state"] = "stalled"
        status["stalled_s"] = round(quiet)
    return status


def stall_after_s(status: dict) -> float:
    phase = status.get("phase") or ""
    if status.get("paused"):
        return float("inf")  # a thermal pause waits as long as the heat lasts
    if phase in STALL_AFTER_S:
        return STALL_AFTER_S[phase]
    return max(STALL_TRAINING_FLOOR_S, STALL_FACTOR * float(status.get("update_every_s") or 0.0))


def last_progress(run_dir: Path, status: dict) -> float:
    """When the run last showed progress: its status update, or during preparation its progress file."""
    t = parse_utc(status.get("updated_at"))
    try:
        t = max(t, (run_dir / "prepare.json").stat().st_mtime) if status.get("phase") == "preparing data" else t
    except OSError:
        pass
    return t


def parse_utc(text) -> float:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def load_run_config(run_dir: Path) -> dict:
    from engine.config import read_toml

    try:
        return read_toml(run_dir / "run.toml")
    except SparkNetError:
        return {}


def list_runs() -> list[RunInfo]:
    root = logs_dir()
    if not root.is_dir():
        return []
    runs = []
    for d in sorted(root.iterdir()):
        if d.is_dir() and (d / "run.toml").exists():
            runs.append(RunInfo(d.name, d, effective_status(d), load_run_config(d)))
    return runs


class RunDir:
    """Writer side, used by the training process (rank 0)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.status_path = self.path / "status.json"
        self.metrics_path = self.path / "metrics.jsonl"
        self.system_path = self.path / "system.jsonl"
        self.events_path = self.path / "events.jsonl"
        self.checkpoints = self.path / "checkpoints"
        self._status: dict = read_json(self.status_path) or {}
        self.tensorboard = None  # a TensorBoardLog (engine/tensorboard_log.py) that gets every row as well

    def create(self, run_toml: str):
        """Make the folder, take its lock (before anything is written in it), then write run.toml."""
        from engine.runlock import RunLock

        self.path.mkdir(parents=True, exist_ok=False)
        lock = RunLock.acquire(self.path)
        self.checkpoints.mkdir()
        write_text_atomic(self.path / "run.toml", run_toml)
        return lock

    def status(self) -> dict:
        return dict(self._status)

    def update_status(self, **fields: Any) -> None:
        self._status.update(fields)
        self._status["updated_at"] = utc_now()
        write_json_atomic(self.status_path, self._status)

    def event(self, event_name: str, message: str = "", **extra: Any) -> None:
        append_jsonl(self.events_path, {"t": utc_now(), "event": event_name, "message": message, **extra})

    def metric(self, row: dict) -> None:
        append_jsonl(self.metrics_path, row)
        if self.tensorboard is not None:
            self.tensorboard.metric(row)

    def system(self, row: dict) -> None:
        append_jsonl(self.system_path, row)
        if self.tensorboard is not None:
            self.tensorboard.system(row)

    def stop_requested(self) -> bool:
        return (self.path / "STOP").exists()

    def clear_stop(self) -> None:
        try:
            (self.path / "STOP").unlink()
        except FileNotFoundError:
            pass


def request_stop(run_dir: Path) -> None:
    (run_dir / "STOP").write_text(utc_now() + "\n")


def delete_run(run_dir: Path) -> None:
    status = effective_status(run_dir)
    if status.get("state") in LIVE_STATES:
        raise SparkNetError(f"run {run_dir.name} is {status['state']}; stop it before deleting")
    shutil.rmtree(run_dir)


def iter_checkpoints(run_dir: Path) -> Iterator[Path]:
    """Complete checkpoints, newest first."""
    ck = run_dir / "checkpoints"
    if not ck.is_dir():
        return iter(())
    return iter(sorted((p for p in ck.glob("step-*") if p.is_dir()), reverse=True))


def newest_checkpoint_step(run_dir: Path) -> int | None:
    """The step of the run's newest complete checkpoint (checkpoints/step-N), or None when it has none."""
    newest = next(iter_checkpoints(run_dir), None)
    return int(newest.name.split("-")[1]) if newest else None


def wait_for(predicate, timeout: float, interval: float = 0.1) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def create_run(profile, mix, overrides: list[str], run_dir: Path):
    """A new run directory holding the resolved profile and mix, state preparing; returns its lock, held."""
    from engine import __version__
    from engine.config import dump_toml

    run_toml = dump_toml({
        "run_id": run_dir.name, "profile_name": profile.name, "mix_name": mix.name, "engine_version": __version__,
        "created_at": utc_now(), "overrides": list(overrides),
        "profile": profile.to_dict(), "mix": mix.to_dict(),
    })
    rd = RunDir(run_dir)
    lock = rd.create(run_toml)
    rd.update_status(state="preparing", phase="preparing data", run_id=run_dir.name, pid=os.getpid(),
                     started_at=utc_now(), step=0, steps=profile.steps, tokens=0,
                     total_tokens=profile.steps * profile.tokens_per_step)
    rd.event("created", f"profile {profile.name}, mix {mix.name}, {profile.steps} steps")
    return lock
