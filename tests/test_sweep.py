"""`sparknet sweep` with real tiny-cpu runs: specs checked before anything is made, variants as ordinary runs under
logs/sweeps/NAME/, one ranked table, a sweep that survives a stop and a kill, and bad input to sweep and lr-find
answered in one line. lr-find's own runs are in test_lr_find.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from cli_helpers import PROJECT, events, reaches, scaled, sparknet
from sweep_helpers import sweep_file, write_spec

from engine.files import read_jsonl, wait_for

pytest_plugins = ["tui_fixtures"]  # private_profiles: a copy of profiles/ to save into


@pytest.mark.parametrize("body, says", [
    ('[[variants]]\nname = "bad"\nset = ["model.n_layer=zero"]\n', "variant 'bad': "),
    ('[[variants]]\nname = "small-vocab"\nset = ["model.vocab_size=16"]\n',  # refused by the run's own checks
     "variant 'small-vocab': "),
    ('[[variants]]\nname = "a"\nset = []\n[[variants]]\nname = "a"\nset = []\n', "two variants are named 'a'"),
    ('colour = "blue"\n', "unknown key 'colour'"),
    ('metric = "wikitext_ppl"\n', "needs a mix with tokenizer = \"gpt2\""),
    ('[grid]\n"optim.lr" = 0.1\n', "must be a list of values"),
])
def test_a_bad_spec_is_refused_in_one_line_before_anything_is_made(logs, tmp_path, body, says):
    done = sparknet("sweep", write_spec(tmp_path, "bad-spec", body), check=False)
    assert done.returncode == 2, done.stderr
    assert says in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (logs / "sweeps").exists()


@pytest.mark.long
@pytest.mark.slow
def test_a_sweep_ranks_its_variants_and_each_is_an_ordinary_run(logs, tmp_path, private_profiles):
    spec = write_spec(tmp_path, "lr", '[grid]\n"optim.lr" = [1e-3, 1e-2]\n[[variants]]\nname = "diverges"\n'
                      'set = ["optim.lr=1e4", "optim.grad_clip=0", "schedule.warmup=0"]\n', seeds="[1, 2]")
    done = sparknet("sweep", spec)
    assert done.returncode == 0, done.stderr
    table = sweep_file(logs, "lr")["table"]
    assert [row["rank"] for row in table] == [1, 2, None]  # the diverged variant has no figure and comes last
    figures = [row["final_val_loss"] for row in table[:2]]
    assert figures == sorted(figures)
    assert all(row["final_val_loss_spread"] is not None for row in table[:2])  # two seeds: mean ± half the range
    assert table[2]["variant"] == "diverges" and table[2]["states"] == ["diverged"]
    entries = sweep_file(logs, "lr")["entries"]
    assert len(entries) == 6 and all(e["run"] for e in entries)
    # ordinary runs: `sparknet runs` lists them and every verb finds them by id
    listed = sparknet("runs").stdout
    assert all(e["run"] in listed for e in entries)
    finished = next(e["run"] for e in entries if e["state"] == "finished")
    assert sparknet("eval", finished, "--max-tokens", "1024", "--no-samples").returncode == 0
    shown = sparknet("sweep", "show", "lr", env=dict(os.environ, COLUMNS="200")).stdout  # a row a line
    assert "lr=0.01" in shown and "optim.lr=0.01" in shown and "± " in shown
    assert sparknet("sweep", spec, check=False).returncode == 2  # never started twice over itself
    # the best variant saved as a profile that remembers its sweep, and trains
    assert sparknet("sweep", "save", "lr", "--as", "best-lr").returncode == 0
    saved = (private_profiles / "best-lr.toml").read_text()
    assert f'measured = "rank 1 of 2 in sweep lr: val_loss {table[0]["final_val_loss"]:.4f}' in saved
    assert f'variant {table[0]["variant"]} of sweep lr' in saved
    assert sparknet("sweep", "save", "lr", "--as", "best-lr", check=False).returncode == 2  # never overwritten
    assert sparknet("train", "--profile", "best-lr", "--set", "run.tokens=4096", "--set", "run.final_eval=false",
                    "--name", "saved").returncode == 0


def sweep_process(*args, env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "engine.cli", "sweep", *args], cwd=PROJECT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def first_run(logs, name: str):
    def made():
        entries = (sweep_file(logs, name) or {}).get("entries") or []
        return entries and entries[0].get("run")
    assert wait_for(made, scaled(60))
    return logs / "sweeps" / name / sweep_file(logs, name)["entries"][0]["run"]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["stop", "kill"])
def test_a_sweep_carries_on_after_a_stop_or_a_kill_and_never_repeats_a_run(logs, tmp_path, how):
    # a is stopped or killed part-way; b, the variant still to come, may be short
    spec = write_spec(tmp_path, "long", '[[variants]]\nname = "a"\nset = []\n[[variants]]\nname = "b"\n'
                      'set = ["optim.lr=1e-3", "run.tokens=4096"]\n', tokens=60_000)
    env = dict(os.environ, SPARKNET_LOGS=str(logs))
    proc = sweep_process(spec, env=env)
    run = first_run(logs, "long")
    assert reaches(run, lambda s: (s.get("step") or 0) >= 3)
    if how == "stop":
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(scaled(60)) == 130, proc.stdout.read()
        assert sweep_file(logs, "long")["state"] == "stopped"
        assert json.loads((run / "status.json").read_text())["state"] == "stopped"
    else:
        proc.kill()  # the variant's trainer lives on; resume waits for it
        proc.wait(scaled(10))
    done = sparknet("sweep", "resume", "long", timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    entries = sweep_file(logs, "long")["entries"]
    assert [e["state"] for e in entries] == ["finished", "finished"]
    assert entries[0]["run"] == run.name  # the same run carried on, not a new one
    steps = [row["step"] for row in read_jsonl(run / "metrics.jsonl")]
    assert steps.count(1) == 1 and steps[-1] == max(steps)  # never trained again from the start
    if how == "stop":
        assert any(e["event"] == "resumed" for e in events(run))
    assert sorted(d.name for d in (logs / "sweeps" / "long").iterdir() if (d / "run.toml").exists()) == \
        sorted(e["run"] for e in entries)  # one run a variant, none repeated


@pytest.mark.parametrize("args, says", [
    (["sweep", "resume", "nope"], "sweep 'nope' not found"),
    (["sweep", "show", "broken"], "not a sweep file SparkNet wrote"),
    (["sweep", "save", "broken", "--as", "x"], "not a sweep file SparkNet wrote"),
    (["sweep", "a.toml", "b.toml"], "give one spec file"),
    (["lr-find", "--profile", "tiny-cpu", "--steps", "3"], "--steps must be at least 20"),
    (["lr-find", "--profile", "tiny-cpu", "--group", "muon"], "has no Muon rate"),
    (["lr-find", "--profile", "tiny-cpu", "--save-as", "tiny-cpu"], "a profile with this name exists"),
    (["lr-find", "--profile", "tiny-cpu", "--save-as", "my rates"], "use letters, digits"),
])
def test_sweep_and_lr_find_answer_bad_input_in_one_line(logs, args, says):
    (logs / "sweeps" / "broken").mkdir(parents=True)
    (logs / "sweeps" / "broken" / "sweep.json").write_text('{"entries": "cut sh')
    done = sparknet(*args, check=False)
    assert done.returncode == 2 and says in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert [d.name for d in logs.iterdir()] == ["sweeps"]  # refused before a range test trained


def test_a_spec_without_seeds_runs_at_the_profiles_own_seed(tmp_path):
    from engine.config.loading import load_profile
    from engine.config.sweep import load_sweep_spec

    spec = tmp_path / "s.toml"
    spec.write_text('profile = "tiny-cpu"\nmix = "demo"\n[grid]\n"optim.lr" = [1e-3, 1e-2]\n')
    assert load_sweep_spec(spec).seeds == [load_profile("tiny-cpu").run.seed]


@pytest.mark.slow
def test_runs_sharing_the_device_are_labelled_so(logs, tmp_path):
    spec = write_spec(tmp_path, "shared", '[grid]\n"optim.lr" = [1e-3, 1e-2]\n')
    done = sparknet("sweep", spec, "--parallel", "2", env=dict(os.environ, COLUMNS="200"))
    assert done.returncode == 0, done.stderr
    state = sweep_file(logs, "shared")
    assert state["parallel"] == 2 and [e["state"] for e in state["entries"]] == ["finished", "finished"]
    assert "2 runs shared the device at once: their tokens/s and wall times are not those of a run alone" in \
        done.stdout
