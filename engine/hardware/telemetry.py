"""System telemetry (CPU, RAM, every GPU of the node) and the thermal guard.

A TelemetrySampler runs as a daemon thread inside the training process and
hands one row every few seconds to a writer (normally RunWriter.system, which
appends to system.jsonl). GPU figures come from NVML through the
`nvidia-ml-py` package (import name `pynvml`); every NVML call may fail, and
a value the hardware does not give is recorded as null, never as 0.

On unified-memory GPUs (DGX Spark / GB10) NVML answers NOT_SUPPORTED for
device memory. Then mem_used_b is the sum of the GPU memory of the processes
NVML lists (or, failing that, what the trainer reports through its
`torch_memory` callback), mem_total_b stays null, and unified_memory is true:
a percentage against a total NVML never gave would be invented.

The thermal guard that reads these rows is engine.hardware.thermal.

Pure Python apart from psutil and the optional pynvml: no torch here.
"""

from __future__ import annotations

import math
import os
import threading
import time
from typing import Any, Callable

import psutil

from engine import SparkNetError
from engine.files import utc_now
from engine.runs.records import GpuSample, SystemRow

# Constants of the NVML C API (stable ABI values), written out so that any
# module exposing the NVML functions (pynvml, or a stand-in) is enough.
NVML_ERROR_NOT_SUPPORTED = 3
NVML_TEMPERATURE_GPU = 0
NVML_CLOCK_SM = 1

# Clock event ("throttle") reason bits, from nvml.h.
_REASON_SW_POWER_CAP = 0x4
_REASON_HW_SLOWDOWN = 0x8
_REASON_SW_THERMAL = 0x20
_REASON_HW_THERMAL = 0x40
_REASON_HW_POWER_BRAKE = 0x80

_MIN_CPU_WINDOW_S = 0.02


INTERVAL_ENV, DEFAULT_INTERVAL_S = "SPARKNET_TELEMETRY_INTERVAL", 5.0


def sample_interval_s() -> float:
    """Seconds between two rows of system.jsonl: SPARKNET_TELEMETRY_INTERVAL, else 5."""
    text = os.environ.get(INTERVAL_ENV, "").strip()
    if not text:
        return DEFAULT_INTERVAL_S
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise SparkNetError(f"{INTERVAL_ENV}={text!r} is not a number of seconds above 0; set one such as 1, or "
                            f"unset it for {DEFAULT_INTERVAL_S:g}")
    return seconds


def throttle_reasons(mask: int) -> list[str]:
    """Short names of the slowdowns active in an NVML clock-event bit mask.

    Idle, application-clock and sync-boost bits are left out: they do not
    slow a busy GPU down against its will.
    """
    names = []
    if mask & (_REASON_SW_THERMAL | _REASON_HW_THERMAL):
        names.append("thermal")
    if mask & (_REASON_SW_POWER_CAP | _REASON_HW_POWER_BRAKE):
        names.append("power")
    # NVML sets the generic hardware-slowdown bit alongside hw thermal and hw
    # power brake; name it only when neither of those explains it.
    if mask & _REASON_HW_SLOWDOWN and not mask & (_REASON_HW_THERMAL | _REASON_HW_POWER_BRAKE):
        names.append("hw_slowdown")
    return names


def _is_not_supported(error: Exception) -> bool:
    return getattr(error, "value", None) == NVML_ERROR_NOT_SUPPORTED


