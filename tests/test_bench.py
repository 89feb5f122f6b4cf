"""`sparknet bench` on CPU: the command works end to end and reports every figure (values only from the run)."""

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import scaled, sparknet

PROJECT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_prints_json_line_and_table_with_trainer_baseline(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "engine.cli", "bench", "--profile", "tiny-cpu",
         "--steps", "6", "--set", "batch.grad_accum=1", "--set", "run.eval_tokens=2048",
         "--baseline", "hf-trainer", "--baseline-micro-batch", "4", "--eval", "--json-out", str(out)],
        cwd=PROJECT, capture_output=True, text=True, timeout=scaled(600))
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stdout  # stdout carries only the JSON line
    result = json.loads(lines[0])
    assert result == json.loads(out.read_text())
    assert result["device"] == "cpu" and result["steps"] == 6 and result["tokens_per_step"] == 1024
    assert result["flops_per_token"] > 0 and result["parameters"] == 173_824  # 1,024 x 64 tied + 128 x 64 positions + 2 blocks + final norm
    assert result["tokens_per_s"] > 0 and len(result["tokens_per_s_intervals"]) >= 1
    assert result["mfu"] is None and result["peak_memory_b"] is None  # no GPU, no published peak
    assert 0 <= result["data_wait_share"] < 1
    uniform = math.log(1024)  # the demo tokenizer's vocabulary
    assert 2 < result["final_loss"] < uniform + 1 and 2 < result["val_loss"] < uniform + 1
    assert result["wikitext_ppl"] > 1 and result["wikitext_bits_per_byte"] > 0
    base = result["baseline"]
    assert "Trainer + GPT2LMHeadModel" in base["trainer"] and base["tokens_per_s"] > 0
    assert (base["micro_batch"], base["grad_accum"]) == (4, 2)  # the same 8 sequences a step, in two parts
    assert 2 < base["final_loss"] < uniform + 1 and base["wikitext_ppl"] > 1
    assert result["speedup_vs_baseline"] == round(result["tokens_per_s"] / base["tokens_per_s"], 3)
    for label in ("tokens/s (median)", "MFU", "data wait", "final loss", "WikiText-2 perplexity",
                  "speed-up vs Trainer"):
        assert label in proc.stderr


@pytest.mark.slow
def test_bench_rejects_too_few_steps():
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "bench", "--profile", "tiny-cpu", "--steps", "1"],
                          cwd=PROJECT, capture_output=True, text=True, timeout=scaled(120))
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "--steps must be at least 2" in proc.stderr


@pytest.mark.slow
def test_bench_rejects_a_baseline_micro_batch_that_does_not_divide_the_step():
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "bench", "--profile", "tiny-cpu", "--steps", "4",
                           "--baseline", "hf-trainer", "--baseline-micro-batch", "3"],
                          cwd=PROJECT, capture_output=True, text=True, timeout=scaled(120))
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "--baseline-micro-batch must divide the 16 sequences of a step" in proc.stderr


def test_baseline_micro_batch_defaults_to_the_largest_divisor_up_to_24():
    from engine.cli.throughput import baseline_micro_batch
    from engine.config.loading import load_profile

    assert baseline_micro_batch(load_profile("codelion-70m"), None) == 24  # 120 sequences: 24 x 5
    assert baseline_micro_batch(load_profile("tiny-cpu"), None) == 16
    assert baseline_micro_batch(load_profile("codelion-70m", ["batch.micro_batch=7", "batch.grad_accum=5"]),
                                None) == 7


def test_every_timed_interval_starts_and_ends_on_a_synchronised_step():
    from engine.cli.throughput import _intervals, is_boundary

    for steps, warmup, interval in ((30, 10, 6), (40, 10, 10), (7, 2, 1), (50, 10, 10)):
        synced = {done for done in range(1, steps + 1) if is_boundary(done, warmup, interval, steps)}
        times = [float(i + 1) for i in range(steps)]
        rates = _intervals(times, 1, warmup, interval)
        assert rates  # at least one interval
        for k in range(len(rates)):
            first, last = warmup + k * interval, warmup + (k + 1) * interval  # steps done at its two ends
            assert first in synced and last in synced, (steps, warmup, interval, k)


