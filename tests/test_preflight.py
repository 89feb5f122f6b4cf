"""`--check` is the run's own start: every failure that can be known before a run exists stops `train --check`,
`train`, `train --detach`, `bench` and `lr-find` alike, in one line with exit code 2, and leaves no run folder;
what a ready run will need (its memory) is said. Real files, real processes; the machine's memory is read from a
meminfo file the test writes where it must be small."""

from __future__ import annotations

import os

import pytest
from cli_helpers import sparknet
from data_helpers import unique_docs, write_jsonl, write_mix

from engine.config.loading import load_profile
from engine.config.memory import estimate_memory, largest_fitting_micro_batch

GPT2 = ["--set", "model.vocab_size=50257"]


def refused_before_start(logs, args: list[str], env: dict, *words: str) -> set[str]:
    """Each verb that trains refuses in one line; the lines, less the verb. The bench and the range test train runs
    of their own, with settings of their own (their length) that a line must not blame on the user."""
    lines = set()
    for how in (["train", "--check"], ["train"], ["train", "--detach"], ["bench", "--steps", "4"],
                ["bench", "--to-quality", "--against", "tiny-cpu", "--steps", "4"], ["lr-find", "--steps", "20"]):
        proc = sparknet(*how, *args, check=False, env=env)
        err = proc.stderr.strip()
        assert proc.returncode == 2 and "\n" not in err and "Traceback" not in err, (how, proc.stderr)
        assert all(word in err for word in words), err
        assert list(logs.iterdir()) == [], how
        lines.add(err.split(": error: ", 1)[1])
    return lines


def fake_meminfo(tmp_path, available_gib: float) -> str:
    path = tmp_path / f"meminfo-{available_gib}"
    path.write_text(f"MemTotal: {int(available_gib * 2 * 2**20)} kB\nMemAvailable: {int(available_gib * 2**20)} kB\n")
    return str(path)


@pytest.fixture
def cases(tmp_path):
    """(overrides and mix, extra environment, words the refusal holds) for each fault."""
    empty = write_mix(tmp_path / "empty.toml", [{"name": "notes", "weight": 1, "path": str(tmp_path / "e.jsonl")}])
    (tmp_path / "e.jsonl").write_text("")
    (tmp_path / "blob.txt").write_bytes(os.urandom(200_000))
    binary = write_mix(tmp_path / "binary.toml", [{"name": "blob", "weight": 1, "path": str(tmp_path / "blob.txt")}])
    hub = write_mix(tmp_path / "hub.toml", [{"name": "edu", "weight": 1, "hf": "HuggingFaceFW/fineweb-edu"}])
    gpt2_text = write_mix(tmp_path / "gpt2.toml", [{"name": "notes", "weight": 1, "path": str(
        write_jsonl(tmp_path / "notes.jsonl", unique_docs(200)))}])
    offline = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "HF_DATASETS_CACHE": str(tmp_path / "hf")}
    return {
        "an empty corpus file": (["--mix", str(empty), *GPT2], {}, ("e.jsonl", "holds no text")),
        "a binary file named .txt": (["--mix", str(binary), *GPT2], {}, ("blob.txt", "not UTF-8")),
        "a model smaller than the tokenizer": (["--mix", str(gpt2_text)], {},
                                               ("tiny-cpu.toml", "set model.vocab_size = 50257")),
        "run.device cuda without one": (["--set", 'run.device="cuda"'], {}, ("run.device", "no CUDA GPU")),
        "a width of 100,000,000": (["--set", "model.n_embd=100000000", "--set", "model.n_head=1"], {},
                                   ("TiB", "64.0 GiB free", "choose a smaller model")),
        "a context of 100,000,000": (["--set", "model.context=100000000"], {}, ("model.context",)),
        "a hub source offline with no cached copy": (["--mix", str(hub), *GPT2], offline, ("fineweb-edu",)),
        "more memory than the machine has": (["--set", "batch.micro_batch=4096", "--set", "run.memory_floor_gb=0.5"],
                                             {"SPARKNET_MEMINFO": fake_meminfo(tmp_path, 2.0)},
                                             ("8.5 GiB", "2.0 GiB free", "512.0 MiB floor",
                                              "set batch.micro_batch = 512 and batch.grad_accum = 16")),
    }


