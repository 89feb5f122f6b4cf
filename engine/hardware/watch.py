"""A run's view of its hardware: the telemetry sampler writing system.jsonl, and the thermal guard that pauses
training while the GPU is too hot."""

from __future__ import annotations

import logging
from typing import Callable

import torch

from engine.config.loading import ThermalConfig
from engine.runs.rundir import RunWriter

log = logging.getLogger("sparknet")


class HardwareWatch:
    def __init__(self, rd: RunWriter, device: torch.device, thermal: ThermalConfig,
                 on_event: Callable[..., None], set_status: Callable[..., None], stop_requested: Callable[[], bool]):
        self.rd, self.device, self.thermal_config = rd, device, thermal
        self.on_event, self.set_status, self.stop_requested = on_event, set_status, stop_requested
        self.sampler = None
        self.thermal = None

    def start(self) -> None:
        try:
            from engine.hardware.telemetry import TelemetrySampler, sample_interval_s
            from engine.hardware.thermal import ThermalWatch
        except ImportError:
            return
        index = self.device.index

        def torch_memory(i: int) -> int | None:
            return torch.cuda.memory_reserved(i) if i == index else None

        self.sampler = TelemetrySampler(self.rd.system, interval=sample_interval_s(),
                                        torch_memory=torch_memory if self.device.type == "cuda" else None)
        self.sampler.start()
        if self.sampler.nvml_error:
            log.info("GPU telemetry: %s", self.sampler.nvml_error)
        t = self.thermal_config
        self.thermal = ThermalWatch(t.warn_c, t.pause_above_c, t.resume_below_c)

    def _emit(self, ev: dict) -> None:
        self.on_event(ev.pop("event"), ev.pop("message", ""), **ev)

    def check(self) -> None:
        """Thermal events from the newest sample; blocks (status paused) while the guard says too hot."""
        if not (self.sampler and self.thermal):
            return
        row = self.sampler.latest()
        if row is None:
            return
        for ev in self.thermal.update(row):
            self._emit(ev)
        if self.thermal.should_pause:
            from engine.hardware.thermal import wait_while_hot

            self.set_status(paused="thermal")
            wait_while_hot(self.thermal, self.sampler, self._emit, self.stop_requested)
            self.set_status(paused=None)

    def stop(self) -> None:
        if self.sampler:
            self.sampler.stop()
