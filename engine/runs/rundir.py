"""The run directory: the only channel between a run and whoever watches it. Its paths, the RunWriter the
training process writes through, and the status a reader should believe (a dead owner reads as failed, a quiet one
as stalled).

Pure Python (no torch): the control panel reads runs with this module. status.json is replaced atomically;
*.jsonl files are append-only and readers tolerate a partial last line.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from engine import SparkNetError
from engine.config.loading import (
    PROJECT_ROOT,
    mix_from_dict,
    profile_from_dict,
    read_toml,
)
from engine.config.paths import checked_folder
from engine.config.schema import MixConfig, Profile
from engine.files import (
    append_jsonl,
    newest_jsonl_record,
    parse_utc,
    read_json,
    tail_text,
    utc_now,
    write_json_atomic,
    write_text_atomic,
)
from engine.formatting import fmt_steps
from engine.runs.records import Event, MetricRow, Phase, SystemRow
from engine.runs.status import FIELDS, LIVE, RunStatus, State

LIVE_STATES = tuple(state.value for state in LIVE)


def sharing_warning(live_run_ids: list[str]) -> str:
    """What a second run on the machine costs, said before it starts (the CLI and the panel say the same)."""
    verb = "is" if len(live_run_ids) == 1 else "are"
    return (f"{', '.join(live_run_ids)} {verb} training on this machine; runs sharing a GPU (or the CPU) each go "
            "at about half speed")


MAX_NAME = 64
# How long a live run may go without a sign of progress before it is shown as stalled, by phase. Training
# uses the larger of its floor and STALL_FACTOR times the measured interval between its status updates.
STALL_AFTER_S = {Phase.PREPARING_DATA: 300.0, Phase.CHECKING_FAST_PATHS: 900.0, Phase.COMPILING: 1800.0,
                 Phase.EXPORTING: 900.0, Phase.EVALUATING: 3600.0, Phase.CHECKPOINTING: 900.0}
STALL_TRAINING_FLOOR_S = 120.0
STALL_FACTOR = 10.0


def logs_dir() -> Path:
    """Where runs live: SPARKNET_LOGS, else logs/ in the project. Refused (one line) when it is not a folder."""
    path = Path(os.environ.get("SPARKNET_LOGS", PROJECT_ROOT / "logs"))
    return checked_folder(path, "SPARKNET_LOGS")


def run_name_part(name: str) -> str:
    """What a run id keeps of a name: letters, digits, '.', '_' and '-', other runs of characters as one '-'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "run"


def runs_named(folder: Path, name: str) -> list[Path]:
    """The run directories `sparknet train --name NAME` made in `folder`, oldest first (an id starts with its time;
    a second one of the same name in the same second ends in -2)."""
    pattern = re.compile(rf"\d{{8}}-\d{{6}}-{re.escape(run_name_part(name))}(-\d+)?")
    if not folder.is_dir():
        return []
    return sorted((d for d in folder.iterdir() if pattern.fullmatch(d.name) and (d / "run.toml").exists()),
                  key=lambda d: d.name)


def new_run_id(profile: str, name: str | None = None) -> str:
    if name is not None and len(name) > MAX_NAME:
        raise SparkNetError(f"--name is {len(name)} characters long; give at most {MAX_NAME}")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    base = run_name_part(name or profile)
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
    for q in (logs_dir() / run, *sorted(logs_dir().glob(f"sweeps/*/{run}"))):
        if q.is_dir() and (q / "run.toml").exists():
            return q
    raise SparkNetError(f"run '{run}' not found: give a run id from `sparknet runs` or a run directory path")