@pytest.mark.slow
def test_every_pre_start_failure_exits_2_and_makes_no_run_folder(logs, cases, tmp_path):
    steady = fake_meminfo(tmp_path, 64.0)  # a refusal for memory names what is free, which moves on a real machine
    for name, (args, extra, words) in cases.items():
        env = {**os.environ, "SPARKNET_MEMINFO": steady, **extra}
        lines = refused_before_start(logs, ["--profile", "tiny-cpu", *args], env, *words)
        assert len(lines) == 1, (name, lines)  # none of these depends on the run's length: every verb says the same


def test_the_ready_line_says_where_alerts_will_go(tmp_path):
    """Refusals of bad URLs are in test_fault_table.py; a good one is named without what may be a secret."""
    config = tmp_path / "config"
    (config / "sparknet").mkdir(parents=True)
    (config / "sparknet" / "notify.toml").write_text('urls = ["ntfy://my-topic"]\nevents = ["failed"]\n')
    env = {**os.environ, "XDG_CONFIG_HOME": str(config)}
    env.pop("SPARKNET_NOTIFY", None)
    ready = sparknet("train", "--check", "--profile", "tiny-cpu", env=env).stdout
    assert ready.strip().endswith("; alerts of failed to ntfy://my-topic"), ready
    slack = "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ"  # apprise's own example; its tokens are secret
    env["SPARKNET_NOTIFY"] = f"json://127.0.0.1:9/hook, {slack}"  # all events; the file is not read
    ready = sparknet("train", "--check", "--profile", "tiny-cpu", env=env).stdout
    assert ready.strip().endswith("; alerts to json://127.0.0.1:9, slack://…"), ready
    env["SPARKNET_NOTIFY"] = ""
    (config / "sparknet" / "notify.toml").unlink()
    assert "alerts" not in sparknet("train", "--check", "--profile", "tiny-cpu", env=env).stdout


def test_the_ready_line_says_when_in_training_wikitext_will_be_off(tmp_path):
    """The run trains on without it (a warning event); --check says so before the run, and names the fix."""
    check = ["train", "--check", "--profile", "tiny-cpu", "--set", "run.wikitext_every=5"]
    ready = sparknet(*check).stdout  # the suite names a local copy in SPARKNET_WIKITEXT
    assert ready.startswith("ready:") and "WikiText" not in ready, ready
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    env.pop("SPARKNET_WIKITEXT")
    ready = sparknet(*check, env=env).stdout
    assert "; in-training WikiText-2 evaluation off: WikiText-2 not available" in ready, ready
    assert "set SPARKNET_WIKITEXT=DIR" in ready and "\n" not in ready.strip(), ready
    assert "WikiText" not in sparknet("train", "--check", "--profile", "tiny-cpu", env=env).stdout  # not asked for


@pytest.mark.slow
def test_a_source_too_small_for_its_share_is_refused_from_the_prepared_cache(logs, tmp_path):
    env = {**os.environ, "SPARKNET_CACHE": str(tmp_path / "cache")}
    small = write_jsonl(tmp_path / "posts.jsonl", unique_docs(400, seed=3))
    big = write_jsonl(tmp_path / "books.jsonl", unique_docs(4000, seed=4))
    mix = write_mix(tmp_path / "m.toml", [{"name": "posts", "weight": 1, "path": str(small)},
                                          {"name": "books", "weight": 1, "path": str(big), "repeat": True}])
    sparknet("prepare", "--mix", str(mix), env=env)
    refused_before_start(logs, ["--profile", "tiny-cpu", "--mix", str(mix), *GPT2, "--set", "run.tokens=2_000_000"],
                         env, "source 'posts'", "missing", "or set repeat = true")
    # a source holding less than the spare margin alone is told so, not to lower run.tokens to 0
    proc = sparknet("train", "--profile", "tiny-cpu", "--mix", str(mix), *GPT2, "--set", "run.tokens=40_960",
                    "--check", check=False, env=env)
    assert proc.returncode == 2 and "less than the 65,536 spare tokens" in proc.stderr, proc.stderr


