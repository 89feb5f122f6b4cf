"""The rows of a run directory's JSONL files as typed records: a metrics row, a telemetry row with one sample a
GPU, and an event. Writers build them and write `to_dict()`; readers get them from `from_dict`, which never
raises: a field that is missing or malformed reads as None, and a row without what makes it a row reads as None.
Torch-free (the panel reads these)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

from engine.formatting import is_number


class Phase(str, Enum):
    """What a live run is doing, as status.json's `phase` says it."""
    PREPARING_DATA = "preparing data"
    CHECKING_FAST_PATHS = "checking fast paths"
    COMPILING = "compiling"
    TRAINING = "training"
    CHECKPOINTING = "checkpointing"
    EVALUATING = "evaluating"
    EXPORTING = "exporting model"
    NONE = ""

    def __str__(self) -> str:  # the words status.json holds, wherever they are shown
        return self.value


def number(value: Any) -> float | None:
    return float(value) if is_number(value) else None


def whole(value: Any) -> int | None:
    return int(value) if is_number(value) else None


def text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _without_none(row: dict, optional: tuple[str, ...]) -> dict:
    """Optional figures a row did not measure are left out rather than written as null."""
    return {k: v for k, v in row.items() if not (k in optional and v is None)}


@dataclass(frozen=True)
class MetricRow:
    """One line of metrics.jsonl: a log step's training figures, and the held-out ones it was due."""
    step: int
    tokens: int | None = None
    loss: float | None = None
    lr: float | None = None
    grad_norm: float | None = None
    tokens_per_s: float | None = None  # None on the first log step after compiling: nothing measured yet
    mfu: float | None = None
    elapsed_s: float | None = None
    epochs: dict | None = None  # source name -> passes over it so far
    gpu_mem_peak_b: int | None = None
    val_loss: float | None = None
    wikitext_ppl: float | None = None

    OPTIONAL = ("gpu_mem_peak_b", "val_loss", "wikitext_ppl")

    def to_dict(self) -> dict:
        return _without_none(asdict(self), self.OPTIONAL)

    @classmethod
    def from_dict(cls, row: Any) -> MetricRow | None:
        if not isinstance(row, dict) or whole(row.get("step")) is None:
            return None
        epochs = row.get("epochs")
        return cls(step=whole(row["step"]), tokens=whole(row.get("tokens")), loss=number(row.get("loss")),
                   lr=number(row.get("lr")), grad_norm=number(row.get("grad_norm")),
                   tokens_per_s=number(row.get("tokens_per_s")), mfu=number(row.get("mfu")),
                   elapsed_s=number(row.get("elapsed_s")), epochs=epochs if isinstance(epochs, dict) else None,
                   gpu_mem_peak_b=whole(row.get("gpu_mem_peak_b")), val_loss=number(row.get("val_loss")),
                   wikitext_ppl=number(row.get("wikitext_ppl")))


@dataclass
class GpuSample:
    """One GPU in a telemetry row. Every figure NVML may refuse is None, never 0."""
    index: int
    name: str | None = None
    temp_c: float | None = None
    power_w: float | None = None
    util_pct: float | None = None
    sm_clock_mhz: int | None = None
    mem_used_b: int | None = None
    mem_total_b: int | None = None
    unified_memory: bool | None = None
    mem_source: str | None = None  # nvml | processes | torch: where mem_used_b came from
    throttle: list[str] | None = None  # the slowdowns active now; None when NVML cannot tell

    @classmethod
    def from_dict(cls, gpu: Any, position: int) -> GpuSample | None:
        if not isinstance(gpu, dict):
            return None
        throttle = gpu.get("throttle")
        return cls(index=gpu["index"] if isinstance(gpu.get("index"), int) else position, name=text(gpu.get("name")),
                   temp_c=number(gpu.get("temp_c")), power_w=number(gpu.get("power_w")),
                   util_pct=number(gpu.get("util_pct")), sm_clock_mhz=whole(gpu.get("sm_clock_mhz")),
                   mem_used_b=whole(gpu.get("mem_used_b")), mem_total_b=whole(gpu.get("mem_total_b")),
                   unified_memory=gpu.get("unified_memory") if isinstance(gpu.get("unified_memory"), bool) else None,
                   mem_source=text(gpu.get("mem_source")),
                   throttle=[str(t) for t in throttle] if isinstance(throttle, list) else None)


@dataclass(frozen=True)
class SystemRow:
    """One line of system.jsonl: the machine and every GPU of it, sampled from inside the training process."""
    t: float | None = None  # seconds since the epoch
    time: str | None = None  # the same moment in UTC, for people
    cpu_pct: float | None = None
    ram_used_b: int | None = None  # total minus available: page cache counts as free
    ram_total_b: int | None = None
    ram_available_b: int | None = None
    run_rss_b: int | None = None  # the training process's own resident memory
    gpus: list[GpuSample] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, row: Any) -> SystemRow | None:
        if not isinstance(row, dict):
            return None
        gpus = row.get("gpus") if isinstance(row.get("gpus"), list) else []
        samples = [GpuSample.from_dict(g, i) for i, g in enumerate(gpus)]
        return cls(t=number(row.get("t")), time=text(row.get("time")), cpu_pct=number(row.get("cpu_pct")),
                   ram_used_b=whole(row.get("ram_used_b")), ram_total_b=whole(row.get("ram_total_b")),
                   ram_available_b=whole(row.get("ram_available_b")), run_rss_b=whole(row.get("run_rss_b")),
                   gpus=[s for s in samples if s is not None])


@dataclass(frozen=True)
class Event:
    """One line of events.jsonl: something a person watching the run should know, with its own fields."""
    t: str
    event: str
    message: str = ""
    extra: dict = field(default_factory=dict)  # step, and whatever else the event carries

    def to_dict(self) -> dict:
        return {"t": self.t, "event": self.event, "message": self.message, **self.extra}

    @property
    def step(self) -> int | None:
        return whole(self.extra.get("step"))

    @classmethod
    def from_dict(cls, row: Any) -> Event | None:
        if not isinstance(row, dict) or not isinstance(row.get("event"), str):
            return None
        extra = {k: v for k, v in row.items() if k not in ("t", "event", "message")}
        return cls(t=str(row.get("t") or ""), event=row["event"], message=str(row.get("message") or ""), extra=extra)
