"""TensorBoard event files beside metrics.jsonl, read back with TensorBoard's own reader."""

from __future__ import annotations

import dataclasses

import pytest
from cli_helpers import losses, only_run, sparknet
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from engine.files import read_jsonl
from engine.hardware.telemetry import TelemetrySampler
from engine.runs.records import MetricRow
from engine.train.tensorboard_log import TENSORBOARD_DIR, TensorBoardLog
from tests.fake_nvml import FakeNVML


def scalars(folder) -> dict[str, dict[int, float]]:
    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


@pytest.mark.slow
def test_a_run_writes_its_metrics_for_tensorboard_as_it_logs_them(logs):
    sparknet("train", "--profile", "tiny-cpu", "--set", "run.tensorboard=true", "--set", "run.tokens=40960",
             "--set", "run.log_every=2", "--set", "run.eval_every=10", "--set", "run.final_eval=false")
    run = only_run(logs)
    found = scalars(run / TENSORBOARD_DIR)
    rows = read_jsonl(run / "metrics.jsonl")
    assert found["train/loss"] == pytest.approx(losses(run), rel=1e-6)  # float32 in the event file
    assert found["val/loss"] == pytest.approx({r["step"]: r["val_loss"] for r in rows if "val_loss" in r}, rel=1e-6)
    assert set(found["val/loss"]) == {10, 20}
    assert found["train/lr"] == pytest.approx({r["step"]: r["lr"] for r in rows}, rel=1e-6)
    assert found["train/grad_norm"] == pytest.approx({r["step"]: r["grad_norm"] for r in rows}, rel=1e-6)
    rates = {r["step"]: r["tokens_per_s"] for r in rows if r["tokens_per_s"] is not None}
    assert found["speed/tokens_per_s"] == pytest.approx(rates, rel=1e-6)
    assert "speed/mfu" not in found  # a CPU has no peak to divide by: left out, never written as 0


@pytest.mark.slow
def test_without_the_switch_there_are_no_event_files(logs):
    sparknet("train", "--profile", "tiny-cpu", "--set", "run.tokens=4096", "--set", "run.final_eval=false")
    assert not (only_run(logs) / TENSORBOARD_DIR).exists()


def test_gpu_temperature_and_power_go_to_tensorboard_per_gpu(tmp_path):
    fake = FakeNVML.gb10(count=2)
    fake.devices[1].temp_c = 91
    log = TensorBoardLog(tmp_path, flush_secs=1)
    log.metric(MetricRow(step=7, loss=3.0))
    sampler = TelemetrySampler(log.system, nvml=fake)
    row = dataclasses.replace(sampler.sample(), cpu_pct=150.0)  # a CPU figure needs a window of readings
    log.system(row)
    row = row.to_dict()
    log.close()
    found = scalars(tmp_path / TENSORBOARD_DIR)
    assert found["gpu0/temp_c"] == {7: 62} and found["gpu1/temp_c"] == {7: 91}  # stamped with the latest step
    assert found["gpu0/power_w"] == {7: pytest.approx(row["gpus"][0]["power_w"])}
    assert found["host/cpu_pct"][7] == pytest.approx(row["cpu_pct"])