@pytest.mark.slow
def test_a_damaged_cache_is_named_by_check_and_repaired_by_the_run(logs, tmp_path):
    env = {**os.environ, "SPARKNET_CACHE": str(tmp_path / "cache")}
    sparknet("prepare", "--mix", "demo", env=env)
    shard = sorted((tmp_path / "cache").glob("tokens/*/stories*/train-*.bin"))[0]
    data = bytearray(shard.read_bytes())
    data[:64] = bytes(64)
    shard.write_bytes(bytes(data))
    ready = sparknet("train", "--profile", "tiny-cpu", "--check", env=env).stdout
    assert "ready:" in ready and "source 'stories': its cached tokens are damaged" in ready


def test_the_memory_estimate_matches_the_peaks_measured_on_an_h100():
    """docs/lab/performance.md: codelion-70m 47.0 GiB at 120 x 1024, modern-70m 24.8-25.5 GiB at 60 x 1024,
    16.8 GiB at 40 x 1024 and 13.1 GiB at 30 x 1024 (the estimate may be high by a few GiB, never low by much)."""
    gib = 1 << 30
    for name, micro_batch, measured in (("codelion-70m", 120, 47.0), ("modern-70m", 60, 25.5), ("modern-70m", 40, 16.8),
                                         ("modern-70m", 30, 13.1)):
        estimate = estimate_memory(load_profile(name), micro_batch).total_b / gib
        assert measured * 0.95 <= estimate <= measured * 1.10, (name, micro_batch, estimate)
    profile = load_profile("codelion-70m")  # 120 x 1: a 40 GiB card fits 60 x 2 at the same tokens a step
    assert largest_fitting_micro_batch(profile, 40 * gib) == 60
    assert largest_fitting_micro_batch(profile, 20 * gib) == 40
    assert largest_fitting_micro_batch(load_profile("tiny-cpu", ["model.n_embd=100000000", "model.n_head=1"]),
                                       100 * gib) is None


@pytest.mark.slow
def test_resume_refuses_a_run_the_machine_no_longer_has_the_memory_or_the_settings_for(logs, tmp_path):
    sparknet("train", "--profile", "tiny-cpu", "--set", "run.tokens=4096", "--set", "run.final_eval=false")
    (run,) = logs.iterdir()
    status = (run / "status.json").read_text().replace('"finished"', '"stopped"')
    (run / "status.json").write_text(status)  # as a run stopped part-way reads
    env = {**os.environ, "SPARKNET_MEMINFO": fake_meminfo(tmp_path, 0.01)}
    proc = sparknet("resume", str(run), check=False, env=env)
    err = proc.stderr.strip()
    assert proc.returncode == 2 and "\n" not in err and "the run needs about" in err and "free on the CPU" in err
    assert (run / "status.json").read_text() == status  # nothing written: the run is as it was
    for setting, value, says in (("SPARKNET_NOTIFY", "garbage://x", "garbage://…"),
                                 ("SPARKNET_TELEMETRY_INTERVAL", "soon", "'soon' is not a number of seconds")):
        proc = sparknet("resume", str(run), check=False, env={**os.environ, setting: value})
        assert proc.returncode == 2 and setting in proc.stderr and says in proc.stderr, proc.stderr
        assert (run / "status.json").read_text() == status


def test_the_bench_names_the_users_mix_when_a_source_proves_too_small(tmp_path):
    """Found only while tokenizing (nothing cached yet): the bench's run is a temporary copy that is gone when
    the error is read, so the line must name the user's own mix file."""
    notes = write_jsonl(tmp_path / "notes.jsonl", unique_docs(50, seed=7))
    mix = write_mix(tmp_path / "small.toml", [{"name": "notes", "weight": 1, "path": str(notes)}])
    proc = sparknet("bench", "--profile", "tiny-cpu", "--mix", mix, *GPT2, "--steps", "4", check=False)
    err = proc.stderr.strip()
    assert proc.returncode == 2 and "\n" not in err and "Traceback" not in err, proc.stderr
    assert f"set repeat = true for it in {mix}" in err and "sparknet-bench-" not in err, err
