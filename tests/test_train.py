"""The training engine end to end on CPU: real runs of the tiny-cpu profile through the real CLI."""

import json
import os
import re
import signal
import subprocess
import sys

import pytest
import torch
from cli_helpers import FAST, PROJECT, losses, only_run, reaches_step, scaled, sparknet

from engine.files import read_json, read_jsonl, wait_for
from engine.runs.rundir import effective_status


@pytest.mark.long
@pytest.mark.slow
def test_tiny_cpu_learns_standin_text(logs, corpora_mix):
    sparknet("train", "--profile", "tiny-cpu", "--mix", str(corpora_mix), *FAST, "--set", "model.vocab_size=50257",
             "--set", "batch.micro_batch=4", "--set", "run.tokens=20_480", "--set", "run.eval_every=20",
             "--set", "optim.lr=6e-3")
    run = only_run(logs)
    status = read_json(run / "status.json")
    assert status["state"] == "finished", status
    rows = read_jsonl(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 41))
    val = [r["val_loss"] for r in rows if "val_loss" in r]
    assert rows[0]["loss"] > 10.0  # starts near ln(50257) = 10.8
    # 40 steps of 512 tokens: nearly 3 nats under a uniform guess and under a unigram model fit to the 20,480
    # tokens seen (8.23 on the mix's held-out windows; one fit to the whole mix scores 7.46). 7.91 with one thread here.
    assert val[-1] < 8.0 and val[-1] < val[0], val
    for r in rows:
        assert r["tokens"] == r["step"] * 512 and r["lr"] > 0 and r["grad_norm"] > 0 and r["tokens_per_s"] > 0
        assert r["mfu"] is None  # no published peak for a CPU
    events = [e["event"] for e in read_jsonl(run / "events.jsonl")]
    assert events[0] == "created" and "started" in events and events[-1] == "finished"
    data_line = next(e["message"] for e in read_jsonl(run / "events.jsonl") if e["event"] == "data")
    assert re.fullmatch(r"textbooks [\d,]+ tokens \(whole\), [\d.e-]+ passes; web .*; educational .*", data_line)
    # the final model loads in transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(run / "model")
    assert model.config.n_layer == 2
    assert AutoTokenizer.from_pretrained(run / "model")("Hello world")["input_ids"] == [15496, 995]
    run_toml = (run / "run.toml").read_text()
    assert 'profile_name = "tiny-cpu"' in run_toml and "run.tokens=20_480" in run_toml


@pytest.mark.slow
def test_detached_run_survives_parent_and_reports_in_runs(logs):
    # the parent shell exits as soon as train --detach returns
    parent = subprocess.run(["bash", "-c", f"{sys.executable} -m engine.cli train --profile tiny-cpu "
                             f"--set run.tokens=40_960 {' '.join(FAST)} --detach"], cwd=PROJECT,
                            capture_output=True, text=True, timeout=scaled(60))
    assert parent.returncode == 0, parent.stderr
    run_id = parent.stdout.strip().splitlines()[-1]
    run = logs / run_id
    assert run.is_dir()
    assert wait_for(lambda: (read_json(run / "status.json") or {}).get("state") == "running", scaled(120))
    pid = read_json(run / "status.json")["pid"]
    assert os.getsid(pid) != os.getsid(0)  # its own process session, not the terminal's
    table = sparknet("runs").stdout
    assert run_id in table and "running" in table
    assert wait_for(lambda: effective_status(run)["state"] == "finished", scaled(240), 0.5), effective_status(run)
    log = (run / "train.log").read_text()
    assert re.search(r"step 40/40 loss [\d.]+ .* tok/s.* elapsed \d+s eta 0s\n", log), log[-500:]
    assert re.search(r"step 20/40 .* elapsed \d+s eta \d+s\n", log)  # a time left while it runs
    import pandas as pd

    frame = pd.read_json(run / "metrics.jsonl", lines=True)  # as the README says
    assert list(frame["step"]) == list(range(1, 41)) and frame["loss"].notna().all()
    assert frame["val_loss"].notna().sum() == 4 and {"lr", "grad_norm", "tokens_per_s"} <= set(frame.columns)


