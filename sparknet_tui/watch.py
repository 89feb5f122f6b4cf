"""Reading runs for the panel: one watched run, followed incrementally, and the readers the Runs table shares.

No Textual here: these classes are called from worker threads and hand the
screens plain snapshots (RunRow, RunView). Every read tolerates missing,
partial or malformed files and reports them as a message instead of raising.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.config.loading import ConfigError, ThermalConfig, read_toml
from engine.files import JsonlFollower, tail_text
from engine.formatting import is_number
from engine.runs.rundir import effective_status
from engine.runs.status import RunStatus
from sparknet_tui.evalfile import eval_path, read_eval

HISTORY = 120  # samples kept for the short histories (sparklines)
EVENTS_KEPT = 50
LOG_LINES = 30
DEFAULT_WARN_C = ThermalConfig().warn_c


# ---------------------------------------------------------------- small readers


def read_run_config(run_dir: Path) -> tuple[dict, str | None]:
    """run.toml as a dict, plus a one-line problem when it cannot be read."""
    try:
        return read_toml(run_dir / "run.toml"), None
    except ConfigError as e:
        return {}, str(e)


def read_status(run_dir: Path) -> tuple[dict, str | None]:
    """effective_status (stale pid -> failed), never raising on a malformed status.json."""
    path = run_dir / "status.json"
    try:
        status = effective_status(run_dir)
    except (OSError, ValueError, AttributeError, TypeError) as e:
        return {"state": "unknown"}, f"{path}: unreadable ({e.__class__.__name__})"
    if not isinstance(status, dict):
        return {"state": "unknown"}, f"{path}: not a JSON object"
    if status.get("state") == "unknown" and path.exists():
        return status, f"{path}: unreadable or not JSON"
    return status, None


def last_jsonl_row(path: Path) -> dict | None:
    """The newest complete object of a JSONL file, reading only its end."""
    for line in reversed(tail_text(path, max_bytes=16384, lines=50)):
        try:
            obj = json.loads(line)
        except ValueError:
            continue  # the partial last line of a file being written
        if isinstance(obj, dict):
            return obj
    return None


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


def gpu_temperatures(system_row: dict | None) -> list[float]:
    gpus = system_row.get("gpus") if isinstance(system_row, dict) else None
    if not isinstance(gpus, list):
        return []
    return [g["temp_c"] for g in gpus if isinstance(g, dict) and is_number(g.get("temp_c"))]


def config_section(config: dict, *keys: str) -> dict:
    node: Any = config
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else {}


def as_number(value: Any) -> float | None:
    return float(value) if is_number(value) else None


def _append_number(history, value: Any) -> None:
    """Keep a reported figure; one that was not reported (None, NaN, text) leaves the history as it was."""
    if is_number(value):
        history.append(float(value))


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
    status: dict
    config: dict
    warn_c: float
    loss_points: list[tuple[float, float]]
    val_points: list[tuple[float, float]]
    wikitext_points: list[tuple[float, float]]  # (step, perplexity)
    tokens_per_s: list[float]
    mfu: list[float]
    last_metric: dict
    gpus: list[GpuView]
    cpu_pct: float | None
    cpu_history: list[float]
    ram_used_b: float | None
    ram_total_b: float | None
    ram_history: list[float]
    ram_available_b: float | None
    run_rss_b: float | None  # the training process's own resident memory
    events: list[dict]
    log_tail: list[str]
    eval: dict | None
    problems: list[str] = field(default_factory=list)

    @property
    def state(self) -> str:
        state = self.status.get("state")
        return state if isinstance(state, str) else "unknown"

    @property
    def paused(self) -> str | None:
        return RunStatus(self.status).paused

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
        self._metrics = JsonlFollower(self.path / "metrics.jsonl")
        self._system = JsonlFollower(self.path / "system.jsonl")
        self._events = JsonlFollower(self.path / "events.jsonl")
        self._config: dict = {}
        self._config_problem: str | None = None
        self._config_loaded = False
        self._loss: list[tuple[float, float]] = []
        self._val: list[tuple[float, float]] = []
        self._wikitext: list[tuple[float, float]] = []
        self._tokens_per_s: deque[float] = deque(maxlen=HISTORY)
        self._mfu: deque[float] = deque(maxlen=HISTORY)
        self._last_metric: dict = {}
        self._gpu_last: dict[int, dict] = {}
        self._gpu_hist: dict[int, dict[str, deque[float]]] = {}
        self._cpu_hist: deque[float] = deque(maxlen=HISTORY)
        self._ram_hist: deque[float] = deque(maxlen=HISTORY)
        self._system_last: dict = {}
        self._events_list: deque[dict] = deque(maxlen=EVENTS_KEPT)
        self._log_size = -1
        self._log_tail: list[str] = []
        self._eval_stamp: tuple[int, int] | None = None
        self._eval: dict | None = None
        self._eval_problem: str | None = None

    def poll(self) -> RunView:
        if not self._config_loaded:
            self._config, self._config_problem = read_run_config(self.path)
            self._config_loaded = True
        status, status_problem = read_status(self.path)
        for row in self._metrics.read_new():
            self._add_metric(row)
        for row in self._system.read_new():
            self._add_system(row)
        self._events_list.extend(self._events.read_new())
        self._read_log()
        self._read_eval()
        problems = [p for p in (self._config_problem, status_problem, self._eval_problem) if p]
        if not self.path.is_dir():
            problems.insert(0, f"{self.path}: run directory is gone")
        return RunView(
            run_id=self.run_id,
            path=self.path,
            status=status,
            config=self._config,
            warn_c=warn_threshold(self._config),
            loss_points=list(self._loss),
            val_points=list(self._val),
            wikitext_points=list(self._wikitext),
            tokens_per_s=list(self._tokens_per_s),
            mfu=list(self._mfu),
            last_metric=dict(self._last_metric),
            gpus=self._gpu_views(),
            cpu_pct=as_number(self._system_last.get("cpu_pct")),
            cpu_history=list(self._cpu_hist),
            ram_used_b=as_number(self._system_last.get("ram_used_b")),
            ram_total_b=as_number(self._system_last.get("ram_total_b")),
            ram_history=list(self._ram_hist),
            ram_available_b=as_number(self._system_last.get("ram_available_b")),
            run_rss_b=as_number(self._system_last.get("run_rss_b")),
            events=list(self._events_list),
            log_tail=list(self._log_tail),
            eval=self._eval,
            problems=problems,
        )

    def _add_metric(self, row: dict) -> None:
        step = as_number(row.get("step"))
        if step is None:
            return
        loss = as_number(row.get("loss"))
        if loss is not None:
            self._loss.append((step, loss))
            self._last_metric = row
        val = as_number(row.get("val_loss"))
        if val is not None:
            self._val.append((step, val))
        ppl = as_number(row.get("wikitext_ppl"))
        if ppl is not None:
            self._wikitext.append((step, ppl))
        _append_number(self._tokens_per_s, row.get("tokens_per_s"))
        _append_number(self._mfu, row.get("mfu"))

    def _add_system(self, row: dict) -> None:
        self._system_last = row
        _append_number(self._cpu_hist, row.get("cpu_pct"))
        _append_number(self._ram_hist, row.get("ram_used_b"))
        gpus = row.get("gpus")
        for i, gpu in enumerate(gpus if isinstance(gpus, list) else []):
            if not isinstance(gpu, dict):
                continue
            index = gpu.get("index") if isinstance(gpu.get("index"), int) else i
            self._gpu_last[index] = gpu
            hist = self._gpu_hist.setdefault(
                index, {k: deque(maxlen=HISTORY) for k in ("temp_c", "power_w", "util_pct")})
            for key, values in hist.items():
                value = as_number(gpu.get(key))
                if value is not None:
                    values.append(value)

    def _gpu_views(self) -> list[GpuView]:
        views = []
        for index in sorted(self._gpu_last):
            g = self._gpu_last[index]
            hist = self._gpu_hist[index]
            views.append(GpuView(
                index=index,
                name=str(g.get("name") or f"GPU {index}"),
                temp_c=as_number(g.get("temp_c")),
                power_w=as_number(g.get("power_w")),
                util_pct=as_number(g.get("util_pct")),
                sm_clock_mhz=as_number(g.get("sm_clock_mhz")),
                mem_used_b=as_number(g.get("mem_used_b")),
                mem_total_b=as_number(g.get("mem_total_b")),
                unified_memory=bool(g.get("unified_memory")),
                throttle=g.get("throttle"),
                temp_history=list(hist["temp_c"]),
                power_history=list(hist["power_w"]),
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
            self._log_tail = tail_text(self.path / "train.log", max_bytes=16384, lines=LOG_LINES)

    def _read_eval(self) -> None:
        try:
            st = eval_path(self.path).stat()
        except OSError:
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._eval_stamp:
            self._eval_stamp = stamp
            self._eval, self._eval_problem = read_eval(self.path)