def effective_status(run_dir: Path, now: float | None = None) -> dict:
    """status.json as a reader should believe it.

    A live state whose owner no longer holds the run's lock is reported as failed (the process ended without
    saying so, or the machine rebooted); a live run without a sign of progress for much longer than usual is
    reported as stalled, with stalled_s. `evaluating` says whether an evaluation of the run is under way.
    """
    from engine.runs.lock import EVAL_LOCK_NAME, lock_held

    status = dict(read_json(run_dir / "status.json") or {"state": "unknown"})
    if lock_held(run_dir, EVAL_LOCK_NAME):
        status["evaluating"] = True
    if status.get("state") not in LIVE_STATES:
        return status
    if not lock_held(run_dir):
        status["state"] = "failed"
        status["error"] = status.get("error") or unsaid_end(run_dir, status)
        return status
    quiet = (time.time() if now is None else now) - last_progress(run_dir, status)
    if quiet > stall_after_s(status):
        status["state"] = "stalled"
        status["stalled_s"] = round(quiet)
    return status


# train.log's lines as the trainer logs them, told apart from what the fault handler writes by their time
LOG_FORMAT, LOG_TIME_FORMAT = "%(asctime)s %(message)s", "%H:%M:%S"
LOG_LINE = re.compile(r"\d\d:\d\d:\d\d ")


def unsaid_end(run_dir: Path, status: dict) -> str:
    """Why a live run's process is gone though status.json does not say: the error its last event names (a full
    disk may refuse status.json but take a short event line), the fatal error the process reported in train.log
    as it crashed, else that it ended without saying so."""
    last = last_event(run_dir)
    if last is not None and last.event == "error" and last.message:
        return last.message
    said = f"; its last event: {last.event}: {last.message}" if last is not None and last.message else ""
    fatal = fatal_error(run_dir / "train.log")
    if fatal is not None:
        return f"process {status.get('pid')} crashed ({fatal}); train.log holds where{said}"
    return f"process {status.get('pid')} ended without saying so (crashed, killed or the machine restarted){said}"


def fatal_error(log: Path) -> str | None:
    """The fatal error (a segmentation fault, an abort) Python's fault handler wrote at the end of a log; None when
    a later process (a resume) has logged since, for the crash was then an earlier one's."""
    lines = tail_text(log, max_bytes=32768, lines=400)
    fatal = [i for i, line in enumerate(lines) if line.startswith("Fatal Python error: ")]
    if not fatal or any(LOG_LINE.match(line) for line in lines[fatal[-1]:]):
        return None
    return lines[fatal[-1]].removeprefix("Fatal Python error: ").strip()


def last_event(run_dir: Path) -> Event | None:
    return newest_jsonl_record(run_dir / "events.jsonl", Event.from_dict)


def stall_after_s(status: dict) -> float:
    run = RunStatus(status)
    if run.paused:
        return float("inf")  # a thermal pause waits as long as the heat lasts
    if run.phase in STALL_AFTER_S:
        return STALL_AFTER_S[run.phase]
    return max(STALL_TRAINING_FLOOR_S, STALL_FACTOR * (run.number("update_every_s") or 0.0))


def last_progress(run_dir: Path, status: dict) -> float:
    """When the run last showed progress, by this machine's clock: when status.json was last replaced, or during
    preparation its progress file, if later. The time the trainer writes inside the file is not used: its clock
    may differ from the reader's, and a healthy run would then read as stalled."""
    names = ("status.json", "prepare.json") if RunStatus(status).phase == Phase.PREPARING_DATA else ("status.json",)
    times = []
    for name in names:
        try:
            times.append((run_dir / name).stat().st_mtime)
        except OSError:
            pass
    return max(times) if times else parse_utc(status.get("updated_at"))


def load_run_config(run_dir: Path) -> dict:
    try:
        return read_toml(run_dir / "run.toml")
    except SparkNetError:
        return {}


def load_run(run_dir: Path) -> tuple[Profile, MixConfig, dict]:
    """The profile, mix and whole record a run was created with, from its run.toml."""
    data = read_toml(run_dir / "run.toml")
    where = str(run_dir / "run.toml")
    missing = [table for table in ("profile", "mix") if not isinstance(data.get(table), dict)]
    if missing:
        raise SparkNetError(f"{where}: no [{missing[0]}] table, so it is not the record of a run SparkNet started "
                            "(damaged or edited by hand); restore it from a backup, or delete the run")
    profile = profile_from_dict(data["profile"], where, name=data.get("profile_name", ""))
    mix_data = dict(data["mix"])
    mix_name = mix_data.pop("name", data.get("mix_name", ""))
    # paths in run.toml are already absolute
    mix = mix_from_dict(mix_data, where, run_dir, name=mix_name)
    return profile, mix, data


