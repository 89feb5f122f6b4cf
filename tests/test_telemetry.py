import json
import sys
import threading
import time

import psutil
import pytest

from engine import SparkNetError
from engine.files import read_jsonl
from engine.hardware.telemetry import TelemetrySampler, throttle_reasons
from engine.hardware.thermal import ThermalWatch, wait_while_hot
from engine.runs.records import GpuSample, SystemRow
from engine.runs.rundir import RunWriter
from tests.fake_nvml import (
    CLOCKS_EVENT_HW_SLOWDOWN,
    CLOCKS_EVENT_HW_THERMAL,
    CLOCKS_EVENT_SW_POWER_CAP,
    CLOCKS_EVENT_SW_THERMAL,
    GIB,
    FakeNVML,
    OldFakeNVML,
)

GPU_KEYS = {"index", "name", "temp_c", "power_w", "util_pct", "sm_clock_mhz", "mem_used_b", "mem_total_b",
            "unified_memory", "mem_source", "throttle"}


def sampler_for(nvml, **kwargs) -> TelemetrySampler:
    return TelemetrySampler(lambda row: None, nvml=nvml, **kwargs)


def assert_cpu_fields(row):
    assert isinstance(row["t"], float) and abs(row["t"] - time.time()) < 5
    assert row["time"].endswith("Z") and row["time"][:4].isdigit()
    assert row["ram_total_b"] == psutil.virtual_memory().total
    assert 0 < row["ram_used_b"] <= row["ram_total_b"]
    assert 0 < row["ram_available_b"] <= row["ram_total_b"]
    assert row["run_rss_b"] == pytest.approx(psutil.Process().memory_info().rss, rel=0.5)  # this process's own


# --- sampling ---------------------------------------------------------------


def test_gb10_reports_readings_and_takes_memory_from_processes():
    nvml = FakeNVML.gb10()
    sampler = sampler_for(nvml)
    time.sleep(0.05)
    row = sampler.sample().to_dict()
    assert_cpu_fields(row)
    assert isinstance(row["cpu_pct"], float) and 0.0 <= row["cpu_pct"] <= 100.0
    (gpu,) = row["gpus"]
    assert set(gpu) == GPU_KEYS
    assert gpu["index"] == 0
    assert gpu["name"] == "NVIDIA GB10"
    assert gpu["temp_c"] == 62.0
    assert gpu["power_w"] == pytest.approx(45.3)
    assert gpu["util_pct"] == 97.0
    assert gpu["sm_clock_mhz"] == 2405
    assert gpu["throttle"] == []
    # NVML answered NOT_SUPPORTED for device memory: the process list fills in, no total is invented
    assert gpu["unified_memory"] is True
    assert gpu["mem_used_b"] == 3 * GIB + 512 * 1024**2
    assert gpu["mem_source"] == "processes"
    assert gpu["mem_total_b"] is None
    json.dumps(row)  # a row must be writable as JSON as is


def test_gb10_falls_back_to_torch_memory_when_processes_do_not_say():
    nvml = FakeNVML.gb10()
    nvml.devices[0].process_memory_b = [None]  # driver cannot attribute memory to the process
    asked = []

    def reserved(index):
        asked.append(index)
        return 7 * GIB

    (gpu,) = sampler_for(nvml, torch_memory=reserved).sample().to_dict()["gpus"]
    assert asked == [0]
    assert gpu["mem_used_b"] == 7 * GIB
    assert gpu["mem_source"] == "torch"
    assert gpu["mem_total_b"] is None
    assert gpu["unified_memory"] is True

    # with no fallback left, memory is unknown (null), never 0
    (gpu,) = sampler_for(nvml).sample().to_dict()["gpus"]
    assert gpu["mem_used_b"] is None and gpu["mem_source"] is None


def test_torch_memory_callback_that_fails_gives_null():
    nvml = FakeNVML.gb10()
    nvml.devices[0].process_memory_b = []

    def broken(index):
        raise RuntimeError("CUDA not initialised")

    (gpu,) = sampler_for(nvml, torch_memory=broken).sample().to_dict()["gpus"]
    assert gpu["mem_used_b"] is None


def test_h100_memory_comes_from_nvml():
    (gpu,) = sampler_for(FakeNVML.h100()).sample().to_dict()["gpus"]
    assert gpu["name"] == "NVIDIA H100 80GB HBM3"
    assert gpu["mem_used_b"] == 21 * GIB
    assert gpu["mem_total_b"] == 81_559 * 1024**2
    assert gpu["unified_memory"] is False
    assert gpu["mem_source"] == "nvml"
    assert gpu["power_w"] == pytest.approx(312.5)


def test_every_nvml_call_failing_gives_nulls_and_rows_are_still_written():
    nvml = FakeNVML.gb10()
    nvml.device_calls_fail = True
    rows = []
    sampler = TelemetrySampler(lambda row: rows.append(row.to_dict()), interval=0.05, nvml=nvml)
    sampler.start()
    time.sleep(0.12)
    sampler.stop()
    assert len(rows) >= 2
    for row in rows:
        assert_cpu_fields(row)
        (gpu,) = row["gpus"]
        assert gpu["index"] == 0
        assert all(gpu[k] is None for k in GPU_KEYS - {"index"}), gpu


