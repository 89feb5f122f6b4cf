"""The reading side of the run directory, used by the CLI and the panel: the status a reader should believe, the
run's config, and its metrics, telemetry and events as typed records, each JSONL file followed incrementally.
Every read tolerates missing, partial or malformed files and says what it could not read instead of raising.
Torch-free."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.config.errors import ConfigError
from engine.config.loading import read_toml
from engine.files import JsonlFollower, newest_jsonl_record, tail_text
from engine.runs.records import Event, MetricRow, SystemRow
from engine.runs.rundir import effective_status, logs_dir
from engine.runs.status import RunStatus


class RunReader:
    """One run directory as a reader sees it; the follow_* methods return only what was appended since their
    last call, so a long-lived reader (the panel's Live screen) reads each line once."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.run_id = self.path.name
        self._metrics = JsonlFollower(self.path / "metrics.jsonl")
        self._system = JsonlFollower(self.path / "system.jsonl")
        self._events = JsonlFollower(self.path / "events.jsonl")

    def status(self, now: float | None = None) -> tuple[RunStatus, str | None]:
        """effective_status (a dead owner reads as failed, a quiet one as stalled), plus a one-line problem
        when status.json exists but cannot be read."""
        path = self.path / "status.json"
        try:
            fields = effective_status(self.path, now)
        except (OSError, ValueError, AttributeError, TypeError) as e:
            return RunStatus({"state": "unknown"}), f"{path}: unreadable ({e.__class__.__name__})"
        status = RunStatus(fields)
        if status.fields.get("state") == "unknown" and path.exists():
            return status, f"{path}: unreadable or not JSON"
        return status, None

    def config(self) -> tuple[dict, str | None]:
        """run.toml as a dict, plus a one-line problem when it cannot be read."""
        try:
            return read_toml(self.path / "run.toml"), None
        except ConfigError as e:
            return {}, str(e)

    def follow_metrics(self) -> list[MetricRow]:
        return [m for m in map(MetricRow.from_dict, self._metrics.read_new()) if m is not None]

    def follow_system(self) -> list[SystemRow]:
        return [s for s in map(SystemRow.from_dict, self._system.read_new()) if s is not None]

    def follow_events(self) -> list[Event]:
        return [e for e in map(Event.from_dict, self._events.read_new()) if e is not None]

    def last_system(self) -> SystemRow | None:
        """The newest complete telemetry row, reading only the file's end."""
        return newest_jsonl_record(self.path / "system.jsonl", SystemRow.from_dict)

    def log_tail(self, lines: int) -> list[str]:
        return tail_text(self.path / "train.log", max_bytes=16384, lines=lines)


@dataclass
class RunInfo:
    run_id: str
    path: Path
    status: RunStatus
    config: dict


def list_runs() -> list[RunInfo]:
    """Every run directory under logs/, oldest first, with the status a reader should believe."""
    root = logs_dir()
    if not root.is_dir():
        return []
    runs = []
    for d in sorted(run_folders(root), key=lambda d: d.name):
        reader = RunReader(d)
        runs.append(RunInfo(d.name, d, reader.status()[0], reader.config()[0]))
    return runs


def run_folders(root: Path) -> list[Path]:
    """The run directories in logs/ and in each sweep's folder, logs/sweeps/NAME/."""
    sweeps = [s for s in (root / "sweeps").iterdir() if s.is_dir()] if (root / "sweeps").is_dir() else []
    return [d for folder in (root, *sweeps) for d in folder.iterdir() if d.is_dir() and (d / "run.toml").exists()]
