"""Stop works in every state: during tokenization a stop, SIGTERM or Ctrl-C ends the run in seconds, and
tokenizing workers die with their parent, however it ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from cli_helpers import PROJECT, events, scaled, sparknet

from engine.files import read_json, read_jsonl, wait_for
from engine.runs.rundir import effective_status

CORPORA = Path(__file__).resolve().parents[2] / "shared" / "data" / "corpora"


@pytest.fixture
def private_cache(tmp_path, monkeypatch) -> Path:
    """An empty token cache, so preparation really tokenizes (for tens of seconds) instead of finding it done."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("SPARKNET_CACHE", str(cache))
    return cache


@pytest.fixture
def big_mix(tmp_path) -> Path:
    path = tmp_path / "big.toml"
    path.write_text('tokenizer = "gpt2"\nvalidation_share = 0.005\n' + "".join(
        f'[[sources]]\nname = "{name}"\nweight = 1\npath = "{CORPORA / (name + ".jsonl.gz")}"\nrepeat = true\n'
        for name in ("textbooks", "web", "educational")))
    return path


def tokenizing(run_dir: Path) -> bool:
    progress = read_json(run_dir / "prepare.json") or {}
    return any(row.get("state") == "tokenizing" and row.get("tokens", 0) > 0 for row in progress.get("sources", []))


def unfinished_sources(cache: Path) -> int:
    """Sources whose cache holds only part of what the run asked for (the stop cut tokenizing short)."""
    manifests = [json.loads(p.read_text()) for p in cache.rglob("manifest.json")]
    return sum(not m["complete"] for m in manifests)


def workers_of(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def gone(procs: list[psutil.Process]) -> bool:
    return all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in procs)


@pytest.mark.slow
def test_stop_during_preparation_stops_the_run_and_keeps_what_was_tokenized(logs, private_cache, big_mix):
    run_id = sparknet("train", "--profile", "tiny-cpu", "--mix", str(big_mix), "--set", "run.tokens=60_000_000", "--set", "model.vocab_size=50257",
                      "--set", "batch.grad_accum=1", "--detach").stdout.strip().splitlines()[-1]
    run = logs / run_id
    assert wait_for(lambda: tokenizing(run), scaled(300), 0.1), (run / "train.log").read_text()
    pid = read_json(run / "status.json")["pid"]
    workers = workers_of(pid)
    out = sparknet("stop", run_id).stdout
    assert "stopped at step 0" in out
    assert effective_status(run)["state"] == "stopped"
    assert unfinished_sources(private_cache) >= 1  # it did not wait for tokenizing to finish
    assert any("stopped during data preparation" in e["message"] for e in events(run))
    assert wait_for(lambda: gone(workers), scaled(60), 0.1)


@pytest.mark.slow
def test_ctrl_c_during_preparation_says_stopped_and_takes_the_workers_along(logs, private_cache, big_mix):
    # the foreground command in a terminal: Ctrl-C reaches its whole process group, workers included
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "train", "--profile", "tiny-cpu", "--mix",
                             str(big_mix), "--set", "run.tokens=60_000_000", "--set", "model.vocab_size=50257", "--set", "batch.grad_accum=1"],
                            cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        assert wait_for(lambda: any(tokenizing(d) for d in logs.iterdir()), scaled(300), 0.1)
        run = next(logs.iterdir())
        workers = workers_of(proc.pid)
        assert workers, "expected a pool of tokenizing workers"
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=scaled(300))
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err  # interrupted: `sparknet train ... && next` does not go on
    status = read_json(run / "status.json")
    assert status["state"] == "stopped", status
    assert "stopped during data preparation" in out
    assert unfinished_sources(private_cache) >= 1
    assert wait_for(lambda: gone(workers), scaled(60), 0.1)


@pytest.mark.slow
def test_sigkill_of_prepare_leaves_no_worker_behind(private_cache, big_mix):
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "prepare", "--mix", str(big_mix), "--tokens",
                             "60_000_000"], cwd=PROJECT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: len(workers_of(proc.pid)) >= 1 and '"tokenizing"' in _peek(private_cache), scaled(300), 0.1)
        workers = workers_of(proc.pid)
        proc.kill()
        proc.wait(timeout=scaled(60))
        assert wait_for(lambda: gone(workers), scaled(60), 0.1), [p.pid for p in workers if p.is_running()]
    finally:
        if proc.poll() is None:
            proc.kill()


def _peek(cache: Path) -> str:
    """The progress file prepare writes into the cache, as text ('' before it exists)."""
    files = list(cache.glob("progress-*.json"))
    return files[0].read_text() if files else ""


