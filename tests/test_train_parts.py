"""The parts the trainer hands its jobs to, each tested alone on real files: the reporter, the checkpointer, the
validator and the finisher."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from engine.config.loading import ModelConfig, load_mix, load_profile
from engine.files import read_json, read_jsonl
from engine.models.registry import build_model
from engine.runs.rundir import RunWriter, iter_checkpoints
from engine.train.checkpointer import Checkpointer
from engine.train.finish import Finisher
from engine.train.reporter import Reporter
from engine.train.validator import Validator


class Notes:
    def __init__(self):
        self.sent = []

    def send(self, kind, message):
        self.sent.append((kind, message))

    def close(self):
        self.sent.append(("closed", ""))


def reporter(tmp_path: Path, is_main: bool = True) -> Reporter:
    tmp_path.mkdir(parents=True, exist_ok=True)
    report = Reporter(RunWriter(tmp_path), is_main)
    report.notifier = Notes()
    return report


def tiny():
    torch.manual_seed(0)
    model = build_model(ModelConfig(n_layer=1, n_embd=16, n_head=2, context=16, vocab_size=64))
    return model, torch.optim.AdamW(model.parameters(), lr=1e-3)


def test_the_reporter_writes_status_and_events_on_rank_0_only_and_fails_in_one_line(tmp_path):
    report = reporter(tmp_path / "main")
    report.status(state="running", step=3)
    report.event("checkpoint", "saved step-3", step=3)
    report.fail("disk full; free space", step=4)
    assert read_json(tmp_path / "main" / "status.json")["state"] == "failed"
    assert read_json(tmp_path / "main" / "status.json")["error"] == "disk full; free space"
    assert [(e["event"], e["message"]) for e in read_jsonl(tmp_path / "main" / "events.jsonl")] == [
        ("checkpoint", "saved step-3"), ("error", "disk full; free space")]
    assert report.notifier.sent[-1] == ("failed", "disk full; free space")
    other = reporter(tmp_path / "rank1", is_main=False)
    other.status(state="running")
    other.event("checkpoint", "saved")
    assert list((tmp_path / "rank1").iterdir()) == []


def test_the_checkpointer_saves_and_restores_the_newest_checkpoint_that_loads(tmp_path):
    report = reporter(tmp_path)
    model, opt = tiny()
    saver = Checkpointer(tmp_path, keep=3, report=report, world=1)
    assert saver.restore(model, opt, torch.device("cpu")) == (None, [])  # nothing saved yet
    for step in (1, 2):
        saver.save(step, model, opt, {"draws": step}, {"tokens": step * 10}, "interval")
    assert saver.saved_step == 2 and [p.name for p in iter_checkpoints(tmp_path)] == ["step-00000002",
                                                                                        "step-00000001"]
    (path, state), skipped = saver.restore(model, opt, torch.device("cpu"))
    assert skipped == [] and path.name == "step-00000002" and state["tokens"] == 20 and state["loader"] == {"0": {"draws": 2}}
    (path / "model.safetensors").write_bytes(b"not a model")
    (path, state), skipped = saver.restore(model, opt, torch.device("cpu"))
    assert path.name == "step-00000001" and [p.name for p in skipped] == ["step-00000002"]
    assert any("step-00000002 skipped" in e["message"] for e in read_jsonl(tmp_path / "events.jsonl"))
    (path / "model.safetensors").write_bytes(b"not a model either")
    found, skipped = saver.restore(model, opt, torch.device("cpu"))
    assert found is None and [p.name for p in skipped] == ["step-00000001"]  # every one left failed


def test_the_validator_scores_the_same_held_out_windows_every_time(tmp_path, monkeypatch):
    from engine.data import prepare_mix, validation_lengths

    monkeypatch.setenv("SPARKNET_CACHE", str(tmp_path / "cache"))
    profile = load_profile("tiny-cpu", ["run.eval_tokens=2048"])
    mix = load_mix("demo")
    prepare_mix(mix, 20_000)
    model = build_model(profile.model)
    validator = Validator(profile, mix, torch.device("cpu"), use_bf16=False, lengths=validation_lengths(mix))
    first = validator.loss(model)
    assert first == validator.loss(model) and 0 < first < 2 * torch.log(torch.tensor(1024.0)).item()
    assert model.training  # handed back in training mode


def test_the_finisher_writes_a_whole_model_folder_and_ends_the_run_finished(tmp_path):
    report = reporter(tmp_path)
    profile = load_profile("tiny-cpu", ["run.final_eval=false"])
    model = build_model(profile.model)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "stale.txt").write_text("from an earlier finish")
    Finisher(tmp_path, profile, load_mix("demo").tokenizer, torch.device("cpu"), report, lambda: False).finish(
        model, step=7, loss=2.5)
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) >= ["config.json", "model.safetensors"]
    assert not (tmp_path / "model" / "stale.txt").exists() and not (tmp_path / ".model.tmp").exists()
    assert json.loads((tmp_path / "model" / "config.json").read_text())["n_layer"] == profile.model.n_layer
    assert read_json(tmp_path / "status.json")["state"] == "finished"
    assert read_jsonl(tmp_path / "events.jsonl")[-1]["message"] == "finished 7 steps, final loss 2.5000"


@pytest.mark.slow
def test_the_in_training_evaluation_runs_the_weights_uncompiled(monkeypatch, logs):
    """A run compiles its model for training; its evaluations run the same weights uncompiled, so the first
    evaluation builds no graph (a lazy compile there can exhaust a unified-memory machine). torch.compile's backend
    is swapped for dynamo's `eager` one: graphs are captured and counted as on a GPU, in seconds on a CPU."""
    from torch._dynamo.utils import counters

    from engine.cli.throughput import private_trainer
    from engine.config.loading import load_run_inputs

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kw: real_compile(model, backend="eager"))
    profile, mix = load_run_inputs("tiny-cpu", "demo", ["run.compile=true", "run.tokens=8192"])
    with private_trainer(profile, mix) as trainer:
        assert trainer.model is not trainer.raw_model  # training runs the compiled model
        for _ in range(2):
            trainer.train_step(1.0)
        graphs = counters["stats"]["unique_graphs"]
        assert graphs > 0
        figures = trainer.held_out(evaluate=True, wikitext=False)
        assert figures["val_loss"] > 0 and counters["stats"]["unique_graphs"] == graphs
        trainer.train_step(1.0)  # and training goes on with the graph it had
        assert counters["stats"]["unique_graphs"] == graphs