def test_nvml_init_failure_gives_no_gpus_and_says_why():
    nvml = FakeNVML.gb10()
    nvml.init_fails = True
    sampler = sampler_for(nvml)
    row = sampler.sample().to_dict()
    assert row["gpus"] == []
    assert_cpu_fields(row)
    assert "Driver Not Loaded" in sampler.nvml_error
    sampler.sample()
    assert nvml.init_calls == 1  # a failed init is not retried every few seconds
    assert sampler.max_gpu_temp() is None


def test_missing_pynvml_gives_no_gpus(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    sampler = TelemetrySampler(lambda row: None)
    row = sampler.sample().to_dict()
    assert row["gpus"] == []
    assert_cpu_fields(row)
    assert "nvidia-ml-py" in sampler.nvml_error


def test_real_pynvml_through_the_default_path():
    import pynvml  # nvidia-ml-py is a dependency: it must import everywhere

    try:
        pynvml.nvmlInit()
        real_count = pynvml.nvmlDeviceGetCount()
        pynvml.nvmlShutdown()
    except pynvml.NVMLError:
        real_count = None  # no NVIDIA driver on this machine

    sampler = TelemetrySampler(lambda row: None)
    row = sampler.sample().to_dict()
    sampler.close()
    assert_cpu_fields(row)
    if real_count is None:
        assert row["gpus"] == []
        assert sampler.nvml_error.startswith("NVML unavailable")
    else:
        assert [g["index"] for g in row["gpus"]] == list(range(real_count))
        assert all(isinstance(g["name"], str) and g["temp_c"] is not None for g in row["gpus"])


def test_multi_gpu_and_gpu_indices():
    nvml = FakeNVML.gb10(count=2)
    nvml.set_temperature(1, 71)
    row = sampler_for(nvml).sample().to_dict()
    assert [g["index"] for g in row["gpus"]] == [0, 1]
    assert [g["temp_c"] for g in row["gpus"]] == [62.0, 71.0]

    sampler = sampler_for(nvml, gpu_indices=[1])
    row = sampler.sample().to_dict()
    assert [g["index"] for g in row["gpus"]] == [1]
    assert sampler.max_gpu_temp() == 71.0


def test_throttle_reasons():
    assert throttle_reasons(0) == []
    assert throttle_reasons(0x1) == []  # idle is not a slowdown
    assert throttle_reasons(CLOCKS_EVENT_SW_THERMAL) == ["thermal"]
    assert throttle_reasons(CLOCKS_EVENT_HW_THERMAL | CLOCKS_EVENT_HW_SLOWDOWN) == ["thermal"]
    assert throttle_reasons(CLOCKS_EVENT_SW_POWER_CAP | CLOCKS_EVENT_SW_THERMAL) == ["thermal", "power"]
    assert throttle_reasons(CLOCKS_EVENT_HW_SLOWDOWN) == ["hw_slowdown"]

    nvml = FakeNVML.h100()
    nvml.devices[0].clocks_event_mask = CLOCKS_EVENT_SW_POWER_CAP
    assert sampler_for(nvml).sample().to_dict()["gpus"][0]["throttle"] == ["power"]

    old = OldFakeNVML.h100()
    assert not hasattr(old, "nvmlDeviceGetCurrentClocksEventReasons")
    old.devices[0].clocks_event_mask = CLOCKS_EVENT_HW_THERMAL
    assert sampler_for(old).sample().to_dict()["gpus"][0]["throttle"] == ["thermal"]


def test_thread_writes_system_jsonl_until_stopped(tmp_path):
    run = RunWriter(tmp_path / "run")
    run.create("")
    nvml = FakeNVML.gb10()
    sampler = TelemetrySampler(run.system, interval=0.05, nvml=nvml)
    sampler.start()
    time.sleep(0.3)
    assert any(t.name == "sparknet-telemetry" for t in threading.enumerate())
    sampler.stop()
    assert not any(t.name == "sparknet-telemetry" for t in threading.enumerate())

    rows = read_jsonl(run.system_path)
    assert len(rows) >= 4  # first row at once, then every 0.05 s, then the final one
    assert all(r["gpus"][0]["name"] == "NVIDIA GB10" for r in rows)
    assert [r["t"] for r in rows] == sorted(r["t"] for r in rows)
    assert rows[-1] == sampler.latest().to_dict()
    assert nvml.shutdown_calls == 1

    size = run.system_path.stat().st_size
    time.sleep(0.15)
    assert run.system_path.stat().st_size == size  # nothing written after stop
    sampler.stop()  # a second stop is harmless
    assert nvml.shutdown_calls == 1


def test_a_failing_writer_does_not_end_the_thread():
    calls = []

    def flaky(row):
        calls.append(row)
        if len(calls) == 1:
            raise OSError("No space left on device")

    sampler = TelemetrySampler(flaky, interval=0.03, nvml=FakeNVML.gb10())
    sampler.start()
    time.sleep(0.15)
    sampler.stop()
    assert len(calls) >= 3
    assert isinstance(sampler.write_error, OSError)


# --- thermal guard ------------------------------------------------------------


def row_with(*temps):
    return SystemRow(gpus=[GpuSample(i, temp_c=t) for i, t in enumerate(temps)])


def test_thermal_warning_once_then_rearms():
    watch = ThermalWatch(warn_c=85)
    assert watch.update(row_with(80)) == []
    (event,) = watch.update(row_with(87))
    assert event["event"] == "warning" and event["kind"] == "thermal"
    assert event["message"] == "GPU 0 at 87 C (threshold 85 C)"
    assert event["gpu"] == 0 and event["temp_c"] == 87
    assert watch.update(row_with(88)) == []  # still hot: no repeat
    assert watch.update(row_with(84)) == []  # within the 2 C margin: not re-armed
    assert watch.update(row_with(86)) == []
    assert watch.update(row_with(82.5)) == []  # below 83: re-armed
    (event,) = watch.update(row_with(85))
    assert event["message"] == "GPU 0 at 85 C (threshold 85 C)"
    assert not watch.should_pause  # warnings never pause


def test_thermal_warning_per_gpu_and_unreadable_temps_ignored():
    watch = ThermalWatch(warn_c=85)
    events = watch.update(row_with(86, None))
    assert [e["gpu"] for e in events] == [0]
    events = watch.update(row_with(86, 90))
    assert [e["gpu"] for e in events] == [1]


def test_thermal_pause_and_resume_hysteresis():
    watch = ThermalWatch(warn_c=0, pause_above_c=90, resume_below_c=80)
    assert watch.update(row_with(89, 70)) == []
    assert not watch.should_pause

    (event,) = watch.update(row_with(70, 91))
    assert event["event"] == "thermal_pause" and event["gpu"] == 1
    assert "GPU 1 at 91 C" in event["message"] and "below 80 C" in event["message"]
    assert watch.should_pause

    assert watch.update(row_with(85, 92)) == []  # no repeated pause events
    assert watch.update(row_with(79, 85)) == []  # one GPU still above resume
    assert watch.should_pause
    assert watch.update(row_with(79, 80)) == []  # 80 is not below 80
    assert watch.should_pause

    (event,) = watch.update(row_with(79, 78))
    assert event["event"] == "thermal_resume"
    assert "hottest 79 C" in event["message"]
    assert not watch.should_pause
    assert watch.update(row_with(85, 85)) == []  # below the pause limit: keeps running


def test_thermal_resume_default_and_bad_settings():
    assert ThermalWatch(warn_c=85, pause_above_c=90).resume_below_c == 85
    with pytest.raises(SparkNetError, match="resume_below_c .*must be below pause_above_c"):
        ThermalWatch(warn_c=85, pause_above_c=90, resume_below_c=95)
    with pytest.raises(SparkNetError, match=">= 0"):
        ThermalWatch(warn_c=-1)


def test_wait_while_hot_returns_when_the_gpu_cools():
    nvml = FakeNVML.gb10()
    nvml.set_temperature(0, 93)
    sampler = sampler_for(nvml)
    watch = ThermalWatch(warn_c=85, pause_above_c=90, resume_below_c=80)
    events = []
    for e in watch.update(sampler.sample()):
        events.append(e)
    assert [e["event"] for e in events] == ["warning", "thermal_pause"]

    cool = threading.Timer(0.2, nvml.set_temperature, args=(0, 75))
    cool.start()
    started = time.monotonic()
    assert wait_while_hot(watch, sampler, events.append, stop_requested=lambda: False, poll_s=0.02) is True
    waited = time.monotonic() - started
    cool.join()
    assert 0.15 < waited < 2.0
    assert events[-1]["event"] == "thermal_resume"
    assert not watch.should_pause
    assert sampler.latest().to_dict()["gpus"][0]["temp_c"] == 75.0


def test_wait_while_hot_gives_way_to_a_stop_request():
    nvml = FakeNVML.gb10()
    nvml.set_temperature(0, 95)
    sampler = sampler_for(nvml)
    watch = ThermalWatch(warn_c=0, pause_above_c=90)
    watch.update(sampler.sample())
    polls = []

    def stop_after_three():
        polls.append(1)
        return len(polls) > 3

    assert wait_while_hot(watch, sampler, lambda e: None, stop_after_three, poll_s=0.01) is False
    assert watch.should_pause  # still hot: the caller checkpoints and stops
    assert len(polls) == 4


def test_wait_while_hot_returns_at_once_when_not_paused():
    watch = ThermalWatch(warn_c=85, pause_above_c=90)
    sampler = sampler_for(FakeNVML.gb10())
    started = time.monotonic()
    assert wait_while_hot(watch, sampler, lambda e: None, lambda: False, poll_s=5.0) is True
    assert time.monotonic() - started < 0.5