@pytest.mark.slow
def test_a_crashed_run_says_it_crashed_and_where(logs):
    # a segmentation fault in a library (torch's compiler has been seen to crash so) kills the process at once
    run_id = sparknet("train", "--profile", "tiny-cpu", "--set", "run.tokens=400_000", *FAST,
                      "--detach").stdout.strip().splitlines()[-1]
    run = logs / run_id
    assert reaches_step(run, 1)
    os.kill(read_json(run / "status.json")["pid"], signal.SIGSEGV)
    assert wait_for(lambda: effective_status(run)["state"] == "failed", scaled(60), 0.1)
    error = effective_status(run)["error"]
    assert "crashed (Segmentation fault); train.log holds where" in error, error
    log = (run / "train.log").read_text()
    assert "Fatal Python error: Segmentation fault" in log and 'File "' in log.split("Fatal Python error")[1]
    assert re.search(rf"{run_id}\s+failed", sparknet("runs").stdout)
    with open(run / "train.log", "a") as f:  # a later process (a resume) has logged since: the crash was not its
        f.write("12:00:00 started: training 391 steps of 1024 tokens on cpu\n")
    assert "ended without saying so" in effective_status(run)["error"]


def test_stale_pid_shows_as_failed(logs):
    run = logs / "20260101-000000-ghost"
    run.mkdir()
    (run / "run.toml").write_text('run_id = "ghost"\nprofile_name = "tiny-cpu"\n')
    dead = subprocess.Popen(["true"])
    dead.wait()
    (run / "status.json").write_text(json.dumps({"state": "running", "pid": dead.pid, "step": 3}))
    assert effective_status(run)["state"] == "failed"
    assert "ended without saying so" in effective_status(run)["error"]
    assert "failed" in sparknet("runs").stdout


@pytest.mark.slow
def test_stop_and_resume_match_straight_run(logs):
    common = ["--profile", "tiny-cpu", *FAST, "--set", "run.tokens=30_720", "--set", "run.checkpoint_every=4"]
    sparknet("train", "--name", "straight", *common)
    straight = losses(next(logs.glob("*-straight")))
    assert len(straight) == 30

    run_id = sparknet("train", "--name", "stopped", *common, "--detach").stdout.strip().splitlines()[-1]
    run = logs / run_id
    assert reaches_step(run, 9)
    out = sparknet("stop", run_id).stdout
    assert "stopped" in out
    status = read_json(run / "status.json")
    stopped_at = status["step"]
    assert status["state"] == "stopped" and 9 <= stopped_at < 30
    assert (run / "checkpoints" / f"step-{stopped_at:08d}").is_dir()
    with pytest.raises(AssertionError, match="is stopped, not running"):
        sparknet("stop", run_id)
    sparknet("resume", run_id)
    assert read_json(run / "status.json")["state"] == "finished"
    resumed = losses(run)
    assert sorted(resumed) == list(range(1, 31))
    # same data order, optimizer state and schedule: the same losses, up to float32 summation noise
    for step in range(1, 31):
        assert resumed[step] == pytest.approx(straight[step], abs=2e-3), (step, resumed[step], straight[step])
    with pytest.raises(AssertionError, match="already finished"):
        sparknet("resume", run_id)


