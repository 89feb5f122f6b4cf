"""The Runs table's reading of logs/: one RunRow a run directory, rebuilt on every scan."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine import SparkNetError
from engine.formatting import perplexity
from engine.runs.reader import RunReader, run_folders
from engine.runs.rundir import logs_dir
from engine.runs.status import RunStatus
from sparknet_tui.watch import DEFAULT_WARN_C, config_section, gpu_temperatures, model_shape, warn_threshold


@dataclass(frozen=True)
class RunRow:
    run_id: str
    path: Path
    profile: str
    mix: str
    status: RunStatus
    config: dict
    max_temp_c: float | None = None
    warn_c: float = DEFAULT_WARN_C
    problem: str | None = None  # run.toml or status.json could not be read

    @property
    def state(self) -> str:
        return str(self.status.state)

    @property
    def live(self) -> bool:
        return self.status.live

    @property
    def paused(self) -> str | None:
        return self.status.paused

    @property
    def hot(self) -> bool:
        return self.max_temp_c is not None and self.max_temp_c > self.warn_c

    @property
    def progress(self) -> float | None:
        return self.status.progress

    @property
    def val_perplexity(self) -> float | None:
        return perplexity(self.status.number("val_loss"))

    @property
    def tokens_per_s(self) -> float | None:
        return self.status.number("tokens_per_s")

    @property
    def shape(self) -> tuple | None:
        return model_shape(self.config)


@dataclass
class ScanResult:
    rows: list[RunRow]
    error: str | None = None


class RunsScanner:
    """Lists logs/ (and each sweep's folder in it) on each call; run.toml is read once per run, status.json each
    time (it is small)."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else None
        self._configs: dict[Path, tuple[int, dict, str | None]] = {}

    def scan(self) -> ScanResult:
        try:
            root = self.root if self.root is not None else logs_dir()
        except SparkNetError as e:
            return ScanResult([], str(e))
        try:
            # a sweep's runs are ordinary runs too: they are listed with the others
            dirs = sorted(run_folders(root), key=lambda p: p.name, reverse=True)
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
        config, problem = RunReader(run_dir).config()
        self._configs[run_dir] = (mtime, config, problem)
        return config, problem

    def _row(self, run_dir: Path) -> RunRow:
        config, config_problem = self._config(run_dir)
        reader = RunReader(run_dir)
        status, status_problem = reader.status()
        temps = gpu_temperatures(reader.last_system()) if status.live else []
        return RunRow(
            run_id=run_dir.name,
            path=run_dir,
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
