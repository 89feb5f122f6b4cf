"""The thermal guard: ThermalWatch turns telemetry rows into warnings and pause/resume decisions, and
wait_while_hot holds the training loop while the guard says pause. Pure Python: no torch here."""

from __future__ import annotations

import time
from typing import Callable

from engine import SparkNetError
from engine.hardware.telemetry import TelemetrySampler
from engine.runs.records import SystemRow


def _c(temp: float) -> str:
    return f"{temp:.0f} C"


class ThermalWatch:
    """Thermal warnings and the pause/resume guard, fed one telemetry row at a time.

    warn_c: warn once per GPU when it reaches this temperature (0 = no warnings);
        warns again only after the GPU has cooled below warn_c - 2.
    pause_above_c: pause training once any GPU reaches this (0 = never pause).
    resume_below_c: resume once every GPU is below this (default pause_above_c - 5).
    GPUs whose temperature cannot be read are left out of every decision.
    """

    REARM_MARGIN_C = 2.0
    DEFAULT_RESUME_MARGIN_C = 5.0

    def __init__(self, warn_c: float, pause_above_c: float = 0, resume_below_c: float = 0):
        if warn_c < 0 or pause_above_c < 0 or resume_below_c < 0:
            raise SparkNetError("thermal guard: temperatures must be >= 0 (0 turns a threshold off)")
        if pause_above_c > 0:
            if resume_below_c <= 0:
                resume_below_c = pause_above_c - self.DEFAULT_RESUME_MARGIN_C
            if resume_below_c >= pause_above_c:
                raise SparkNetError(
                    f"thermal guard: resume_below_c ({resume_below_c:g}) must be below "
                    f"pause_above_c ({pause_above_c:g}) so the GPU can cool before training resumes"
                )
        self.warn_c = float(warn_c)
        self.pause_above_c = float(pause_above_c)
        self.resume_below_c = float(resume_below_c)
        self._warned: set[int] = set()
        self._paused = False

    @property
    def should_pause(self) -> bool:
        return self._paused

    def update(self, row: SystemRow) -> list[dict]:
        """Events caused by this row: warning (kind thermal), thermal_pause, thermal_resume."""
        events: list[dict] = []
        temps = [(g.index, g.temp_c) for g in row.gpus if g.temp_c is not None]

        if self.warn_c > 0:
            for index, temp in temps:
                if temp >= self.warn_c and index not in self._warned:
                    self._warned.add(index)
                    events.append({
                        "event": "warning",
                        "kind": "thermal",
                        "message": f"GPU {index} at {_c(temp)} (threshold {_c(self.warn_c)})",
                        "gpu": index,
                        "temp_c": temp,
                        "threshold_c": self.warn_c,
                    })
                elif temp < self.warn_c - self.REARM_MARGIN_C:
                    self._warned.discard(index)

        if self.pause_above_c > 0:
            if not self._paused:
                hot = [(i, t) for i, t in temps if t >= self.pause_above_c]
                if hot:
                    index, temp = max(hot, key=lambda r: r[1])
                    self._paused = True
                    events.append({
                        "event": "thermal_pause",
                        "kind": "thermal",
                        "message": (
                            f"GPU {index} at {_c(temp)} (limit {_c(self.pause_above_c)}): training paused "
                            f"until every GPU is below {_c(self.resume_below_c)}"
                        ),
                        "gpu": index,
                        "temp_c": temp,
                        "threshold_c": self.pause_above_c,
                    })
            elif all(t < self.resume_below_c for _, t in temps):
                self._paused = False
                hottest_c = max((t for _, t in temps), default=None)
                detail = f"hottest {_c(hottest_c)}" if hottest_c is not None else "no temperature readable"
                events.append({
                    "event": "thermal_resume",
                    "kind": "thermal",
                    "message": f"GPUs below {_c(self.resume_below_c)} ({detail}): training resumed",
                    "temp_c": hottest_c,
                    "threshold_c": self.resume_below_c,
                })
        return events


def wait_while_hot(
    watch: ThermalWatch,
    sampler: TelemetrySampler,
    on_event: Callable[[dict], None],
    stop_requested: Callable[[], bool],
    poll_s: float = 2.0,
) -> bool:
    """Block while the guard says pause, sampling every poll_s seconds.

    Returns True once the GPUs have cooled (or at once if not paused), False
    when stop_requested() turned true first. Events go to on_event.
    """
    while watch.should_pause:
        if stop_requested():
            return False
        time.sleep(poll_s)
        for event in watch.update(sampler.sample()):
            on_event(event)
    return True