@pytest.mark.slow
def test_to_quality_times_each_profile_to_the_references_final_loss(tmp_path):
    """Two real trainings of tiny-cpu on the demo mix, the second at a better rate: the target is the first
    one's last held-out loss, each is reached where its curve first comes down to it, and the speed-up is the
    ratio of those training seconds."""
    from cli_helpers import sparknet

    better = tmp_path / "better.toml"
    tiny = (Path(__file__).resolve().parents[1] / "profiles" / "tiny-cpu.toml").read_text()
    better.write_text(re.sub(r"(?m)^lr = .*$", "lr = 1e-2", tiny))
    out = tmp_path / "q.json"
    proc = sparknet("bench", "--to-quality", "--profile", str(better), "--against", "tiny-cpu", "--mix", "demo",
                    "--set", "run.tokens=40960", "--eval-points", "5", "--json-out", str(out))
    result = json.loads(out.read_text())
    reference, candidate = result["runs"]
    assert [r["profile"] for r in result["runs"]] == ["tiny-cpu", "better"]
    assert result["target_loss"] == reference["curve"][-1]["val_loss"]
    assert [p["step"] for p in reference["curve"]] == [4, 8, 12, 16, 20]
    assert all(b["train_s"] > a["train_s"] for a, b in zip(candidate["curve"], candidate["curve"][1:]))
    # the better rate gets there sooner, within the budget, and the headline is the ratio of training seconds
    assert candidate["reached"]["tokens"] < 40960
    assert result["speedup"] == round(reference["reached"]["train_s"] / candidate["reached"]["train_s"], 3)
    assert "as fast" in proc.stderr


def test_first_reaching_interpolates_between_the_points_around_the_target():
    from engine.cli.to_quality import first_reaching

    curve = [{"tokens": 100, "train_s": 1.0, "val_loss": 5.0}, {"tokens": 200, "train_s": 2.0, "val_loss": 4.0}]
    assert first_reaching(curve, 4.25) == {"tokens": 175.0, "train_s": 1.75}
    assert first_reaching(curve, 6.0) == {"tokens": 100, "train_s": 1.0}
    assert first_reaching(curve, 3.9) is None


def test_to_quality_refuses_two_profiles_on_different_mixes_before_training(logs):
    from cli_helpers import sparknet

    proc = sparknet("bench", "--to-quality", "--profile", "tiny-cpu", "--against", "codelion-70m", check=False)
    assert proc.returncode == 2 and "pass --mix NAME" in proc.stderr and "\n" not in proc.stderr.strip()
    assert list(logs.iterdir()) == []


def test_a_json_out_that_cannot_be_written_is_refused_before_the_bench_trains(tmp_path):
    """Found at the end, it would cost the whole bench: the folder is checked first, for both kinds of bench."""
    missing = tmp_path / "no-such-folder" / "bench.json"
    for extra in ([], ["--to-quality", "--against", "tiny-cpu"]):
        for target, words in ((missing, f"the folder {missing.parent} does not exist"), (tmp_path, "is a folder"),
                              ("/proc/bench.json", "cannot write in /proc")):  # not even root writes there
            proc = sparknet("bench", "--profile", "tiny-cpu", "--steps", "4", *extra, "--json-out", target,
                            check=False)
            err = proc.stderr.strip()
            assert proc.returncode == 2 and "\n" not in err and words in err, (extra, proc.stderr)
            assert proc.stdout == "", proc.stdout  # no figures: nothing was trained
    assert not missing.parent.exists()


def test_to_quality_checks_both_profiles_before_it_trains_either(tmp_path, monkeypatch):
    """The reference trains for minutes before the contender would start: a contender the run's checks refuse is
    refused before the reference trains."""
    import engine.cli.to_quality as to_quality

    trained = []
    real_train_curve = to_quality.train_curve
    monkeypatch.setattr(to_quality, "train_curve", lambda *a: trained.append(a[0].name) or real_train_curve(*a))
    contender = tmp_path / "small-vocab.toml"
    contender.write_text((PROJECT / "profiles" / "tiny-cpu.toml").read_text().replace("vocab_size = 1024",
                                                                                     "vocab_size = 16"))
    proc = sparknet("bench", "--to-quality", "--profile", contender, "--against", "tiny-cpu", "--steps", "4",
                    check=False)
    err = proc.stderr.strip()
    assert proc.returncode == 2 and "\n" not in err and "set model.vocab_size = 1024" in err, proc.stderr
    assert trained == []
