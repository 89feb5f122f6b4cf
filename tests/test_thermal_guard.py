"""The engine's thermal guard in a real (tiny) training run, with a fake GB10 behind the real NVML code path."""

import sys
import threading

import pytest
from cli_helpers import scaled

from engine.config.loading import load_mix, load_profile
from engine.files import read_json, read_jsonl, wait_for
from engine.runs.rundir import create_run
from engine.train.trainer import Trainer
from tests.fake_nvml import FakeNVML


@pytest.mark.slow
def test_training_pauses_while_hot_and_resumes_when_cool(logs, monkeypatch):
    fake = FakeNVML.gb10()
    fake.set_temperature(0, 93.0)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setenv("SPARKNET_TELEMETRY_INTERVAL", "0.05")
    profile = load_profile("tiny-cpu", ["batch.grad_accum=1", "run.tokens=8192", "run.log_every=1",
                                        "run.final_eval=false", "thermal.warn_c=85", "thermal.pause_above_c=90",
                                        "thermal.resume_below_c=75"])
    run = create_run(profile, load_mix("demo"), [], logs / "hot").run_dir
    seen_paused = []

    def cool_down_once_paused():
        if wait_for(lambda: (read_json(run / "status.json") or {}).get("paused") == "thermal", scaled(120), 0.05):
            seen_paused.append(read_json(run / "status.json")["step"])
            fake.set_temperature(0, 60.0)

    cooler = threading.Thread(target=cool_down_once_paused)
    cooler.start()
    trainer = Trainer(run, resume=False)
    trainer.setup()
    assert trainer.run() == 0
    cooler.join()

    assert seen_paused, "the run never paused"
    status = read_json(run / "status.json")
    assert status["state"] == "finished" and status.get("paused") is None
    events = [e["event"] for e in read_jsonl(run / "events.jsonl")]
    assert "thermal_pause" in events and "thermal_resume" in events
    assert events.index("thermal_pause") < events.index("thermal_resume") < events.index("finished")
    warnings = [e for e in read_jsonl(run / "events.jsonl") if e["event"] == "warning" and e.get("kind") == "thermal"]
    assert warnings and "93" in warnings[0]["message"]
    gpus = [row["gpus"][0] for row in read_jsonl(run / "system.jsonl") if row["gpus"]]
    assert gpus and gpus[0]["name"] == "NVIDIA GB10" and gpus[0]["unified_memory"] is True
    assert gpus[0]["mem_total_b"] is None
