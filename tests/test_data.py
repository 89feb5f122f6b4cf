"""The data mix: preparing the token cache and drawing batches."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from data_helpers import PROJECT, EncodeCounter, documents_of, stream, unique_docs, write_jsonl, write_mix

import engine.data as data
from engine.config.loading import load_mix
from engine.data import MixLoader, prepare_mix, read_manifest, validation_batches
from engine.data.tokenizer import load_tokenizer

# ---------------------------------------------------------------- the stand-in corpora, 50/30/20

RUN_TOKENS = 600_000  # 4,688 windows of 128 tokens


@pytest.fixture(scope="module")
def corpora(tmp_path_factory, standin_corpora):
    """The three stand-in corpora at 50/30/20, prepared for a RUN_TOKENS run into a private cache (whole: they
    are local)."""
    d = tmp_path_factory.mktemp("corpora")
    mix_path = write_mix(d / "standin.toml", [
        {"name": "textbooks", "weight": 0.5, "path": str(standin_corpora["textbooks"])},
        {"name": "web", "weight": 0.3, "path": str(standin_corpora["web"])},
        {"name": "educational", "weight": 0.2, "path": str(standin_corpora["educational"])},
    ], validation_share=0.01)
    mix = load_mix(str(mix_path))
    cache = d / "cache"
    report = prepare_mix(mix, RUN_TOKENS, cache_dir=cache, workers=1)
    return mix, cache, report


@pytest.mark.slow
def test_prepare_covers_every_share_plus_validation(corpora):
    mix, cache, report = corpora
    for name, share in mix.shares.items():
        r = report[name]
        assert r["train_tokens"] >= data.required_train_tokens(share, RUN_TOKENS)
        assert r["val_tokens"] == pytest.approx(0.01 * (r["train_tokens"] + r["val_tokens"]), rel=0.5)
        assert r["complete"]  # local sources are read whole, so a run samples all of each
        assert r["epochs_needed"] < 1
        m = read_manifest(Path(r["cache"]))
        assert m["tokenizer"]["fingerprint"] == load_tokenizer("gpt2").fingerprint
        assert m["dtype"] == "uint16"
        assert m["tokens"]["train"] == len(stream(Path(r["cache"]), "train"))
    progress = json.loads((cache / f"progress-{mix.name}.json").read_text())
    assert progress["state"] == "done" and {s["name"] for s in progress["sources"]} == set(mix.shares)


@pytest.mark.slow
def test_shares_within_half_a_percent_over_4688_windows(corpora):
    mix, cache, _ = corpora
    loader = MixLoader(mix, batch=16, context=128, seed=7, cache_dir=cache, total_tokens=RUN_TOKENS)
    streams = {name: stream(Path(corpora[2][name]["cache"]), "train").tobytes() for name in mix.shares}
    drawn = 0
    sampled: list[np.ndarray] = []
    while drawn < RUN_TOKENS:
        batch = loader.next_batch()
        assert batch.shape == (16, 129) and batch.dtype == np.int64
        drawn += batch.shape[0] * 128
        sampled.append(batch[0])
    by_source = loader.tokens_by_source()
    assert sum(by_source.values()) == drawn
    for name, share in mix.shares.items():
        assert abs(by_source[name] / drawn - share) < 0.005, (name, by_source[name] / drawn)
    # The accounting is the truth: every sampled window is a slice of the source stream it came from.
    found = {name: 0 for name in streams}
    for window in sampled:
        raw = window.astype(np.uint16).tobytes()
        hits = [name for name, s in streams.items() if s.find(raw) >= 0]
        assert len(hits) == 1
        found[hits[0]] += 1
    assert all(found[name] > 0 for name in streams)


@pytest.mark.slow
def test_every_document_ends_with_eos_and_train_val_are_disjoint(corpora):
    mix, cache, report = corpora
    eos = load_tokenizer("gpt2").eos_id
    for name in mix.shares:
        folder = Path(report[name]["cache"])
        m = read_manifest(folder)
        train = documents_of(stream(folder, "train"), eos)
        val = documents_of(stream(folder, "val"), eos)
        assert len(train) == m["documents"]["train"] and len(val) == m["documents"]["val"] > 0
        assert not set(train) & set(val)  # whole documents: none straddles the two splits
        assert all(len(doc) > 0 for doc in train + val)


def test_cached_documents_are_exactly_the_tokenized_source(tmp_path):
    texts = unique_docs(60) + ["   ", "has a literal <|endoftext|> inside", ""]
    src = write_jsonl(tmp_path / "docs.jsonl", texts)
    mix = load_mix(str(write_mix(tmp_path / "m.toml", [{"name": "docs", "weight": 1, "path": str(src)}],
                                 validation_share=0.1)))
    report = prepare_mix(mix, None, cache_dir=tmp_path / "cache", workers=1)
    tok = load_tokenizer("gpt2")
    folder = Path(report["docs"]["cache"])
    train = documents_of(stream(folder, "train"), tok.eos_id)
    val = documents_of(stream(folder, "val"), tok.eos_id)
    expected = [tuple(tok.encode(t)) for t in texts if t.strip()]
    assert sorted(train + val) == sorted(expected)
    assert [d for d in expected if d in set(train)] == train  # order kept within a split
    assert len(val) >= 3 and not set(train) & set(val)
    m = read_manifest(folder)
    assert m["complete"] and m["empty_documents"] == 2 and m["documents_read"] == len(texts)


# ---------------------------------------------------------------- drawing batches


@pytest.mark.slow
def test_same_seed_same_batches_other_seed_other_batches(corpora):
    mix, cache, _ = corpora
    a = MixLoader(mix, batch=8, context=256, seed=1, cache_dir=cache)
    b = MixLoader(mix, batch=8, context=256, seed=1, cache_dir=cache)
    c = MixLoader(mix, batch=8, context=256, seed=2, cache_dir=cache)
    first = [a.next_batch() for _ in range(5)]
    assert all(np.array_equal(x, b.next_batch()) for x in first)
    assert not all(np.array_equal(x, c.next_batch()) for x in first)


@pytest.mark.slow
def test_resume_mid_stream_gives_the_same_next_batches(corpora):
    mix, cache, _ = corpora
    run = MixLoader(mix, batch=8, context=512, seed=3, cache_dir=cache)
    for _ in range(7):
        run.next_batch()
    saved = json.loads(json.dumps(run.state_dict()))  # goes through a checkpoint as JSON
    expected = [run.next_batch() for _ in range(5)]
    resumed = MixLoader(mix, batch=8, context=512, seed=999, cache_dir=cache)
    resumed.load_state_dict(saved)
    assert all(np.array_equal(x, resumed.next_batch()) for x in expected)
    assert resumed.tokens_by_source() == run.tokens_by_source()


@pytest.mark.slow
def test_ranks_take_disjoint_windows_of_one_global_order(corpora):
    mix, cache, _ = corpora
    single = MixLoader(mix, batch=8, context=256, seed=5, cache_dir=cache)
    ranks = [MixLoader(mix, batch=4, context=256, seed=5, rank=r, world=2, cache_dir=cache) for r in range(2)]
    for _ in range(6):
        both = single.next_batch()
        assert np.array_equal(ranks[0].next_batch(), both[0::2])
        assert np.array_equal(ranks[1].next_batch(), both[1::2])
    assert ranks[0].tokens_by_source() == single.tokens_by_source()


def test_windows_cross_shard_boundaries_unchanged(tmp_path):
    src = write_jsonl(tmp_path / "docs.jsonl", unique_docs(200, seed=1))
    mix = load_mix(str(write_mix(tmp_path / "m.toml", [{"name": "docs", "weight": 1, "path": str(src)}])))
    prepare_mix(mix, None, cache_dir=tmp_path / "big", workers=1)
    report = prepare_mix(mix, None, cache_dir=tmp_path / "small", workers=1, shard_tokens=1000)
    assert len(read_manifest(Path(report["docs"]["cache"]))["shards"]["train"]) > 5
    big = MixLoader(mix, batch=8, context=200, seed=0, cache_dir=tmp_path / "big")
    small = MixLoader(mix, batch=8, context=200, seed=0, cache_dir=tmp_path / "small")
    for _ in range(12):
        assert np.array_equal(big.next_batch(), small.next_batch())


@pytest.mark.slow
def test_validation_batches_are_held_out_and_fixed(corpora):
    mix, cache, report = corpora
    first = list(validation_batches(mix, 6_000, batch=8, context=128, cache_dir=cache))  # of about 10k held out
    again = list(validation_batches(mix, 6_000, batch=8, context=128, cache_dir=cache))
    assert len(first) == len(again) and all(np.array_equal(a, b) for a, b in zip(first, again))
    windows = np.concatenate(first)
    assert windows.shape[1] == 129 and 0.9 * 6_000 <= windows.shape[0] * 128 <= 1.1 * 6_000
    val_streams = [stream(Path(report[n]["cache"]), "val").tobytes() for n in mix.shares]
    train_streams = [stream(Path(report[n]["cache"]), "train").tobytes() for n in mix.shares]
    for w in windows:
        raw = w.astype(np.uint16).tobytes()
        assert any(s.find(raw) >= 0 for s in val_streams)
        assert not any(s.find(raw) >= 0 for s in train_streams)


@pytest.mark.slow
def test_loader_is_fast_enough_to_feed_a_gpu(corpora):
    mix, cache, _ = corpora
    loader = MixLoader(mix, batch=24, context=1024, seed=0, cache_dir=cache)
    loader.next_batch()
    start = time.perf_counter()
    for _ in range(20):  # 491,520 tokens, half of them from the textbooks slice's 450k
        loader.next_batch()
    rate = 20 * 24 * 1024 / (time.perf_counter() - start)
    assert rate > 2_000_000, f"{rate:,.0f} tokens/s"


# ---------------------------------------------------------------- resumable and never twice


def test_interrupted_prepare_continues_where_it_stopped(tmp_path, monkeypatch):
    texts = unique_docs(300, seed=6)
    src = write_jsonl(tmp_path / "docs.jsonl", texts)
    mix = load_mix(str(write_mix(tmp_path / "m.toml", [{"name": "docs", "weight": 1, "path": str(src)}],
                                 validation_share=0.05)))
    clean = prepare_mix(mix, None, cache_dir=tmp_path / "clean", workers=1)
    monkeypatch.setattr(data.tokenize, "BATCH_DOCS", 20)
    monkeypatch.setattr(data.prepare, "COMMIT_EVERY_S", 0.0)
    monkeypatch.setattr(data.prepare, "PROGRESS_EVERY_S", 0.0)

    def stop_midway(snapshot):
        if snapshot["sources"][0]["documents"] >= 100:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prepare_mix(mix, None, cache_dir=tmp_path / "cache", workers=1, progress=stop_midway)
    folder = tmp_path / "cache" / Path(clean["docs"]["cache"]).relative_to(tmp_path / "clean")
    m = read_manifest(folder)
    assert not m["complete"] and 0 < m["documents_read"] < 300
    with open(folder / m["shards"]["train"][0]["file"], "ab") as f:
        f.write(b"\x01\x02\x03")  # a write the kill cut short: not in the manifest
    progress = json.loads((tmp_path / "cache" / "progress-m.json").read_text())
    assert progress["state"] == "failed" and progress["error"] == "interrupted"

    counter = EncodeCounter(monkeypatch)
    again = prepare_mix(mix, None, cache_dir=tmp_path / "cache", workers=1)
    assert counter.texts == 300 - m["documents_read"]  # only the rest was tokenized
    for split in ("train", "val"):
        assert np.array_equal(stream(folder, split), stream(Path(clean["docs"]["cache"]), split))
    assert again["docs"]["train_tokens"] == clean["docs"]["train_tokens"]


@pytest.mark.slow
def test_killed_prepare_process_resumes_to_the_same_cache(tmp_path, corpora):
    mix, _, reference = corpora
    cache = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": str(PROJECT), "SPARKNET_CACHE": str(cache)}
    # small batches, committed at once: the kill lands in the middle of a source
    script = ("import sys; import engine.data as d; from engine.cli.prepare import prepare_command; "
              "d.tokenize.BATCH_CHARS = 100_000; d.prepare.COMMIT_EVERY_S = 0; "
              "sys.exit(prepare_command(sys.argv[1], 600_000, workers=1))")
    proc = subprocess.Popen([sys.executable, "-c", script, mix.source], env=env, cwd=PROJECT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            manifests = list(cache.glob("tokens/*/*/manifest.json"))
            if any(m and m["documents_read"] > 0 for m in (read_manifest(p.parent) for p in manifests)):
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    report = prepare_mix(mix, 600_000, cache_dir=cache)
    for name in mix.shares:
        resumed, full = Path(report[name]["cache"]), Path(reference[name]["cache"])
        for split in ("train", "val"):
            a, b = stream(resumed, split), stream(full, split)
            assert len(a) > 0 and np.array_equal(a, b[:len(a)])  # a prefix of the same deterministic order


def test_second_prepare_is_instant_and_complete_sources_are_never_reread(tmp_path, monkeypatch):
    src = write_jsonl(tmp_path / "docs.jsonl", unique_docs(50, seed=7))
    mix_path = write_mix(tmp_path / "m.toml", [{"name": "docs", "weight": 1, "path": str(src), "repeat": True}])
    mix = load_mix(str(mix_path))
    prepare_mix(mix, 10_000, cache_dir=tmp_path / "cache", workers=1)
    counter = EncodeCounter(monkeypatch)
    for tokens in (10_000, 5_000_000, None):  # a complete source covers any budget
        report = prepare_mix(mix, tokens, cache_dir=tmp_path / "cache", workers=1)
        assert report["docs"]["state"] == "cached"
    assert counter.texts == 0
    # the same source under another name in another mix shares the cache
    other = load_mix(str(write_mix(tmp_path / "other.toml", [{"name": "renamed", "weight": 3, "path": str(src)}])))
    assert prepare_mix(other, None, cache_dir=tmp_path / "cache", workers=1)["renamed"]["state"] == "cached"
    assert counter.texts == 0


@pytest.mark.slow
def test_parallel_workers_write_the_same_cache_as_one_process(tmp_path, monkeypatch):
    src = write_jsonl(tmp_path / "docs.jsonl", unique_docs(400, seed=8))
    mix = load_mix(str(write_mix(tmp_path / "m.toml", [{"name": "docs", "weight": 1, "path": str(src)}],
                                 validation_share=0.05)))
    one = prepare_mix(mix, None, cache_dir=tmp_path / "one", workers=1)
    monkeypatch.setattr(data.prepare, "POOL_MIN_TOKENS", 0)
    monkeypatch.setattr(data.tokenize, "BATCH_DOCS", 25)
    two = prepare_mix(mix, None, cache_dir=tmp_path / "two", workers=2)
    for split in ("train", "val"):
        assert np.array_equal(stream(Path(one["docs"]["cache"]), split), stream(Path(two["docs"]["cache"]), split))
