"""Failures while the user is away leave the run telling the truth: disk full, mistakes found late, divergence."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import DEMO_TOKENIZER, FAST, PROJECT, events, only_run, reaches_step, scaled, sparknet

from engine.config.loading import load_profile, model_parameter_count
from engine.files import append_jsonl, read_json, read_jsonl, wait_for
from engine.models.checkpoint import verify_checkpoint
from engine.runs.rundir import iter_checkpoints


@pytest.fixture
def small_disk(tmp_path):
    """A real small filesystem (tmpfs) the test can fill; skipped, with the reason, where none can be mounted."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("disk-full test needs root to mount a small tmpfs")
    checkpoint_b = model_parameter_count(load_profile("tiny-cpu").model) * 4 * 3  # weights + two AdamW moments
    size = int(checkpoint_b * 1.6) + (512 << 10)  # room for one checkpoint and the run files, not two
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"disk-full test could not mount a tmpfs: {mounted.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.slow
def test_disk_full_while_checkpointing_fails_in_one_line_and_resumes_once_space_is_free(small_disk, monkeypatch):
    logs = small_disk / "logs"
    logs.mkdir()
    monkeypatch.setenv("SPARKNET_LOGS", str(logs))
    proc = sparknet("train", "--profile", "tiny-cpu", *FAST, "--set", "run.tokens=24_576",
                    "--set", "run.checkpoint_every=4", check=False)
    run = only_run(logs)
    status = read_json(run / "status.json")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert status["state"] == "failed"
    error = status["error"]
    assert error.startswith("disk full writing ") and "MB free" in error and "the checkpoint from step 4 is intact" in error
    assert "\n" not in error
    ck = run / "checkpoints"
    assert [p.name for p in ck.iterdir()] == ["step-00000004"]  # no temporary folder left behind
    verify_checkpoint(ck / "step-00000004")
    # still full (refilled by something else): resume says so in one line, starting nothing
    filler = small_disk / "filler"
    free = shutil.disk_usage(small_disk).free
    filler.write_bytes(b"\0" * max(0, free - (1 << 20)))
    proc = sparknet("resume", str(run), check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("sparknet resume: error: disk full:"), proc.stderr
    assert proc.stderr.count("\n") == 1 and "67 MB are kept free besides" in proc.stderr  # the floor is named
    assert read_json(run / "status.json")["state"] == "failed"
    filler.unlink()
    subprocess.run(["mount", "-o", f"remount,size={200 << 20}", str(small_disk)], check=True)
    sparknet("resume", str(run))
    assert read_json(run / "status.json")["state"] == "finished"
    steps = [r["step"] for r in read_jsonl(run / "metrics.jsonl")]
    assert steps[-1] == 24 and steps.count(5) == 2  # steps 5-8 ran again from the step-4 checkpoint


def write_mix(path: Path, body: str) -> Path:
    path.write_text(f'tokenizer = "{DEMO_TOKENIZER}"\nvalidation_share = 0.01\n' + body)
    return path


def refused(logs: Path, *args) -> str:
    proc = sparknet("train", "--profile", "tiny-cpu", *args, check=False)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert list(logs.iterdir()) == [], "a refused run left a directory behind"
    return proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("detach", [[], ["--detach"]])
def test_mistakes_in_a_mix_are_refused_before_a_run_exists(logs, tmp_path, detach, monkeypatch):
    missing = write_mix(tmp_path / "missing.toml", f'[[sources]]\nname = "a"\nweight = 1\npath = "{tmp_path}/nope"\n')
    err = refused(logs, "--mix", str(missing), *detach)
    assert str(missing) in err and "does not exist" in err
    (tmp_path / "empty").mkdir()
    empty = write_mix(tmp_path / "empty.toml", f'[[sources]]\nname = "a"\nweight = 1\npath = "{tmp_path}/empty"\n')
    assert str(empty) in refused(logs, "--mix", str(empty), *detach)
    (tmp_path / "docs.jsonl").write_text('{"text": "hello"}\n')
    (tmp_path / "badtok").mkdir()
    (tmp_path / "badtok" / "tokenizer.json").write_text("{not json")
    bad_tok = tmp_path / "badtok.toml"
    bad_tok.write_text(f'tokenizer = "{tmp_path}/badtok"\n[[sources]]\nname = "a"\nweight = 1\n'
                       f'path = "{tmp_path}/docs.jsonl"\n')
    err = refused(logs, "--mix", str(bad_tok), *detach)
    assert str(bad_tok) in err and "does not load" in err
    good = write_mix(tmp_path / "good.toml", f'[[sources]]\nname = "a"\nweight = 1\npath = "{tmp_path}/docs.jsonl"\n')
    err = refused(logs, "--mix", str(good), "--set", "model.vocab_size=1000", *detach)
    assert "model.vocab_size (1,000) is smaller" in err and "set model.vocab_size = 1024" in err
    hub = write_mix(tmp_path / "hub.toml", '[[sources]]\nname = "h"\nweight = 1\nhf = "someone/absent"\n')
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    err = refused(logs, "--mix", str(hub), *detach)
    assert "cannot reach the Hugging Face hub" in err and str(hub) in err


def test_train_check_says_ready_without_creating_anything(logs, tmp_path):
    (tmp_path / "docs.jsonl").write_text('{"text": "hello"}\n')
    good = write_mix(tmp_path / "good.toml", f'[[sources]]\nname = "a"\nweight = 1\npath = "{tmp_path}/docs.jsonl"\n')
    out = sparknet("train", "--profile", "tiny-cpu", "--mix", str(good), "--check").stdout
    assert out.startswith("ready: profile tiny-cpu") and list(logs.iterdir()) == []


def test_a_name_too_long_is_one_line(logs):
    err = refused(logs, "--name", "x" * 300)
    assert "--name is 300 characters long" in err


def test_a_torn_jsonl_line_never_swallows_the_next_record(tmp_path):
    path = tmp_path / "metrics.jsonl"
    append_jsonl(path, {"step": 1})
    with open(path, "a") as f:
        f.write('{"step": 2, "lo')  # a writer killed mid-line
    assert read_jsonl(path) == [{"step": 1}]  # readers tolerate the fragment
    append_jsonl(path, {"step": 3})
    assert read_jsonl(path) == [{"step": 1}, {"step": 3}]
    assert path.read_text().endswith('{"step":3}\n')


@pytest.mark.slow
def test_every_file_of_a_run_follows_the_umask_model_files_included(logs, tmp_path):
    old = os.umask(0o027)  # the group may read, others may not: neither 0644 nor mkstemp's 0600 would pass
    try:
        sparknet("train", "--profile", "tiny-cpu", *FAST, "--set", "run.tokens=4096", "--set", "run.final_eval=false")
        sparknet("export", only_run(logs).name, str(tmp_path / "exported"))
    finally:
        os.umask(old)
    run = only_run(logs)
    files = [p for p in [*run.rglob("*"), *(tmp_path / "exported").rglob("*")] if p.is_file()]
    assert {"status.json", "metrics.jsonl", "model.safetensors", "trainer.pt", "config.json"} <= {p.name for p in files}
    assert {str(p): oct(p.stat().st_mode & 0o777) for p in files if p.stat().st_mode & 0o777 != 0o640} == {}
    folders = [p for p in [run, *run.rglob("*")] if p.is_dir()]
    assert {str(p): oct(p.stat().st_mode & 0o777) for p in folders if p.stat().st_mode & 0o777 != 0o750} == {}


@pytest.mark.slow
def test_divergence_names_the_kept_checkpoint_and_the_command_that_continues(logs):
    # a learning rate this high blows the tiny model up within a few steps
    sparknet("train", "--profile", "tiny-cpu", *FAST, "--set", "run.tokens=40_960", "--set", "run.checkpoint_every=2",
             "--set", "optim.lr=1e3", "--set", "optim.min_lr=0", "--set", "schedule.warmup=0",
             "--set", "optim.grad_clip=0", check=False)
    run = only_run(logs)
    status = read_json(run / "status.json")
    assert status["state"] == "failed", status
    kept = next(iter_checkpoints(run), None)
    if kept is None:
        assert "no checkpoint was written yet" in status["error"]
    else:
        assert f"the checkpoint from step {int(kept.name[5:])} ({kept.name}) is kept" in status["error"]
    assert f"`sparknet resume {run.name} --set optim.lr=500 --set optim.min_lr=0`" in status["error"]
    bad = sparknet("resume", str(run), "--set", "model.n_layer=4", check=False)
    assert bad.returncode == 2 and "start a new run" in bad.stderr and bad.stderr.count("\n") == 1
    bad = sparknet("resume", str(run), "--set", "optim.lr=-1", check=False)
    assert bad.returncode == 2 and "optim.lr must be > 0" in bad.stderr and bad.stderr.count("\n") == 1
    assert "resume_overrides" not in (run / "run.toml").read_text()  # refused overrides leave no trace


def test_divergence_advice_halves_every_rate_the_profile_sets(tmp_path):
    from engine.config.loading import load_profile
    from engine.train.guards import divergence_advice

    modern = load_profile("modern-70m").optim
    advice = divergence_advice(tmp_path / "run", modern)
    assert (f"--set optim.lr={modern.lr / 2:.3g} --set optim.min_lr={modern.min_lr / 2:.3g} "
            f"--set optim.muon_lr={modern.muon_lr / 2:.3g}`") in advice
    assert "muon_lr" not in divergence_advice(tmp_path / "run", load_profile("codelion-70m").optim)


@pytest.mark.slow
def test_resume_set_changes_the_rate_the_optimizer_really_uses(logs):
    from safetensors.torch import load_file

    run_id = sparknet("train", "--profile", "tiny-cpu", *FAST, "--set", "run.tokens=40_960",
                      "--set", "run.checkpoint_every=2", "--set", "run.keep_checkpoints=100",
                      "--detach").stdout.strip().splitlines()[-1]
    run = logs / run_id
    assert reaches_step(run, 4)
    sparknet("stop", run_id)
    stopped = next(iter_checkpoints(run))
    sparknet("resume", run_id, "--set", "optim.lr=1e-9", "--set", "optim.min_lr=0")
    assert read_json(run / "status.json")["state"] == "finished"
    run_toml = (run / "run.toml").read_text()
    assert "resume_overrides" in run_toml and "optim.lr=1e-9" in run_toml
    after = [r for r in read_jsonl(run / "metrics.jsonl") if r["step"] > int(stopped.name[5:])]
    assert after and all(r["lr"] <= 1e-9 for r in after)
    # the weights barely move: the optimizer took the new rate, not the one saved in its state
    before = load_file(str(stopped / "model.safetensors"))
    final = load_file(str(next(iter_checkpoints(run)) / "model.safetensors"))
    assert max(float((final[k] - before[k]).abs().max()) for k in before) < 1e-5
    assert any("optim.lr=1e-9" in e["message"] for e in events(run) if e["event"] == "resumed")


def test_out_of_memory_and_interrupts_are_one_line_with_the_fix(tmp_path):
    from types import SimpleNamespace

    import torch

    from engine.config.loading import load_profile
    from engine.train.worker import failure_line

    trainer = SimpleNamespace(profile=load_profile("codelion-70m"), run_dir=tmp_path, step=12)
    line = failure_line(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB"), trainer)
    assert line == ("out of GPU memory at batch.micro_batch=120: --set batch.micro_batch=60 --set batch.grad_accum=2 "
                    "keeps the same tokens per step (start a new run with it)")
    assert "no checkpoint yet" in failure_line(KeyboardInterrupt(), trainer)
    assert failure_line(ValueError("a bug"), trainer) is None  # bugs keep their traceback


def test_every_hub_check_follows_one_rule_proxies_included(monkeypatch, tmp_path):
    from engine.config.loading import load_mix
    from engine.data import DataError, SourceReader

    mix_file = write_mix(tmp_path / "hub.toml", '[[sources]]\nname = "h"\nweight = 1\nhf = "someone/absent"\n')
    reader = SourceReader(load_mix(str(mix_file)).sources[0], load_mix(str(mix_file)))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # not reachable directly
    with pytest.raises(DataError, match="cannot reach the Hugging Face hub \\(127.0.0.1\\)"):
        reader.check_hub()
    # behind a proxy only the proxy knows: data preparation lets the library try, as evaluation always did
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    reader.check_hub()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    reader.check_hub()  # offline: the cached copy is used, nothing is asked


def remove_while_written(folder: Path) -> None:
    """`rm -rf` as a user types it again: the trainer may write a file into the folder while it is being removed."""
    while folder.exists():
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_a_run_whose_folder_is_deleted_stops_in_one_line_and_recreates_nothing(logs):
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "train", "--profile", "tiny-cpu", *FAST,
                             "--set", "run.tokens=2_048_000"], cwd=PROJECT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        assert wait_for(lambda: list(logs.iterdir()), scaled(60), 0.05)
        run = only_run(logs)
        assert reaches_step(run, 2)
        remove_while_written(run)
        out, _ = proc.communicate(timeout=scaled(60))
    finally:
        proc.kill()
    assert proc.returncode == 1 and "Traceback" not in out, out
    assert f"the run folder {run} was deleted while the run trained" in out.strip().splitlines()[-1]
    assert [str(p.relative_to(logs)) for p in logs.rglob("*")] == []  # nothing recreated it