@pytest.mark.parametrize("how, code", [("SIGTERM", 115), ("SIGINT", 102), ("the STOP file", 100)])
def test_a_stop_inside_torch_compile_ends_the_process_without_raising_through_it(tmp_path, how, code):
    """While torch.compile works, an exception raised by a signal handler may land inside a callback its C++ code
    made into Python, and abort the process: `exit_now` ends it without raising anything (100 + the signal here)."""
    import subprocess
    import sys

    from cli_helpers import PROJECT, scaled

    stop_file = tmp_path / "STOP"
    script = (
        "import os, signal, sys, time\n"
        "from engine.train.interrupt import interruptible\n"
        f"stop = {str(stop_file)!r}\n"
        "with interruptible(lambda: os.path.exists(stop), poll_s=0.05, exit_now=lambda s: os._exit(100 + s)):\n"
        f"    how = {how!r}\n"
        "    if how.startswith('SIG'):\n"
        "        os.kill(os.getpid(), getattr(signal, how))\n"
        "    else:\n"
        "        open(stop, 'w').close()\n"
        "    time.sleep(30)\n"
        "sys.exit(1)\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=PROJECT, capture_output=True, text=True,
                          timeout=scaled(60))
    assert proc.returncode == code and proc.stderr == "", (proc.returncode, proc.stderr)
