"""Reading runs for the panel: one watched run, followed incrementally, and the readers the Runs table shares.

No Textual here: these classes are called from worker threads and hand the
screens plain snapshots (RunRow, RunView). Every read tolerates missing,
partial or malformed files and reports them as a message instead of raising.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.config.loading import ThermalConfig
from engine.files import read_json
from engine.formatting import is_number
from engine.runs.reader import RunReader
from engine.runs.records import Event, GpuSample, MetricRow, SystemRow
from engine.runs.status import RunStatus
from sparknet_tui.evalfile import eval_path, read_eval

HISTORY = 120  # samples kept for the short histories (sparklines)
EVENTS_KEPT = 50
LOG_LINES = 200  # what the Live screen's log view shows
DEFAULT_WARN_C = ThermalConfig().warn_c


# ---------------------------------------------------------------- small readers


def warn_threshold(config: dict) -> float:
    thermal = config_section(config, "profile", "thermal")
    value = thermal.get("warn_c")
    return float(value) if is_number(value) else DEFAULT_WARN_C


def model_shape(config: dict) -> tuple | None:
    """What decides throughput on a given machine, for comparing runs."""
    model = config_section(config, "profile", "model")
    keys = ("arch", "n_layer", "n_embd", "n_head", "context", "vocab_size")
    if not all(k in model for k in keys[1:]):
        return None
    return tuple(model.get(k, "gpt2") for k in keys)


def gpu_temperatures(system_row: SystemRow | None) -> list[float]:
    return [g.temp_c for g in system_row.gpus if g.temp_c is not None] if system_row is not None else []


def config_section(config: dict, *keys: str) -> dict:
    node: Any = config
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else {}


def as_number(value: Any) -> float | None:
    return float(value) if is_number(value) else None


def _append_number(history, value: float | None) -> None:
    """Keep a reported figure; one that was not reported leaves the history as it was."""
    if value is not None:
        history.append(value)


# ---------------------------------------------------------------- one watched run


@dataclass
class GpuView:
    """The newest sample of one GPU plus its short histories; None = not reported."""

    index: int
    name: str
    temp_c: float | None
    power_w: float | None
    util_pct: float | None
    sm_clock_mhz: float | None
    mem_used_b: float | None
    mem_total_b: float | None
    unified_memory: bool
    throttle: Any
    temp_history: list[float]
    power_history: list[float]
    util_history: list[float]


@dataclass
class RunView:
    """Everything the Live screen shows, as plain copies (safe to hand to the UI thread)."""

    run_id: str
    path: Path
    status: RunStatus
    config: dict
    warn_c: float
    loss_points: list[tuple[float, float]]
    lr_points: list[tuple[float, float]]  # (learning rate, loss): the curve of an LR range test
    val_points: list[tuple[float, float]]
    wikitext_points: list[tuple[float, float]]  # (step, perplexity)
    tokens_per_s: list[float]
    mfu: list[float]
    last_metric: MetricRow | None  # the newest row with a training loss
    gpus: list[GpuView]
    cpu_pct: float | None
    cpu_history: list[float]
    ram_used_b: float | None
    ram_total_b: float | None
    ram_history: list[float]
    ram_available_b: float | None
    run_rss_b: float | None  # the training process's own resident memory
    events: list[Event]
    log_tail: list[str]
    eval: dict | None
    lr_find: dict | None = None  # an LR range test's reading (lr-find.json), once written
    problems: list[str] = field(default_factory=list)

    @property
    def state(self) -> str:
        return str(self.status.state)

    @property
    def paused(self) -> str | None:
        return self.status.paused

    @property
    def hot_gpus(self) -> list[GpuView]:
        return [g for g in self.gpus if g.temp_c is not None and g.temp_c > self.warn_c]

    @property
    def vocab_size(self) -> int | None:
        value = config_section(self.config, "profile", "model").get("vocab_size")
        return int(value) if is_number(value) else None


class RunWatcher:
    """Follows one run directory: each poll reads only what was appended since the last one."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir)
        self.run_id = self.path.name
        self.reader = RunReader(self.path)
        self._config: dict = {}
        self._config_problem: str | None = None
        self._config_loaded = False
        self._loss: list[tuple[float, float]] = []
        self._lr_loss: list[tuple[float, float]] = []
        self._lr_find: dict | None = None
        self._val: list[tuple[float, float]] = []
        self._wikitext: list[tuple[float, float]] = []
        self._tokens_per_s: deque[float] = deque(maxlen=HISTORY)
        self._mfu: deque[float] = deque(maxlen=HISTORY)
        self._last_metric: MetricRow | None = None
        self._gpu_last: dict[int, GpuSample] = {}
        self._gpu_hist: dict[int, dict[str, deque[float]]] = {}
        self._cpu_hist: deque[float] = deque(maxlen=HISTORY)
        self._ram_hist: deque[float] = deque(maxlen=HISTORY)
        self._system_last = SystemRow()
        self._events_list: deque[Event] = deque(maxlen=EVENTS_KEPT)
        self._log_size = -1
        self._log_tail: list[str] = []
        self._eval_stamp: tuple[int, int] | None = None
        self._eval: dict | None = None
        self._eval_problem: str | None = None

    def poll(self) -> RunView:
        if not self._config_loaded:
            self._config, self._config_problem = self.reader.config()
            self._config_loaded = True
        status, status_problem = self.reader.status()
        for row in self.reader.follow_metrics():
            self._add_metric(row)
        for row in self.reader.follow_system():
            self._add_system(row)
        self._events_list.extend(self.reader.follow_events())
        self._read_log()
        self._read_eval()
        problems = [p for p in (self._config_problem, status_problem, self._eval_problem) if p]
        if not self.path.is_dir():
            problems.insert(0, f"{self.path}: run directory is gone")
        system = self._system_last
        return RunView(
            run_id=self.run_id, path=self.path, status=status, config=self._config,
            warn_c=warn_threshold(self._config),
            loss_points=list(self._loss), lr_points=list(self._lr_loss), val_points=list(self._val),
            wikitext_points=list(self._wikitext),
            tokens_per_s=list(self._tokens_per_s), mfu=list(self._mfu), last_metric=self._last_metric,
            gpus=self._gpu_views(), cpu_pct=system.cpu_pct, cpu_history=list(self._cpu_hist),
            ram_used_b=system.ram_used_b, ram_total_b=system.ram_total_b, ram_history=list(self._ram_hist),
            ram_available_b=system.ram_available_b, run_rss_b=system.run_rss_b,
            events=list(self._events_list), log_tail=list(self._log_tail), eval=self._eval, problems=problems,
            lr_find=self._read_lr_find(),
        )

    def _add_metric(self, row: MetricRow) -> None:
        if row.loss is not None:
            self._loss.append((row.step, row.loss))
            if row.lr:
                self._lr_loss.append((row.lr, row.loss))
            self._last_metric = row
        if row.val_loss is not None:
            self._val.append((row.step, row.val_loss))
        if row.wikitext_ppl is not None:
            self._wikitext.append((row.step, row.wikitext_ppl))
        _append_number(self._tokens_per_s, row.tokens_per_s)
        _append_number(self._mfu, row.mfu)

    def _add_system(self, row: SystemRow) -> None:
        self._system_last = row
        _append_number(self._cpu_hist, row.cpu_pct)
        _append_number(self._ram_hist, row.ram_used_b)
        for gpu in row.gpus:
            self._gpu_last[gpu.index] = gpu
            hist = self._gpu_hist.setdefault(
                gpu.index, {k: deque(maxlen=HISTORY) for k in ("temp_c", "power_w", "util_pct")})
            for key, values in hist.items():
                _append_number(values, getattr(gpu, key))

    def _gpu_views(self) -> list[GpuView]:
        views = []
        for index in sorted(self._gpu_last):
            g = self._gpu_last[index]
            hist = self._gpu_hist[index]
            views.append(GpuView(
                index=index, name=g.name or f"GPU {index}", temp_c=g.temp_c, power_w=g.power_w,
                util_pct=g.util_pct, sm_clock_mhz=g.sm_clock_mhz, mem_used_b=g.mem_used_b,
                mem_total_b=g.mem_total_b, unified_memory=bool(g.unified_memory), throttle=g.throttle,
                temp_history=list(hist["temp_c"]), power_history=list(hist["power_w"]),
                util_history=list(hist["util_pct"]),
            ))
        return views

    def _read_log(self) -> None:
        try:
            size = (self.path / "train.log").stat().st_size
        except OSError:
            return
        if size != self._log_size:
            self._log_size = size
            self._log_tail = self.reader.log_tail(LOG_LINES)

    def _read_lr_find(self) -> dict | None:
        if self._lr_find is None and self._lr_loss and (self.path / "lr-find.json").exists():
            self._lr_find = read_json(self.path / "lr-find.json")  # written once, when the test ends
        return self._lr_find

    def _read_eval(self) -> None:
        try:
            st = eval_path(self.path).stat()
        except OSError:
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._eval_stamp:
            self._eval_stamp = stamp
            self._eval, self._eval_problem = read_eval(self.path)
