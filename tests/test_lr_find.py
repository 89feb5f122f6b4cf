"""`sparknet lr-find` with real tiny-cpu runs: a suggestion below where the loss ran away, near the best of four
rates trained in turn, and one test per optimizer group for a Muon profile with the other group's rate held."""

from __future__ import annotations

import json

import pytest
from cli_helpers import events, sparknet

from engine.files import read_jsonl

pytest_plugins = ["tui_fixtures"]  # private_profiles: a copy of profiles/ to save into


@pytest.mark.slow
def test_lr_find_suggests_a_rate_below_where_the_loss_ran_away(logs, private_profiles):
    done = sparknet("lr-find", "--profile", "tiny-cpu", "--steps", "40", "--set", "schedule.range_to=100000",
                    "--set", "batch.grad_accum=1", "--save-as", "tiny-found", timeout=300)
    assert done.returncode == 0, done.stderr
    run = next(logs.glob("*-lr-find-all"))
    found = json.loads((run / "lr-find.json").read_text())
    assert found["ran_away_at_lr"] is not None
    assert found["suggested_lr"] < found["lowest_loss_lr"] < found["ran_away_at_lr"]
    assert any(e["event"] == "range_end" for e in events(run))
    assert json.loads((run / "status.json").read_text())["state"] == "finished"
    rates = [row["lr"] for row in read_jsonl(run / "metrics.jsonl")]
    assert rates == sorted(rates) and rates[0] == pytest.approx(3e-3 / 1000, rel=1e-6)  # rising from 1/1000
    assert f"suggested optim.lr = {found['suggested_lr']:.2e}" in done.stdout
    saved = (private_profiles / "tiny-found.toml").read_text()  # the suggested rate as a profile that trains
    rate = float(format(found["suggested_lr"], ".3g"))
    assert f"\nlr = {rate}" in saved and "lr-find run" in saved
    assert sparknet("train", "--profile", "tiny-found", "--check").returncode == 0


@pytest.mark.long
@pytest.mark.slow
def test_lr_find_suggests_a_rate_near_the_best_of_four_trained_rates(logs):
    # the rates trained one by one in this process, as a sweep would train them (sweeps are test_sweep.py's);
    # each with the profile's own batch, as lr-find trains it
    final_val_loss = {}
    for rate in (1e-3, 3e-3, 1e-2, 3e-2):
        sparknet("train", "--profile", "tiny-cpu", "--name", f"rate-{rate:g}", "--set", f"optim.lr={rate}",
                 "--set", "run.tokens=61440", "--set", "run.seed=1", "--set", "run.eval_every=30",
                 "--set", "run.final_eval=false")
        rows = read_jsonl(next(logs.glob(f"*-rate-{rate:g}")) / "metrics.jsonl")
        final_val_loss[rate] = [r["val_loss"] for r in rows if "val_loss" in r][-1]
    best_rate = min(final_val_loss, key=final_val_loss.get)
    assert sparknet("lr-find", "--profile", "tiny-cpu", "--steps", "60", timeout=300).returncode == 0
    found = json.loads((next(logs.glob("*-lr-find-all")) / "lr-find.json").read_text())
    assert best_rate / 3 <= found["suggested_lr"] <= best_rate * 3, (found["suggested_lr"], final_val_loss)


@pytest.mark.slow
def test_lr_find_of_a_muon_profile_tests_each_rate_with_the_other_held(logs):
    modern = ["--set", 'model.arch="modern"', "--set", 'optim.name="muon"', "--set", "batch.grad_accum=1"]
    done = sparknet("lr-find", "--profile", "tiny-cpu", "--steps", "20", *modern, timeout=300)
    assert done.returncode == 0, done.stderr
    for group, key in (("adamw", "optim.lr"), ("muon", "optim.muon_lr")):
        run = next(logs.glob(f"*-lr-find-{group}"))
        found = json.loads((run / "lr-find.json").read_text())
        assert found["key"] == key
        assert read_jsonl(run / "metrics.jsonl")[0]["lr"] == pytest.approx(found["profile_rate"] / 1000, rel=1e-6)
    assert "optim.muon_lr was held at" in done.stdout and "optim.lr was held at" in done.stdout
