"""The Runs table's reading of logs/: one RunRow a run directory, rebuilt on every scan."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.formatting import perplexity
from engine.runs.rundir import LIVE_STATES, logs_dir
from engine.runs.status import RunStatus
from sparknet_tui.watch import (
    DEFAULT_WARN_C,
    as_number,
    config_section,
    gpu_temperatures,
    last_jsonl_row,
    model_shape,
    read_run_config,
    read_status,
    warn_threshold,
)


@dataclass(frozen=True)
class RunRow:
    run_id: str
    path: Path
    state: str
    profile: str
    mix: str
    status: dict
    config: dict
    max_temp_c: float | None = None
    warn_c: float = DEFAULT_WARN_C
    problem: str | None = None  # run.toml or status.json could not be read

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES

    @property
    def paused(self) -> str | None:
        return RunStatus(self.status).paused

    @property
    def hot(self) -> bool:
        return self.max_temp_c is not None and self.max_temp_c > self.warn_c

    @property
    def progress(self) -> float | None:
        return RunStatus(self.status).progress

    @property
    def val_perplexity(self) -> float | None:
        return perplexity(self.status.get("val_loss"))

    @property
    def tokens_per_s(self) -> float | None:
        return as_number(self.status.get("tokens_per_s"))

    @property
    def shape(self) -> tuple | None:
        return model_shape(self.config)


@dataclass
class ScanResult:
    rows: list[RunRow]
    error: str | None = None


class RunsScanner:
    """Lists logs/ on each call; run.toml is read once per run, status.json each time (it is small)."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else None
        self._configs: dict[Path, tuple[int, dict, str | None]] = {}

    def scan(self) -> ScanResult:
        root = self.root if self.root is not None else logs_dir()
        try:
            dirs = sorted((p for p in root.iterdir() if p.is_dir() and (p / "run.toml").exists()), reverse=True)
        except FileNotFoundError:
            return ScanResult([])
        except OSError as e:
            return ScanResult([], f"{root}: cannot list run directories ({e.strerror or e})")
        rows = [self._row(d) for d in dirs]
        for gone in set(self._configs) - set(dirs):
            del self._configs[gone]
        return ScanResult(rows)

    def _config(self, run_dir: Path) -> tuple[dict, str | None]:
        try:
            mtime = (run_dir / "run.toml").stat().st_mtime_ns
        except OSError:
            mtime = -1
        cached = self._configs.get(run_dir)
        if cached and cached[0] == mtime:
            return cached[1], cached[2]
        config, problem = read_run_config(run_dir)
        self._configs[run_dir] = (mtime, config, problem)
        return config, problem

    def _row(self, run_dir: Path) -> RunRow:
        config, config_problem = self._config(run_dir)
        status, status_problem = read_status(run_dir)
        state = status.get("state") if isinstance(status.get("state"), str) else "unknown"
        temps = gpu_temperatures(last_jsonl_row(run_dir / "system.jsonl")) if state in LIVE_STATES else []
        return RunRow(
            run_id=run_dir.name,
            path=run_dir,
            state=state,
            profile=str(config.get("profile_name") or "?"),
            mix=str(config.get("mix_name") or config_section(config, "mix").get("name") or "?"),
            status=status,
            config=config,
            max_temp_c=max(temps) if temps else None,
            warn_c=warn_threshold(config),
            problem=config_problem or status_problem,
        )


def measured_throughput(rows: list[RunRow], shape: tuple | None) -> tuple[float | None, int]:
    """Median tokens/s of finished runs of this model shape on this machine, and how many there were."""
    speeds = sorted(
        r.tokens_per_s for r in rows
        if r.state == "finished" and shape is not None and r.shape == shape and r.tokens_per_s
    )
    if not speeds:
        return None, 0
    mid = len(speeds) // 2
    median = speeds[mid] if len(speeds) % 2 else (speeds[mid - 1] + speeds[mid]) / 2
    return median, len(speeds)