def _small_mix(tmp_path: Path) -> Path:
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": f"document {i} about the number {i * 7} and more words"}) + "\n"
                            for i in range(4000)))
    mix = tmp_path / "small.toml"
    mix.write_text(f'tokenizer = "gpt2"\nvalidation_share = 0.01\n[[sources]]\nname = "docs"\nweight = 1\n'
                   f'path = "{docs}"\n')
    return mix


@pytest.mark.slow
def test_a_damaged_token_cache_is_found_and_tokenized_again(private_cache, tmp_path):
    from engine.config.loading import load_mix
    from engine.data import DataError, MixLoader, cache_damage, read_manifest

    mix = _small_mix(tmp_path)
    assert "cached" not in sparknet("prepare", "--mix", str(mix)).stdout
    (manifest_path,) = private_cache.rglob("manifest.json")
    folder = manifest_path.parent
    shard = folder / read_manifest(folder)["shards"]["train"][0]["file"]
    good = shard.read_bytes()
    # overwritten in place: same size, other bytes
    shard.write_bytes(good[:100] + bytes(b ^ 0x55 for b in good[100:200]) + good[200:])
    out = sparknet("prepare", "--mix", str(mix)).stdout
    assert "its cached tokens were damaged" in out and "does not match its checksum" in out
    assert shard.read_bytes() == good and cache_damage(folder, read_manifest(folder)) is None
    # truncated after preparing: the loader refuses in one line instead of training on garbage
    shard.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="are damaged .* is .* bytes, the manifest says"):
        MixLoader(load_mix(str(mix)), batch=2, context=16, seed=0)
    out = sparknet("prepare", "--mix", str(mix)).stdout
    assert "tokenizing it again" in out and shard.read_bytes() == good


def _phase(run_dir: Path) -> str | None:
    return (read_json(run_dir / "status.json") or {}).get("phase")


@pytest.mark.slow
def test_stop_while_compiling_the_model_is_at_once_and_loses_nothing(logs):
    run_id = sparknet("train", "--profile", "tiny-cpu", "--set", "run.compile=true", "--set", "run.tokens=40_960",
                      "--set", "run.final_eval=false", "--detach").stdout.strip().splitlines()[-1]
    run = logs / run_id
    assert wait_for(lambda: _phase(run) == "compiling", scaled(300), 0.05), (run / "train.log").read_text()
    assert "stopped at step 0" in sparknet("stop", run_id).stdout
    assert [e["message"] for e in events(run) if e["event"] == "stopped"][-1].startswith(
        "stopped at step 0 while compiling the model")


@pytest.mark.slow
def test_stop_during_the_final_evaluation_ends_finished_without_it(logs, tmp_path):
    # the demo's stories under the GPT-2 tokenizer: the final evaluation scores all of WikiText-2 (long on a CPU)
    mix = tmp_path / "stories-gpt2.toml"
    mix.write_text(f'tokenizer = "gpt2"\nvalidation_share = 0.1\n[[sources]]\nname = "stories"\nweight = 1.0\n'
                   f'path = "{PROJECT / "profiles" / "mixes" / "demo" / "stories.jsonl"}"\nrepeat = true\n')
    run_id = sparknet("train", "--profile", "tiny-cpu", "--mix", str(mix), "--set", "model.vocab_size=50257",
                      "--set", "run.tokens=4096", "--set", "run.final_eval=true", "--set", "run.final_eval_tokens=0",
                      "--detach").stdout.strip().splitlines()[-1]
    run = logs / run_id
    assert wait_for(lambda: _phase(run) == "evaluating", scaled(300), 0.05), (run / "train.log").read_text()
    out = sparknet("stop", run_id).stdout
    assert "finished" in out and not (run / "eval.json").exists()
    assert (run / "model").is_dir()  # the model was saved before the evaluation began
    assert any("final evaluation stopped" in e["message"] for e in events(run))


@pytest.mark.slow
def test_a_compiled_run_leaves_its_compiling_step_out_of_speed_and_time_left(logs):
    proc = sparknet("train", "--profile", "tiny-cpu", "--set", "run.compile=true", "--set", "run.tokens=8192",
                    "--set", "batch.grad_accum=1", "--set", "run.log_every=1", "--set", "run.final_eval=false",
                    timeout=300)
    run = next(logs.iterdir())
    rows = read_jsonl(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 9))
    assert rows[0]["tokens_per_s"] is None and rows[0]["mfu"] is None  # the step that compiled: no rate
    rates = [r["tokens_per_s"] for r in rows[1:]]
    # every later rate is a step's own: none drags the compile time along (it takes seconds on a CPU)
    assert all(rate > 0 for rate in rates) and min(rates) > max(rates) / 20, rates
    assert "step 1/8 " in proc.stdout and "N/A tok/s" in proc.stdout
    assert "eta N/A" in proc.stdout.split("step 1/8 ")[1].splitlines()[0]
