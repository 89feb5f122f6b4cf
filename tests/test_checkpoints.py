"""Checkpoints survive corruption: pruning keeps verified ones, bad ones go aside, loading falls back."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from cli_helpers import FAST, events, only_run, sparknet
from safetensors.torch import load_file

from engine.config.loading import ModelConfig
from engine.files import read_json
from engine.models.checkpoint import _sha256, load_latest_model, save_checkpoint
from engine.models.registry import build_model
from engine.runs.rundir import iter_checkpoints


def tiny_model():
    torch.manual_seed(0)
    model = build_model(ModelConfig(n_layer=1, n_embd=16, n_head=2, context=16, vocab_size=64))
    return model, torch.optim.AdamW(model.parameters(), lr=1e-3)


def corrupt(path: Path) -> None:
    data = bytearray((path / "model.safetensors").read_bytes())
    data[-10] ^= 0xFF
    (path / "model.safetensors").write_bytes(bytes(data))


def names(run_dir: Path) -> list[str]:
    return [p.name for p in iter_checkpoints(run_dir)]


def test_pruning_keeps_the_newest_verified_and_moves_corrupt_ones_aside(tmp_path):
    model, opt = tiny_model()
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, model, opt, {"tokens": step}, keep=3)
    corrupt(tmp_path / "checkpoints" / "step-00000003")
    corrupt(tmp_path / "checkpoints" / "step-00000002")
    heard = []
    save_checkpoint(tmp_path, 4, model, opt, {"tokens": 4}, keep=2, on_event=lambda *a: heard.append(a))
    # the two good ones are kept, the corrupt ones are neither counted nor deleted
    assert names(tmp_path) == ["step-00000004", "step-00000001"]
    aside = sorted(p.name for p in (tmp_path / "checkpoints" / "corrupt").iterdir())
    assert aside == ["step-00000002", "step-00000003"]
    assert "checksum" in (tmp_path / "checkpoints" / "corrupt" / "step-00000003" / "CORRUPT.txt").read_text()
    assert len(heard) == 2 and all(kind == "warning" for kind, _ in heard)


def test_with_every_checkpoint_corrupt_a_run_still_moves_on(tmp_path):
    model, opt = tiny_model()
    save_checkpoint(tmp_path, 1, model, opt, {"tokens": 1}, keep=1)
    corrupt(tmp_path / "checkpoints" / "step-00000001")
    save_checkpoint(tmp_path, 2, model, opt, {"tokens": 2}, keep=1)
    assert names(tmp_path) == ["step-00000002"]  # the one just written is never pruned
    save_checkpoint(tmp_path, 3, model, opt, {"tokens": 3}, keep=1)
    assert names(tmp_path) == ["step-00000003"]
    assert (tmp_path / "checkpoints" / "corrupt" / "step-00000001").is_dir()


def test_export_says_which_checkpoint_it_used_and_which_it_skipped(tmp_path):
    model, opt = tiny_model()
    for step in (5, 6):
        save_checkpoint(tmp_path, step, model, opt, {"tokens": step, "tokenizer": "gpt2"}, keep=3)
    corrupt(tmp_path / "checkpoints" / "step-00000006")
    lines = []
    _, _, step = load_latest_model(tmp_path, report=lines.append)
    assert step == 5
    assert lines[0].startswith("warning: skipped checkpoint step-00000006") and "checksum" in lines[0]
    assert lines[-1] == "using checkpoint step-00000005 (step 5)"


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.slow
def test_a_malicious_trainer_file_falls_back_to_the_checkpoint_before(logs):
    common = ["--profile", "tiny-cpu", *FAST, "--set", "run.tokens=16_384", "--set", "run.checkpoint_every=2"]
    sparknet("train", *common, "--set", "run.keep_checkpoints=3")
    run = only_run(logs)
    (run / "status.json").write_text(json.dumps(dict(read_json(run / "status.json"), state="stopped")))
    newest = next(iter_checkpoints(run))
    # a pickle that would run code, with state.json's checksum forged to match it
    (newest / "trainer.pt").write_bytes(pickle.dumps({"optimizer": Payload()}))
    state = json.loads((newest / "state.json").read_text())
    state["sha256"]["trainer.pt"] = _sha256(newest / "trainer.pt")
    (newest / "state.json").write_text(json.dumps(state))
    proc = sparknet("resume", str(run))
    assert "this must never run" not in proc.stdout + proc.stderr
    status = read_json(run / "status.json")
    assert status["state"] == "finished", status
    warnings = [e["message"] for e in events(run) if e["event"] == "warning" and newest.name in e["message"]]
    assert warnings and "weights_only" not in warnings[0] and "trainer.pt does not load" in warnings[0]
    assert (run / "checkpoints" / "corrupt" / newest.name).is_dir()


def restore(run_dir: Path):
    from engine.runs.rundir import RunWriter
    from engine.train.checkpointer import Checkpointer
    from engine.train.reporter import Reporter

    return Checkpointer(run_dir, 3, Reporter(RunWriter(run_dir), True), world=1).restore(*tiny_model(),
                                                                                     torch.device("cpu"))


def killed_before_the_new_name(monkeypatch, save) -> None:
    """`save()` dies (as a killed process does) when the finished temporary folder is about to get its name."""
    real_replace = os.replace

    def die_before_the_new_name(src, dst):
        if Path(src).name.startswith(".tmp-step"):
            raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", die_before_the_new_name)
    with pytest.raises(KeyboardInterrupt):
        save()
    monkeypatch.setattr(os, "replace", real_replace)


def test_a_crash_while_a_step_is_saved_again_loses_no_checkpoint(tmp_path, monkeypatch):
    """A memory stop's resume saves its step again; dying between the swap's two renames loses nothing: the next
    start takes the copy that was written whole, and clears the one renamed aside."""
    model, opt = tiny_model()
    save_checkpoint(tmp_path, 5, model, opt, {"tokens": 5}, keep=3)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    killed_before_the_new_name(monkeypatch, lambda: save_checkpoint(tmp_path, 5, model, opt, {"tokens": 5}, keep=3))
    found, skipped = restore(tmp_path)
    assert skipped == [] and found[0].name == "step-00000005" and found[1]["tokens"] == 5
    weights = load_file(str(tmp_path / "checkpoints" / "step-00000005" / "model.safetensors"))
    first = next(iter(model.state_dict()))
    assert torch.equal(weights[first], model.state_dict()[first])  # the copy written after the change
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-00000005"]


def test_a_checkpoint_written_whole_but_not_yet_named_is_resumed_from(tmp_path, monkeypatch):
    """Killed after the last fsync of step 9 and before its rename: the next start names it and resumes from it.
    A temporary folder that was not written whole goes, and the step before it stays."""
    model, opt = tiny_model()
    save_checkpoint(tmp_path, 5, model, opt, {"tokens": 5}, keep=3)
    killed_before_the_new_name(monkeypatch, lambda: save_checkpoint(tmp_path, 9, model, opt, {"tokens": 9}, keep=3))
    found, _ = restore(tmp_path)
    assert found[0].name == "step-00000009" and found[1]["tokens"] == 9
    killed_before_the_new_name(monkeypatch, lambda: save_checkpoint(tmp_path, 12, model, opt, {"tokens": 12},
                                                                     keep=3))
    cut = tmp_path / "checkpoints" / ".tmp-step-00000012" / "trainer.pt"
    cut.write_bytes(cut.read_bytes()[:100])  # the disk lost its tail: the checksum no longer matches
    found, _ = restore(tmp_path)
    assert found[0].name == "step-00000009"
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-00000005", "step-00000009"]