@pytest.mark.slow
def test_corrupt_newest_checkpoint_falls_back(logs):
    common = ["--profile", "tiny-cpu", *FAST, "--set", "run.tokens=40_960", "--set", "run.checkpoint_every=3",
              "--set", "run.keep_checkpoints=5"]
    run_id = sparknet("train", *common, "--detach").stdout.strip().splitlines()[-1]
    run = logs / run_id
    assert reaches_step(run, 7)
    sparknet("stop", run_id)
    cks = sorted((run / "checkpoints").glob("step-*"))
    assert len(cks) >= 2
    newest, previous = cks[-1], cks[-2]
    data = (newest / "model.safetensors").read_bytes()
    (newest / "model.safetensors").write_bytes(data[: len(data) // 2])  # truncated
    sparknet("resume", run_id)
    events = read_jsonl(run / "events.jsonl")
    skipped = [e for e in events if e["event"] == "warning" and newest.name in e["message"]]
    assert skipped and "truncated or corrupt" in skipped[0]["message"]
    resumed = [e for e in events if e["event"] == "resumed"]
    assert resumed[-1]["step"] == int(previous.name.split("-")[1])
    assert read_json(run / "status.json")["state"] == "finished"


@pytest.mark.slow
def test_nan_guard_fails_run_and_keeps_good_checkpoint(logs):
    proc = sparknet("train", "--profile", "tiny-cpu", *FAST, "--set", "run.tokens=40_960", "--set",
                    "run.checkpoint_every=2", "--set", "optim.lr=1e30", "--set", "optim.min_lr=0", "--set",
                    "schedule.warmup=0", "--set", "optim.grad_clip=0", check=False)
    assert proc.returncode != 0
    run = only_run(logs)
    status = read_json(run / "status.json")
    assert status["state"] == "failed"
    assert "\n" not in status["error"] and ("loss became" in status["error"] or "non-finite" in status["error"])
    assert any(e["event"] == "error" for e in read_jsonl(run / "events.jsonl"))
    errors = [line for line in (run / "train.log").read_text().splitlines() if " error: " in line]
    assert len(errors) == 1 and status["error"] in errors[0], errors  # said once, not twice
    from safetensors.torch import load_file

    for ck in (run / "checkpoints").glob("step-*"):
        assert all(torch.isfinite(t).all() for t in load_file(ck / "model.safetensors").values())


@pytest.mark.slow
def test_cli_user_errors_are_one_line(logs):
    for args, expected in [
        (["train", "--profile", "nope"], "profile 'nope' not found"),
        (["train", "--profile", "tiny-cpu", "--set", "model.n_head=5"], "must divide model.n_embd"),
        (["train", "--profile", "tiny-cpu", "--mix", "nope"], "mix 'nope' not found"),
        (["stop", "no-such-run"], "run 'no-such-run' not found"),
        (["resume", "no-such-run"], "run 'no-such-run' not found"),
        (["export", "no-such-run", "/tmp/x"], "run 'no-such-run' not found"),
    ]:
        proc = sparknet(*args, check=False)
        assert proc.returncode == 2, (args, proc.stderr)
        err = proc.stderr.strip()
        assert len(err.splitlines()) == 1 and expected in err and "Traceback" not in err, err
    assert list(logs.iterdir()) == []  # nothing half-written


def test_batch_feeder_prefetch_keeps_the_order_and_the_consumed_position(corpora_mix):
    from engine.config.loading import load_mix
    from engine.data import MixLoader, prepare_mix
    from engine.train.feeder import BatchFeeder

    mix = load_mix(str(corpora_mix))
    prepare_mix(mix, 100_000)

    def loader():
        return MixLoader(mix, split="train", batch=2, context=64, seed=3)

    plain = loader()
    expected = [plain.next_batch() for _ in range(4)]
    after_four = plain.state_dict()
    feeder = BatchFeeder(loader(), torch.device("cpu"))
    got = [feeder.next().numpy()]
    feeder.prefetch()
    feeder.prefetch()  # a second call draws nothing more
    after_one = feeder.consumed_state()
    got += [feeder.next().numpy(), feeder.next().numpy()]
    feeder.prefetch()
    got.append(feeder.next().numpy())
    feeder.prefetch()  # drawn ahead, not handed out: the position stays after the fourth batch
    for a, b in zip(got, expected):
        assert (a == b).all()
    assert feeder.consumed_state() == after_four
    assert feeder.loader.state_dict()["draw"] == after_four["draw"] + 2
    check = loader()
    check.next_batch()
    assert after_one == check.state_dict()
    assert feeder.loader.epochs(feeder.consumed_state()) == plain.epochs()


def test_trainer_builds_the_chosen_paths_and_the_checkpoint_records_them(tmp_path):
    from engine.config.loading import load_mix, load_profile
    from engine.models.checkpoint import verify_checkpoint
    from engine.models.gpt2 import MLP
    from engine.runs.rundir import create_run, iter_checkpoints
    from engine.train.trainer import Trainer

    overrides = ["run.fused_gelu=false", "run.tokens=4096"]
    profile, mix = load_profile("tiny-cpu", overrides), load_mix("demo")
    run_dir = create_run(profile, mix, overrides, tmp_path / "run").run_dir
    trainer = Trainer(run_dir, resume=False)
    trainer.setup()
    mlps = [m for m in trainer.raw_model.modules() if isinstance(m, MLP)]
    assert mlps and not any(m.fused_gelu for m in mlps) and not trainer.raw_model.fused_loss
    assert trainer.run() == 0
    recorded = verify_checkpoint(next(iter_checkpoints(run_dir)))["kernels"]
    assert not any(recorded[p] for p in ("compile", "fused_loss", "fp8_head", "fused_gelu", "bf16_residual"))
    assert recorded["reasons"]["fused_gelu"] == "off in the profile (run.fused_gelu = false)"
    assert "the reference path is the faster one" in recorded["reasons"]["fused_loss"]


def test_runs_lists_newest_first_with_whole_run_ids_in_80_columns(logs):
    long_id = "20261201-120000-" + "a-very-long-run-name-that-must-never-be-cut-" * 2
    for run_id, started, step in [("20261130-080000-tiny-cpu", "2026-11-30T08:00:00Z", 60),
                                  ("20261201-090000-tiny-cpu", "2026-12-01T09:00:00Z", 30), (long_id, None, 0)]:
        run = logs / run_id
        run.mkdir()
        (run / "run.toml").write_text('run_id = "x"\nprofile_name = "tiny-cpu"\n')
        (run / "status.json").write_text(json.dumps({"state": "finished", "step": step, "steps": 60, "loss": 2.91234,
                                                     "tokens_per_s": 52_000.0, "started_at": started}))
    lines = sparknet("runs").stdout.splitlines()
    assert lines[0].split()[:3] == ["run", "state", "progress"]
    assert [line.split()[0] for line in lines[1:]] == [long_id, "20261201-090000-tiny-cpu", "20261130-080000-tiny-cpu"]
    assert "30/60 50%" in lines[2] and "2.912" in lines[2] and "52k" in lines[2] and " ago" in lines[2]
    (logs / long_id / "run.toml").rename(logs / long_id / "gone.toml")  # no longer a run
    assert all(len(line) <= 80 for line in sparknet("runs").stdout.splitlines())


def test_runs_says_a_run_is_compiling_its_first_step():
    from types import SimpleNamespace

    from engine.cli.runs import runs_table_rows
    from engine.runs.status import RunStatus

    run = SimpleNamespace(run_id="20261201-120000-spark", status=RunStatus({"state": "running", "phase": "compiling",
                                                                              "step": 0, "steps": 8138}))
    assert runs_table_rows([run], now=0.0)[0][1] == "running (compiling)"


def test_a_steps_phases_are_marked_in_order_and_marking_changes_nothing(tmp_path):
    """Trainer.train_step's phase marks (lab/profile_step.py times them): the phases in order, each
    optimizer by name, and the same step with or without them."""
    from engine.config.loading import load_mix, load_profile
    from engine.runs.rundir import create_run
    from engine.train.trainer import Trainer

    overrides = ["model.arch=modern", "model.bias=false", "optim.name=muon", "run.tokens=4096"]
    profile, mix = load_profile("tiny-cpu", overrides), load_mix("demo")
    results = []
    for name in ("plain", "marked"):
        trainer = Trainer(create_run(profile, mix, overrides, tmp_path / name).run_dir, resume=False)
        trainer.setup()
        phases = []
        loss, grad_norm = trainer.train_step(profile.optim.lr, mark=phases.append if name == "marked" else None)
        results.append((loss.item(), grad_norm.item(), phases))
    (plain_loss, plain_norm, _), (loss, norm, phases) = results
    assert phases == ["forward and backward", "clip", "AdamW", "Muon", "zero_grad", "next batch"]
    assert (loss, norm) == (plain_loss, plain_norm)


@pytest.mark.slow
def test_resume_with_no_usable_checkpoint_refuses_unless_from_scratch(logs):
    common = ["--profile", "tiny-cpu", *FAST, "--set", "run.tokens=40_960", "--set", "run.checkpoint_every=3"]
    run_id = sparknet("train", *common, "--detach").stdout.strip().splitlines()[-1]
    run = logs / run_id
    assert reaches_step(run, 4)
    sparknet("stop", run_id)
    steps_before = len(read_jsonl(run / "metrics.jsonl"))
    for ck in (run / "checkpoints").glob("step-*"):
        (ck / "model.safetensors").write_bytes(b"truncated")
    refused = sparknet("resume", run_id, check=False)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "no usable checkpoint" in refused.stderr and "--from-scratch" in refused.stderr
    assert read_json(run / "status.json")["state"] == "stopped"  # nothing started, nothing trained
    assert len(read_jsonl(run / "metrics.jsonl")) == steps_before
    sparknet("resume", run_id, "--from-scratch")
    assert read_json(run / "status.json")["state"] == "finished"
    assert any(e["event"] == "warning" and "starting from step 0" in e["message"]
               for e in read_jsonl(run / "events.jsonl"))


@pytest.mark.slow
@pytest.mark.parametrize("stop_signal", ["SIGINT", "SIGHUP"])  # Ctrl-C, and the terminal closing (an SSH drop)
def test_ctrl_c_or_a_closed_terminal_stops_a_foreground_run_after_a_checkpoint(logs, stop_signal):
    import signal

    number = getattr(signal, stop_signal)
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "train", "--profile", "tiny-cpu", *FAST,
                             "--set", "run.tokens=400_000"], cwd=PROJECT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: any(logs.iterdir()), scaled(60), 0.05)
        run = only_run(logs)
        assert reaches_step(run, 2)
        proc.send_signal(number)
        _, err = proc.communicate(timeout=scaled(120))
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + number, err  # so that `sparknet train ... && sparknet export ...` exports nothing
    status = read_json(run / "status.json")
    assert status["state"] == "stopped" and status["step"] < status["steps"]
    assert (run / "checkpoints" / f"step-{status['step']:08d}").is_dir()
    stopped = [e["message"] for e in read_jsonl(run / "events.jsonl") if e["event"] == "stopped"]
    assert stopped and ("its terminal closed" in stopped[-1]) == (stop_signal == "SIGHUP"), stopped