class RunWriter:
    """The writing side of the run directory, used by the training process (rank 0): status.json replaced whole,
    and the metrics, telemetry and events appended as typed records."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.status_path = self.path / "status.json"
        self.metrics_path = self.path / "metrics.jsonl"
        self.system_path = self.path / "system.jsonl"
        self.events_path = self.path / "events.jsonl"
        self.checkpoints = self.path / "checkpoints"
        self._status: dict = read_json(self.status_path) or {}
        self.updates = 0  # status updates written by this process: a counter no clock change can move
        self.tensorboard = None  # a TensorBoardLog (train/tensorboard_log.py) that gets every row as well

    def create(self, run_toml: str):
        """Make the folder, take its lock (before anything is written in it), then write run.toml."""
        from engine.runs.lock import RunLock

        self.path.mkdir(parents=True, exist_ok=False)
        lock = RunLock.acquire(self.path)
        self.checkpoints.mkdir()
        write_text_atomic(self.path / "run.toml", run_toml)
        return lock

    def status(self) -> dict:
        return dict(self._status)

    def update_status(self, **fields: Any) -> None:
        unknown = set(fields) - FIELDS
        if unknown:
            raise ValueError(f"status.json has no field {', '.join(sorted(unknown))}")
        self._status.update(fields)
        self._status["updated_at"] = utc_now()
        write_json_atomic(self.status_path, self._status, make_folder=False)
        self.updates += 1

    def event(self, event_name: str, message: str = "", **extra: Any) -> None:
        append_jsonl(self.events_path, Event(utc_now(), event_name, message, extra).to_dict())

    def metric(self, row: MetricRow) -> None:
        append_jsonl(self.metrics_path, row.to_dict())
        if self.tensorboard is not None:
            self.tensorboard.metric(row)

    def system(self, row: SystemRow) -> None:
        append_jsonl(self.system_path, row.to_dict())
        if self.tensorboard is not None:
            self.tensorboard.system(row)

    def stop_requested(self) -> bool:
        return (self.path / "STOP").exists()

    def check_present(self) -> None:
        """A run whose folder was deleted under it stops in one line and writes nothing back: every later write
        would fail, or make an orphan folder that no reader lists."""
        if not self.path.is_dir():
            raise SparkNetError(deleted_run_message(self.path))

    def clear_stop(self) -> None:
        try:
            (self.path / "STOP").unlink()
        except FileNotFoundError:
            pass


def deleted_run_message(run_dir: Path) -> str:
    return f"the run folder {run_dir} was deleted while the run trained; the run stopped and wrote nothing back"


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


def create_run(profile, mix, overrides: list[str], run_dir: Path):
    """A new run directory holding the resolved profile and mix, state preparing; returns its lock, held."""
    from engine import __version__
    from engine.config.loading import dump_toml

    run_toml = dump_toml({
        "run_id": run_dir.name, "profile_name": profile.name, "mix_name": mix.name, "engine_version": __version__,
        "created_at": utc_now(), "overrides": list(overrides),
        "profile": profile.to_dict(), "mix": mix.to_dict(),
    })
    rd = RunWriter(run_dir)
    lock = rd.create(run_toml)
    rd.update_status(state=State.PREPARING, phase=Phase.PREPARING_DATA, run_id=run_dir.name, pid=os.getpid(),
                     started_at=utc_now(), step=0, steps=profile.steps, tokens=0,
                     total_tokens=profile.steps * profile.tokens_per_step)
    rd.event("created", f"profile {profile.name}, mix {mix.name}, {fmt_steps(profile.steps)}")
    return lock