class TelemetrySampler:
    """Samples CPU, RAM and every GPU NVML sees; optionally writes a row every `interval` seconds.

    write_row: receives each row the thread produces (e.g. RunWriter.system).
    nvml: a module with the NVML functions; None imports pynvml on first use.
    gpu_indices: limit the GPUs sampled (default: all devices NVML sees).
    torch_memory: index -> bytes reserved by this process (torch.cuda.memory_reserved),
        the last fallback for mem_used_b when NVML reports no device memory.
    """

    def __init__(
        self,
        write_row: Callable[[SystemRow], None],
        interval: float = 5.0,
        nvml: Any = None,
        gpu_indices: list[int] | None = None,
        torch_memory: Callable[[int], int | None] | None = None,
    ):
        if interval <= 0:
            raise SparkNetError(f"telemetry interval must be positive seconds, got {interval}")
        self.write_row = write_row
        self.interval = float(interval)
        self.gpu_indices = list(gpu_indices) if gpu_indices is not None else None
        self.torch_memory = torch_memory
        # why GPU telemetry is unavailable (one line), None while it works
        self.nvml_error: str | None = None
        # the last exception raised by write_row in the thread, if any
        self.write_error: Exception | None = None

        self._nvml = nvml
        self._nvml_state = "new"  # new | ready | failed | shut
        self._handles: dict[int, Any] = {}
        self._sample_lock = threading.Lock()
        self._latest_lock = threading.Lock()
        self._latest: SystemRow | None = None
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None

        # psutil measures CPU use between two calls; this first call starts the window
        psutil.cpu_percent(interval=None)
        self._cpu_window_start = time.monotonic()

    # --- sampling ---------------------------------------------------------

    def sample(self) -> SystemRow:
        """One telemetry row (nothing is written). Never raises for hardware trouble."""
        with self._sample_lock:
            vm = psutil.virtual_memory()
            # total - available counts page cache as free, which is what matters on a unified-memory machine
            # where the GPU shares RAM
            row = SystemRow(t=time.time(), time=utc_now(), cpu_pct=self._cpu_pct(),
                            ram_used_b=int(vm.total - vm.available), ram_total_b=int(vm.total),
                            ram_available_b=int(vm.available), run_rss_b=self._run_rss(),
                            gpus=[self._sample_gpu(i) for i in self._gpu_list()])
        with self._latest_lock:
            self._latest = row
        return row

    @staticmethod
    def _run_rss() -> int | None:
        """Resident memory of this process (the sampler runs inside the trainer): the run's own RAM."""
        try:
            return int(psutil.Process().memory_info().rss)
        except (psutil.Error, OSError):
            return None

    def _cpu_pct(self) -> float | None:
        now = time.monotonic()
        if now - self._cpu_window_start < _MIN_CPU_WINDOW_S:
            return None  # too short a window to mean anything; keep it open
        self._cpu_window_start = now
        return float(psutil.cpu_percent(interval=None))

    def _init_nvml(self) -> bool:
        if self._nvml_state == "ready":
            return True
        if self._nvml_state in ("failed", "shut"):
            return False
        if self._nvml is None:
            try:
                import pynvml
            except ImportError:
                self._nvml_state = "failed"
                self.nvml_error = "pynvml is not installed (pip install nvidia-ml-py): no GPU telemetry"
                return False
            self._nvml = pynvml
        try:
            self._nvml.nvmlInit()
        except Exception as e:
            self._nvml_state = "failed"
            self.nvml_error = f"NVML unavailable ({e}): no GPU telemetry"
            return False
        self._nvml_state = "ready"
        return True

    def _gpu_list(self) -> list[int]:
        if not self._init_nvml():
            return []
        if self.gpu_indices is not None:
            return self.gpu_indices
        try:
            return list(range(int(self._nvml.nvmlDeviceGetCount())))
        except Exception as e:
            self.nvml_error = f"NVML could not count GPUs ({e})"
            return []

    def _call(self, fn_name: str, *args: Any) -> Any:
        """An NVML call, or None when it fails."""
        try:
            return getattr(self._nvml, fn_name)(*args)
        except Exception:
            return None

    def _handle(self, index: int) -> Any:
        if index not in self._handles:
            handle = self._call("nvmlDeviceGetHandleByIndex", index)
            if handle is None:
                return None  # try again next sample
            self._handles[index] = handle
        return self._handles[index]

    def _sample_gpu(self, index: int) -> GpuSample:
        gpu = GpuSample(index)
        h = self._handle(index)
        if h is None:
            gpu.mem_used_b, gpu.mem_source = self._torch_memory(index)
            return gpu

        name = self._call("nvmlDeviceGetName", h)
        gpu.name = name.decode("utf-8", "replace") if isinstance(name, bytes) else name
        temp = self._call("nvmlDeviceGetTemperature", h, NVML_TEMPERATURE_GPU)
        gpu.temp_c = float(temp) if temp is not None else None
        milliwatts = self._call("nvmlDeviceGetPowerUsage", h)
        gpu.power_w = milliwatts / 1000.0 if milliwatts is not None else None
        util = self._call("nvmlDeviceGetUtilizationRates", h)
        gpu.util_pct = float(util.gpu) if util is not None else None
        clock = self._call("nvmlDeviceGetClockInfo", h, NVML_CLOCK_SM)
        gpu.sm_clock_mhz = int(clock) if clock is not None else None
        gpu.throttle = self._throttle(h)
        self._fill_memory(gpu, index, h)
        return gpu

    def _throttle(self, handle: Any) -> list[str] | None:
        # ClocksEvent is the current name; ClocksThrottle the one older
        # drivers and older nvidia-ml-py releases know.
        for fn_name in ("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons"):
            if not hasattr(self._nvml, fn_name):
                continue
            mask = self._call(fn_name, handle)
            if mask is not None:
                return throttle_reasons(int(mask))
        return None

    def _fill_memory(self, gpu: GpuSample, index: int, handle: Any) -> None:
        try:
            info = self._nvml.nvmlDeviceGetMemoryInfo(handle)
        except Exception as e:
            if _is_not_supported(e):
                gpu.unified_memory = True
            gpu.mem_used_b, gpu.mem_source = self._process_memory(index, handle)
            return
        gpu.mem_used_b, gpu.mem_total_b = int(info.used), int(info.total)
        gpu.unified_memory, gpu.mem_source = False, "nvml"

    def _process_memory(self, index: int, handle: Any) -> tuple[int | None, str | None]:
        processes = self._call("nvmlDeviceGetComputeRunningProcesses", handle)
        # usedGpuMemory is None where the driver cannot tell; an empty list
        # inside a container usually means NVML cannot see the processes,
        # not that none uses the GPU.
        known = [p.usedGpuMemory for p in processes or [] if getattr(p, "usedGpuMemory", None) is not None]
        if known:
            return int(sum(known)), "processes"
        return self._torch_memory(index)

    def _torch_memory(self, index: int) -> tuple[int | None, str | None]:
        if self.torch_memory is None:
            return None, None
        try:
            used = self.torch_memory(index)
        except Exception:
            return None, None
        return (int(used), "torch") if used is not None else (None, None)

    # --- the thread -------------------------------------------------------

    def start(self) -> None:
        """Start the sampling thread: one row at once, then one every `interval` seconds."""
        if self._thread is not None:
            return
        self._stop_event.clear()
        self._thread = threading.Thread(target=self._run, name="sparknet-telemetry", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            self._write(self.sample())
            if self._stop_event.wait(self.interval):
                return

    def _write(self, row: SystemRow) -> None:
        try:
            self.write_row(row)
        except Exception as e:
            # a full disk must not kill the training run through its telemetry
            self.write_error = e

    def stop(self) -> None:
        """Stop the thread, write one final row, release NVML. Safe to call twice."""
        if self._thread is None:
            self.close()
            return
        self._stop_event.set()
        self._thread.join()
        self._thread = None
        self._write(self.sample())
        self.close()

    def close(self) -> None:
        """Release NVML (after this, samples carry CPU and RAM only)."""
        with self._sample_lock:
            if self._nvml_state == "ready":
                try:
                    self._nvml.nvmlShutdown()
                except Exception:
                    pass
            if self._nvml_state != "failed":
                self._nvml_state = "shut"
            self._handles.clear()

    # --- readers ----------------------------------------------------------

    def latest(self) -> SystemRow | None:
        """The most recent row sampled (by the thread or by sample())."""
        with self._latest_lock:
            return self._latest

    def max_gpu_temp(self) -> float | None:
        row = self.latest()
        if row is None:
            return None
        return hottest(row)[1]


def hottest(row: SystemRow) -> tuple[int | None, float | None]:
    """(index, temperature) of the hottest GPU in a row; (None, None) when no GPU reports one."""
    readings = [(g.index, g.temp_c) for g in row.gpus if g.temp_c is not None]
    if not readings:
        return None, None
    return max(readings, key=lambda r: r[1])
