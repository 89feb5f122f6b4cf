"""A stand-in for the pynvml module (nvidia-ml-py), for machines without a GPU.

It exposes only the NVML functions engine.telemetry calls, with values a
DGX Spark (GB10) reports: memory queries answer NOT_SUPPORTED because the GPU
shares system memory. Knobs: per-device temperature, every device call
failing, nvmlInit failing, several devices, and an H100-like device whose
memory NVML does report.
"""

from __future__ import annotations

from types import SimpleNamespace

NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_UNKNOWN = 999

NVML_TEMPERATURE_GPU = 0
NVML_CLOCK_SM = 1

CLOCKS_EVENT_SW_POWER_CAP = 0x4
CLOCKS_EVENT_HW_SLOWDOWN = 0x8
CLOCKS_EVENT_SW_THERMAL = 0x20
CLOCKS_EVENT_HW_THERMAL = 0x40

GIB = 1024**3


class NVMLError(Exception):
    """Like pynvml.NVMLError: carries the NVML return code in .value."""

    _names = {
        NVML_ERROR_UNINITIALIZED: "Uninitialized",
        NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
        NVML_ERROR_NOT_SUPPORTED: "Not Supported",
        NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
        NVML_ERROR_UNKNOWN: "Unknown Error",
    }

    def __init__(self, value: int):
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return self._names.get(self.value, f"NVML Error with code {self.value}")


class FakeDevice:
    def __init__(self, name: str, temp_c: float, power_mw: int, util_pct: int, sm_clock_mhz: int,
                 memory_total_b: int | None, memory_used_b: int | None, process_memory_b: list[int | None]):
        self.name = name
        self.temp_c = temp_c
        self.power_mw = power_mw
        self.util_pct = util_pct
        self.sm_clock_mhz = sm_clock_mhz
        self.memory_total_b = memory_total_b  # None: memory queries answer NOT_SUPPORTED
        self.memory_used_b = memory_used_b
        self.process_memory_b = process_memory_b  # usedGpuMemory per compute process
        self.clocks_event_mask = 0


class FakeNVML:
    """Module-like object: pass it as TelemetrySampler(nvml=FakeNVML.gb10())."""

    NVMLError = NVMLError
    NVML_ERROR_NOT_SUPPORTED = NVML_ERROR_NOT_SUPPORTED
    NVML_TEMPERATURE_GPU = NVML_TEMPERATURE_GPU
    NVML_CLOCK_SM = NVML_CLOCK_SM

    def __init__(self, devices: list[FakeDevice]):
        self.devices = devices
        self.init_fails = False  # nvmlInit raises DRIVER_NOT_LOADED, like a machine without a GPU driver
        self.device_calls_fail = False  # every nvmlDevice* call except the count raises UNKNOWN
        self.initialized = False
        self.init_calls = 0
        self.shutdown_calls = 0

    @classmethod
    def gb10(cls, count: int = 1) -> "FakeNVML":
        """DGX Spark: unified memory, so NVML reports no device memory."""
        return cls([
            FakeDevice("NVIDIA GB10", 62, 45_300, 97, 2405, None, None, [3 * GIB + 512 * 1024**2])
            for _ in range(count)
        ])

    @classmethod
    def h100(cls, count: int = 1) -> "FakeNVML":
        """A discrete GPU whose memory NVML reports."""
        return cls([
            FakeDevice("NVIDIA H100 80GB HBM3", 55, 312_500, 88, 1980, 81_559 * 1024**2, 21 * GIB, [20 * GIB])
            for _ in range(count)
        ])

    def set_temperature(self, index: int, temp_c: float) -> None:
        self.devices[index].temp_c = temp_c

    # --- the NVML functions engine.telemetry calls ------------------------

    def nvmlInit(self) -> None:
        self.init_calls += 1
        if self.init_fails:
            raise NVMLError(NVML_ERROR_DRIVER_NOT_LOADED)
        self.initialized = True

    def nvmlShutdown(self) -> None:
        self._check()
        self.shutdown_calls += 1
        self.initialized = False

    def nvmlDeviceGetCount(self) -> int:
        self._check()
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeDevice:
        self._check_device()
        if not 0 <= index < len(self.devices):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return self.devices[index]

    def nvmlDeviceGetName(self, handle: FakeDevice) -> str:
        self._check_device()
        return handle.name

    def nvmlDeviceGetTemperature(self, handle: FakeDevice, sensor: int) -> int:
        self._check_device()
        if sensor != NVML_TEMPERATURE_GPU:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return handle.temp_c

    def nvmlDeviceGetPowerUsage(self, handle: FakeDevice) -> int:
        self._check_device()
        return handle.power_mw

    def nvmlDeviceGetUtilizationRates(self, handle: FakeDevice) -> SimpleNamespace:
        self._check_device()
        return SimpleNamespace(gpu=handle.util_pct, memory=0)

    def nvmlDeviceGetClockInfo(self, handle: FakeDevice, clock_type: int) -> int:
        self._check_device()
        if clock_type != NVML_CLOCK_SM:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return handle.sm_clock_mhz

    def nvmlDeviceGetMemoryInfo(self, handle: FakeDevice, version: int | None = None) -> SimpleNamespace:
        # v1 and v2 (version given) alike answer NOT_SUPPORTED on unified memory
        self._check_device()
        if handle.memory_total_b is None:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        free = handle.memory_total_b - handle.memory_used_b
        return SimpleNamespace(total=handle.memory_total_b, used=handle.memory_used_b, free=free)

    def nvmlDeviceGetComputeRunningProcesses(self, handle: FakeDevice) -> list[SimpleNamespace]:
        self._check_device()
        return [SimpleNamespace(pid=4000 + i, usedGpuMemory=used) for i, used in enumerate(handle.process_memory_b)]

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: FakeDevice) -> int:
        self._check_device()
        return handle.clocks_event_mask

    # --- helpers ----------------------------------------------------------

    def _check(self) -> None:
        if not self.initialized:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)

    def _check_device(self) -> None:
        self._check()
        if self.device_calls_fail:
            raise NVMLError(NVML_ERROR_UNKNOWN)


class OldFakeNVML(FakeNVML):
    """An older nvidia-ml-py that knows only the ClocksThrottleReasons name."""

    def __getattribute__(self, name: str):
        if name == "nvmlDeviceGetCurrentClocksEventReasons":
            raise AttributeError(name)
        return super().__getattribute__(name)

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: FakeDevice) -> int:
        self._check_device()
        return handle.clocks_event_mask
