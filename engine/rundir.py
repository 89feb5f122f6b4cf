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

STATES = ("preparing", "running", "stopping", "stopped", "finished", "failed")
LIVE_STATES = ("preparing", "running", "stopping")


def logs_dir() -> Path:
    return Path(os.environ.get("SPARKNET_LOGS", PROJECT_ROOT / "logs"))


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def new_run_id(profile: str, name: str | None = None) -> str:
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
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=1) + "\n")


def append_jsonl(path: Path, obj: dict) -> None:
    # one write() of a whole line keeps lines whole for readers
    with open(path, "a") as f:
        f.write(json.dumps(obj, separators=(",", ":")) + "\n")


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


@dataclass
class RunInfo:
    run_id: str
    path: Path
    status: dict
    config: dict

    @property
    def state(self) -> str:
        return self.status.get("state", "unknown")


def effective_status(run_dir: Path) -> dict:
    """status.json, with a live state whose process is gone reported as failed (stale pid)."""
    status = read_json(run_dir / "status.json") or {"state": "unknown"}
    if status.get("state") in LIVE_STATES and not pid_alive(status.get("pid")):
        status = dict(status)
        status["state"] = "failed"
        status["error"] = status.get("error") or f"process {status.get('pid')} ended without saying so (stale pid)"
    return status


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

    def create(self, run_toml: str) -> None:
        self.path.mkdir(parents=True, exist_ok=False)
        self.checkpoints.mkdir()
        (self.path / "run.toml").write_text(run_toml)

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

    def system(self, row: dict) -> None:
        append_jsonl(self.system_path, row)

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


def wait_for(predicate, timeout: float, interval: float = 0.1) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def create_run(profile, mix, overrides: list[str], run_dir: Path) -> Path:
    """A new run directory holding the resolved profile and mix; state preparing."""
    from engine import __version__
    from engine.config import dump_toml

    run_toml = dump_toml({
        "run_id": run_dir.name, "profile_name": profile.name, "mix_name": mix.name, "engine_version": __version__,
        "created_at": utc_now(), "overrides": list(overrides),
        "profile": profile.to_dict(), "mix": mix.to_dict(),
    })
    rd = RunDir(run_dir)
    rd.create(run_toml)
    rd.update_status(state="preparing", run_id=run_dir.name, pid=os.getpid(), started_at=utc_now(), step=0,
                     steps=profile.steps, tokens=0, total_tokens=profile.steps * profile.tokens_per_step)
    rd.event("created", f"profile {profile.name}, mix {mix.name}, {profile.steps} steps")
    return run_dir
