"""WikiText-2 evaluation: both protocols against direct implementations, bits per byte, baselines, eval.json.

Real parts throughout: the GPT-2 tokenizer and WikiText-2 files from
../shared/data, tiny random models on the CPU, transformers loading exported
folders. The hub is kept out with HF_HUB_OFFLINE (conftest) and, where a
cached copy could change the outcome, a private HF_HOME in a subprocess.
"""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cli_helpers import scaled
import torch
import torch.nn.functional as F

from engine import SparkNetError
from engine.checkpoint import save_checkpoint
from engine.config import ModelConfig
from engine.evaluate import (capped_wikitext_eval, eval_command, load_model_folder, load_wikitext_ids,
                             sample_continuations, score_stream, sliding_windows, sparknet_2000_lines,
                             standard_text, wikitext_rows)
from engine.evaluate.protocols import StandardProtocol
from engine.export import export_hf
from engine.model import GPT
from engine.tokenizer import load_tokenizer

PROJECT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT.parent / "shared" / "data"
WIKITEXT_DIR = SHARED_DATA / "wikitext-2-raw"
TOKENIZER_DIR = SHARED_DATA / "gpt2-tokenizer" / "hf"
LN_VOCAB = math.log(50257)


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(str(TOKENIZER_DIR))


@pytest.fixture(scope="module")
def test_rows():
    rows, _ = wikitext_rows("test", WIKITEXT_DIR)
    return rows


@pytest.fixture(scope="module")
def test_ids(tok, test_rows):
    # the first 40 rows are plenty for tiny models and keep every test in seconds
    return np.asarray(tok.encode(standard_text(test_rows[:40])), dtype=np.int64)


def tiny_model(context=64, seed=0, dropout=0.0, vocab_size=50257) -> GPT:
    torch.manual_seed(seed)
    return GPT(ModelConfig(n_layer=1, n_embd=32, n_head=2, context=context, dropout=dropout,
                           vocab_size=vocab_size)).eval()


def no_progress(name, total):
    return lambda n: None


def in_protocol(doc: dict, protocol: str = "standard") -> dict:
    """The document with one protocol's section (its protocol, results, deltas) lifted to the top."""
    (section,) = [s for s in doc["evaluations"] if s["protocol"]["name"] == protocol]
    return {**doc, **section}


def read_eval(folder: Path, protocol: str = "standard", name: str = "eval.json") -> dict:
    return in_protocol(json.loads((folder / name).read_text()), protocol)


# ------------------------------------------------------------------ data


def test_wikitext_rows_and_published_token_counts(tok, test_rows):
    valid_rows, origin = wikitext_rows("validation", WIKITEXT_DIR)
    assert origin.endswith("wiki.valid.raw")
    assert (len(test_rows), len(valid_rows)) == (4358, 3760)  # the hub's row counts
    # hub rows: a blank line is an empty row, a line with text keeps its newline
    assert test_rows[:3] == ["", " = Robert Boulter = \n", ""]
    joined = standard_text(test_rows)
    ids, n_bytes = load_wikitext_ids(tok, WIKITEXT_DIR, split="test")
    # the Hugging Face recipe ("\n\n".join of the rows) gives 287,644 tokens, the figure its users report;
    # the file's own text gives the 286,221 quoted in the reference notes
    assert len(ids) == len(tok.encode(joined)) == 287_644
    assert len(tok.encode((WIKITEXT_DIR / "wiki.test.raw").read_text(encoding="utf-8"))) == 286_221
    assert len(tok.encode((WIKITEXT_DIR / "wiki.valid.raw").read_text(encoding="utf-8"))) == 249_887
    # the byte counter is exact over the whole split
    assert n_bytes(0, len(ids)) == len(joined.encode("utf-8"))


def test_sparknet_2000_lines_match_datasets_shuffle():
    import datasets

    rows, _ = wikitext_rows("validation", WIKITEXT_DIR)
    shuffled = datasets.Dataset.from_dict({"text": rows}).shuffle(seed=42)["text"]
    expected = [t.strip() for t in shuffled if t.strip()][:2000]
    lines = sparknet_2000_lines(rows)
    assert len(lines) == 2000
    assert lines == expected


def test_missing_wikitext_names_both_ways(monkeypatch, tmp_path):
    monkeypatch.delenv("SPARKNET_WIKITEXT", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SparkNetError) as e:
        wikitext_rows("test")
    msg = str(e.value)
    assert "\n" not in msg and "--wikitext DIR" in msg and "SPARKNET_WIKITEXT" in msg

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SparkNetError, match="wiki.test.raw not found"):
        wikitext_rows("test", empty)


def test_unreachable_hub_fails_fast(monkeypatch):
    import time

    for var in ("SPARKNET_WIKITEXT", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HTTPS_PROXY", "https_proxy",
                "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens there
    start = time.monotonic()
    with pytest.raises(SparkNetError, match="the Hugging Face hub is not reachable.*--wikitext DIR"):
        wikitext_rows("test")
    assert time.monotonic() - start < 5  # no half-minute of library retries


def test_eval_without_wikitext_fails_before_writing(monkeypatch, tmp_path, tok):
    model_dir = export_hf(tiny_model(), tmp_path / "model", tok)
    monkeypatch.delenv("SPARKNET_WIKITEXT", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SparkNetError, match="SPARKNET_WIKITEXT"):
        eval_command(str(model_dir), protocol="standard", samples=False, max_tokens=100)
    assert not (model_dir / "eval.json").exists()


# ------------------------------------------------------------------ standard protocol


def brute_force_nll(model: GPT, ids: np.ndarray, context: int, stride: int) -> tuple[float, int]:
    """Each token alone: the window that scores it is the earliest one (starts at multiples of stride)
    that holds it after its first position; the model sees that window's tokens up to it."""
    total, count = 0.0, 0
    with torch.no_grad():
        for t in range(1, len(ids)):
            k = max(0, math.ceil((t - context + 1) / stride))  # earliest window whose end passes t
            begin = k * stride
            if t < begin + 1:
                continue  # first token of a disjoint chunk: no earlier token in its window
            x = torch.as_tensor(ids[begin:t][None])
            logp = F.log_softmax(model(x)[0, -1].float(), dim=-1)
            total -= float(logp[ids[t]])
            count += 1
    return total, count


@pytest.mark.parametrize("stride,batch_size", [(5, 3), (8, None), (16, 1)])
def test_sliding_window_equals_brute_force(test_ids, stride, batch_size):
    context = 16
    model = tiny_model(context=context)
    ids = test_ids[:100]
    s = score_stream(model, ids, stride, "cpu", batch_size=batch_size)
    nll, count = brute_force_nll(model, ids, context, stride)
    assert s.tokens == count
    assert s.nll == pytest.approx(nll, rel=1e-5)


def test_stride_equal_to_context_is_disjoint_chunks(test_ids):
    context = 32
    model = tiny_model(context=context)
    ids = torch.as_tensor(test_ids[:200])
    total, count = 0.0, 0
    with torch.no_grad():
        for begin in range(0, len(ids), context):
            chunk = ids[begin:begin + context][None]
            if chunk.size(1) < 2:
                continue
            n = chunk.size(1) - 1
            total += float(model(chunk[:, :-1], chunk[:, 1:])) * n
            count += n
    s = score_stream(model, test_ids[:200], context, "cpu")
    assert s.tokens == count == 200 - math.ceil(200 / context)
    assert s.loss == pytest.approx(total / count, rel=1e-5)
    assert len(sliding_windows(200, context, context)) == math.ceil(200 / context)


def test_untrained_model_scores_near_ln_vocab(test_ids):
    s = score_stream(tiny_model(), test_ids[:1000], 32, "cpu")
    assert s.tokens == 999
    assert abs(s.loss - LN_VOCAB) < 0.05


def test_bits_per_byte_is_nll_over_scored_bytes(tmp_path, tok, test_rows):
    rows = test_rows[:12]
    text = standard_text(rows)
    ids = tok.encode(text)
    loaded = load_model_folder(export_hf(tiny_model(), tmp_path / "model", tok))
    row = StandardProtocol(rows, stride=32, max_tokens=None).measure("m", loaded, torch.device("cpu"), None,
                                                                     no_progress)
    # every token but the first is scored: the scored text is the whole text less the first token's bytes
    scored_bytes = len(text.encode("utf-8")) - len(tok.decode(ids[:1]).encode("utf-8"))
    assert row["tokens_scored"] == len(ids) - 1
    assert row["bytes_scored"] == scored_bytes
    assert row["bits_per_byte"] == pytest.approx(row["loss"] * row["tokens_scored"] / (scored_bytes * math.log(2)))
    assert row["perplexity"] == pytest.approx(math.exp(row["loss"]))


# ------------------------------------------------------------------ sparknet-2000 protocol


def line_by_line_2000(model: GPT, tok, lines: list[str]) -> tuple[float, int, int]:
    """The published protocol written plainly: each line alone, unpadded; batches of 8 lines; mean of batch means."""
    per_line = []
    with torch.no_grad():
        for line in lines:
            ids = tok.encode(line)[:256]
            if len(ids) < 2:
                per_line.append((0.0, 0, 0))
                continue
            x = torch.tensor([ids])
            nll = F.cross_entropy(model(x[:, :-1])[0].float(), x[0, 1:], reduction="sum")
            n_bytes = len(line.encode("utf-8")) - len(tok.decode(ids[:1]).encode("utf-8")) if len(ids) < 256 \
                else len(tok.decode(ids[1:]).encode("utf-8"))
            per_line.append((float(nll), len(ids) - 1, n_bytes))
    means = []
    for i in range(0, len(per_line), 8):
        batch = per_line[i:i + 8]
        n = sum(c for _, c, _ in batch)
        if n:
            means.append(sum(s for s, _, _ in batch) / n)
    return sum(means) / len(means), sum(c for _, c, _ in per_line), sum(b for _, _, b in per_line)


def test_sparknet_2000_matches_line_by_line(tmp_path, tok):
    model = tiny_model(context=256)
    model_dir = export_hf(model, tmp_path / "model", tok)
    assert eval_command(str(model_dir), protocol="sparknet-2000", wikitext=str(WIKITEXT_DIR), samples=False,
                        max_tokens=1950) == 0
    doc = read_eval(model_dir, "sparknet-2000")
    row = doc["results"][0]
    assert doc["protocol"]["name"] == row["protocol"] == "sparknet-2000"
    assert doc["protocol"]["split"] == "validation"
    lines = sparknet_2000_lines(wikitext_rows("validation", WIKITEXT_DIR)[0])[: row["lines"]]
    assert any(len(tok.encode(line)) > 256 for line in lines)  # truncation is exercised
    assert row["lines"] > 16 and row["lines"] % 8  # several batches and a short last one
    loss, tokens, n_bytes = line_by_line_2000(model, tok, lines)
    assert row["tokens_scored"] == tokens
    assert row["loss"] == pytest.approx(loss, rel=1e-5)
    assert row["perplexity"] == pytest.approx(math.exp(loss), rel=1e-5)
    assert row["bytes_scored"] == n_bytes
    assert row["deviation"].startswith("capped at")


def test_sparknet_2000_short_context_is_labelled(tmp_path, tok):
    model_dir = export_hf(tiny_model(context=64), tmp_path / "model", tok)
    eval_command(str(model_dir), protocol="sparknet-2000", wikitext=str(WIKITEXT_DIR), samples=False,
                 max_tokens=300)
    doc = read_eval(model_dir, "sparknet-2000")
    assert doc["results"][0]["max_len"] == 64
    assert "truncated to the model's context 64" in doc["results"][0]["deviation"]
    published = {d["against"]: d for d in doc["deltas"]}
    # same protocol name as the published table, but run differently: never presented as exact
    assert published["GPT-2 (124M)"]["comparable"] == "approximate"


# ------------------------------------------------------------------ targets


def test_hf_export_and_engine_model_score_the_same(tmp_path, tok):
    engine_dir = export_hf(tiny_model(seed=3), tmp_path / "engine", tok)
    hf_dir = tmp_path / "hf"
    shutil.copytree(engine_dir, hf_dir)
    (hf_dir / "sparknet_model.json").unlink()  # now only transformers can read it
    engine_loaded, hf_loaded = load_model_folder(engine_dir), load_model_folder(hf_dir)
    assert isinstance(engine_loaded.model, GPT)
    assert not isinstance(hf_loaded.model, GPT)
    for folder in (engine_dir, hf_dir):
        assert eval_command(str(folder), protocol="standard", wikitext=str(WIKITEXT_DIR), samples=False,
                            max_tokens=400, stride=32) == 0
    a, b = read_eval(engine_dir)["results"][0], read_eval(hf_dir)["results"][0]
    assert a["tokens_scored"] == b["tokens_scored"] == 400
    assert a["perplexity"] == pytest.approx(b["perplexity"], rel=1e-5)
    assert a["bits_per_byte"] == pytest.approx(b["bits_per_byte"], rel=1e-5)
    assert a["tokenizer"] == b["tokenizer"] == "gpt2"


def test_stride_none_is_half_of_each_context(tmp_path, tok):
    model_dir = export_hf(tiny_model(context=64), tmp_path / "model", tok)
    eval_command(str(model_dir), protocol="standard", stride=None, wikitext=str(WIKITEXT_DIR), samples=False,
                 max_tokens=200)
    doc = read_eval(model_dir)
    row = doc["results"][0]
    assert (row["stride"], row["tokens_scored"]) == (32, 200)  # overlapping windows score every token
    assert doc["protocol"]["stride"] == "half the model's context, at most 512"


def make_run(logs: Path, model: GPT, name="tiny-run") -> Path:
    run_dir = logs / name
    run_dir.mkdir()
    (run_dir / "run.toml").write_text('[mix]\ntokenizer = "gpt2"\n')
    opt = torch.optim.AdamW(model.parameters())
    save_checkpoint(run_dir, 10, model, opt, {"tokens": 1000, "tokenizer": "gpt2"}, keep=2)
    return run_dir


def test_run_evaluation_writes_eval_json_and_prints_table(logs, tok, capsys):
    model = tiny_model(seed=5)
    run_dir = make_run(logs, model)
    assert eval_command("tiny-run", protocol="standard", wikitext=str(WIKITEXT_DIR), max_tokens=300,
                        temperature=0.8, top_k=20) == 0
    # no final model yet: the checkpoint's evaluation is kept beside where the final one will go
    assert not (run_dir / "eval.json").exists()
    doc = read_eval(run_dir, name="eval-step-00000010.json")
    assert set(doc) >= {"created_at", "target", "evaluations", "samples", "settings"}
    assert doc["checkpoint_step"] == 10 and doc["final"] is False
    target, gpt2, codelion = doc["results"]
    assert (target["model"], target["source"], target["tokenizer_matches"]) == ("this run", "measured", True)
    assert target["path"].endswith("checkpoints")
    assert target["stride"] == 64 and target["context"] == 64  # stride never exceeds the model's context
    assert target["deviation"] == "capped at 300 tokens"
    # the same numbers as scoring the checkpoint's model directly
    ids = tok.encode(standard_text(wikitext_rows("test", WIKITEXT_DIR)[0]))[:301]
    assert target["loss"] == pytest.approx(score_stream(model, ids, 64, "cpu").loss, rel=1e-5)
    # samples: the fixed prompts, sampled with the options given
    assert len(doc["samples"]) == 5 and all(s["prompt"] and isinstance(s["continuation"], str)
                                            for s in doc["samples"])
    assert doc["settings"]["sampling"]["top_k"] == 20
    out = capsys.readouterr().out
    assert "this run" in out and "published" in out and str(run_dir / "eval-step-00000010.json") in out
    assert "using checkpoint step-00000010 (step 10)" in out


def test_run_with_exported_model_uses_it(logs, tok):
    run_dir = make_run(logs, tiny_model(seed=1))
    trained = tiny_model(seed=2)  # different weights: proves model/ wins over the checkpoint
    export_hf(trained, run_dir / "model", tok)
    (run_dir / "eval.json").write_text('{"stale": true}')
    eval_command(str(run_dir), protocol="standard", wikitext=str(WIKITEXT_DIR), samples=False, max_tokens=200)
    assert read_eval(run_dir)["final"] is True  # the final model's evaluation is eval.json
    row = read_eval(run_dir)["results"][0]
    assert row["path"] == str(run_dir / "model")
    ids = tok.encode(standard_text(wikitext_rows("test", WIKITEXT_DIR)[0]))[:201]
    assert row["loss"] == pytest.approx(score_stream(trained, ids, 64, "cpu").loss, rel=1e-5)


def test_bad_targets_and_options_are_one_line_errors(tmp_path, logs):
    for call, pattern in [
        (lambda: eval_command("no-such-run"), "not found"),
        (lambda: eval_command(str(tmp_path)), "not a run directory or model folder"),
        (lambda: eval_command("x", protocol="ppl"), "--protocol ppl"),
        (lambda: eval_command("x", stride=0), "--stride 0"),
        (lambda: eval_command("x", baseline_dirs={"gpt3": str(tmp_path)}), "gpt2=DIR or codelion=DIR"),
        (lambda: eval_command("x", top_k=-1), "--top-k"),
    ]:
        with pytest.raises(SparkNetError, match=pattern) as e:
            call()
        assert "\n" not in str(e.value)


# ------------------------------------------------------------------ baselines


def test_published_figures_when_baselines_are_not_measured(tmp_path, tok):
    model_dir = export_hf(tiny_model(), tmp_path / "model", tok)
    eval_command(str(model_dir), protocol="standard", wikitext=str(WIKITEXT_DIR), samples=False, max_tokens=200)
    doc = read_eval(model_dir)
    _, gpt2, codelion = doc["results"]
    assert gpt2["source"] == codelion["source"] == "published"
    assert (gpt2["perplexity"], gpt2["protocol"]) == (29.9, "HF sliding window, context 1024, test")
    assert gpt2["loss"] is None and gpt2["bits_per_byte"] is None  # nothing published that was not
    assert codelion["perplexity"] is None and "no published figure" in codelion["note"]
    assert gpt2["tokenizer_matches"] is True
    d_gpt2, d_codelion = doc["deltas"]
    assert d_gpt2["comparable"] == "approximate"
    assert d_gpt2["perplexity_ratio"] == pytest.approx(doc["results"][0]["perplexity"] / 29.9)
    assert d_codelion["comparable"] == "no"

    eval_command(str(model_dir), protocol="sparknet-2000", wikitext=str(WIKITEXT_DIR), samples=False,
                 max_tokens=200)
    _, gpt2, codelion = read_eval(model_dir, "sparknet-2000")["results"]
    assert (gpt2["loss"], gpt2["perplexity"], codelion["loss"], codelion["perplexity"]) == \
        (3.9407, 51.45, 5.0129, 150.35)
    assert gpt2["protocol"] == codelion["protocol"] == "sparknet-2000"
    # the other protocol's section is kept beside it, first as always
    assert [s["protocol"]["name"] for s in json.loads((model_dir / "eval.json").read_text())["evaluations"]] == \
        ["standard", "sparknet-2000"]
    assert read_eval(model_dir)["results"][1]["perplexity"] == 29.9


def test_unloadable_baseline_folder_falls_back_to_published(tmp_path, tok, capsys):
    model_dir = export_hf(tiny_model(), tmp_path / "model", tok)
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    eval_command(str(model_dir), protocol="standard", wikitext=str(WIKITEXT_DIR), samples=False, max_tokens=200,
                 baseline_dirs={"gpt2": str(empty)})
    gpt2 = read_eval(model_dir)["results"][1]
    assert gpt2["source"] == "published" and gpt2["perplexity"] == 29.9
    assert "--baseline-dir gpt2" in gpt2["note"] and str(empty) in gpt2["note"]
    assert "showing its published figures" in capsys.readouterr().err


def test_baselines_offline_fall_back_to_published(tmp_path, tok):
    """The real command in a fresh process, with an empty Hugging Face cache and the hub switched off."""
    model_dir = export_hf(tiny_model(), tmp_path / "model", tok)
    env = dict(os.environ, HF_HOME=str(tmp_path / "hf-home"), HF_HUB_OFFLINE="1",
               PYTHONPATH=str(PROJECT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    code = ("import sys; from engine.evaluate import eval_command; "
            f"sys.exit(eval_command({str(model_dir)!r}, baselines=True, samples=False, max_tokens=100))")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=scaled(300))
    assert proc.returncode == 0, proc.stderr
    results = read_eval(model_dir)["results"]
    assert [r["source"] for r in results] == ["measured", "published", "published"]
    assert all("not in the Hugging Face cache" in r["note"] for r in results[1:])
    assert "published" in proc.stdout and "Traceback" not in proc.stderr


def test_baseline_measured_from_local_folder(tmp_path, tok):
    target_dir = export_hf(tiny_model(seed=1), tmp_path / "target", tok)
    baseline_model = tiny_model(seed=2)
    baseline_dir = export_hf(baseline_model, tmp_path / "gpt2-local", tok)
    (baseline_dir / "sparknet_model.json").unlink()  # as a Hugging Face download would be
    eval_command(str(target_dir), protocol="standard", wikitext=str(WIKITEXT_DIR), samples=False, max_tokens=300,
                 baseline_dirs={"GPT2": str(baseline_dir)})
    doc = read_eval(target_dir)
    target, gpt2, codelion = doc["results"]
    assert (gpt2["source"], gpt2["hf_id"], gpt2["tokenizer_matches"]) == ("measured", "openai-community/gpt2", True)
    assert codelion["source"] == "published"  # only the named baseline is loaded
    ids = tok.encode(standard_text(wikitext_rows("test", WIKITEXT_DIR)[0]))[:301]
    assert gpt2["loss"] == pytest.approx(score_stream(baseline_model, ids, 64, "cpu").loss, rel=1e-5)
    d = doc["deltas"][0]
    assert d["comparable"] == "yes"
    assert d["loss_delta"] == pytest.approx(target["loss"] - gpt2["loss"])
    assert d["bits_per_byte_delta"] == pytest.approx(target["bits_per_byte"] - gpt2["bits_per_byte"])


def small_tokenizer_folder(folder: Path, rows: list[str]) -> Path:
    """A different tokenizer: a 400-token byte-level BPE trained on a few WikiText rows."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    folder.mkdir()
    t = Tokenizer(models.BPE())
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = decoders.ByteLevel()
    t.train_from_iterator(rows, trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                                    initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    t.save(str(folder / "tokenizer.json"))
    return folder


def test_tokenizer_mismatch_leaves_bits_per_byte(tmp_path, tok, test_rows):
    own_tok = load_tokenizer(str(small_tokenizer_folder(tmp_path / "tok", test_rows[:300])))
    assert own_tok.n_vocab < 1000
    target_dir = export_hf(tiny_model(vocab_size=own_tok.n_vocab), tmp_path / "target", own_tok)
    baseline_dir = export_hf(tiny_model(seed=2), tmp_path / "gpt2-local", tok)
    eval_command(str(target_dir), protocol="standard", wikitext=str(WIKITEXT_DIR), samples=False, max_tokens=300,
                 baseline_dirs={"gpt2": str(baseline_dir)})
    doc = read_eval(target_dir)
    target, gpt2, codelion = doc["results"]
    assert target["tokenizer"] == str(target_dir)
    assert gpt2["source"] == "measured" and gpt2["tokenizer_matches"] is False
    assert codelion["source"] == "published" and codelion["tokenizer_matches"] is False
    d_gpt2, d_codelion = doc["deltas"]
    assert d_gpt2["comparable"] == "bits per byte only"
    assert d_gpt2["loss_delta"] is None and d_gpt2["perplexity_ratio"] is None
    assert d_gpt2["bits_per_byte_delta"] == pytest.approx(target["bits_per_byte"] - gpt2["bits_per_byte"])
    assert d_codelion["comparable"] == "no"


# ------------------------------------------------------------------ in-training evaluation and samples


def test_capped_eval_uses_eval_mode_and_restores_training(test_ids):
    model = tiny_model(dropout=0.5).train()
    first = capped_wikitext_eval(model, test_ids, 300, 64, 32, "cpu")
    second = capped_wikitext_eval(model, test_ids, 300, 64, 32, "cpu")
    assert model.training
    assert first == second  # dropout was off while scoring
    assert first["tokens"] == 300
    model.eval()
    assert first["loss"] == pytest.approx(score_stream(model, test_ids[:301], 32, "cpu").loss)
    assert first["ppl"] == pytest.approx(math.exp(first["loss"]))
    assert not model.training


def test_samples_follow_temperature_and_top_k(tok):
    model = tiny_model(seed=4)
    prompts = ["The history of the city begins"]
    greedy = sample_continuations(model, tok, prompts, "cpu", max_new_tokens=8, temperature=0.0)
    top1 = sample_continuations(model, tok, prompts, "cpu", max_new_tokens=8, temperature=0.8, top_k=1)
    assert greedy == top1  # top-k of 1 leaves only the most likely token
    wide = sample_continuations(model, tok, prompts, "cpu", max_new_tokens=8, temperature=5.0, top_k=0)
    assert wide == sample_continuations(model, tok, prompts, "cpu", max_new_tokens=8, temperature=5.0, top_k=0)
    assert wide != greedy  # a flat distribution over 50k tokens does not retrace the argmax
    assert greedy[0]["prompt"] == prompts[0] and greedy[0]["continuation"]


def test_broken_model_exits_nonzero_with_valid_json(tmp_path, tok):
    model = tiny_model()
    with torch.no_grad():
        model.ln_f.weight.fill_(float("nan"))
    model_dir = export_hf(model, tmp_path / "model", tok)
    assert eval_command(str(model_dir), protocol="standard", wikitext=str(WIKITEXT_DIR), samples=False,
                        max_tokens=100) == 1

    def no_nan(name):
        raise ValueError(f"{name} in eval.json")

    doc = in_protocol(json.loads((model_dir / "eval.json").read_text(), parse_constant=no_nan))
    row = doc["results"][0]
    assert row["loss"] is None and row["perplexity"] is None and row["bits_per_byte"] is None
    assert "not a finite number" in row["note"]
    assert doc["deltas"][0]["loss_delta"] is None


# ------------------------------------------------------------------ which protocols run by default


def test_default_evaluation_runs_both_wikitext_protocols_so_both_baselines_have_figures(tmp_path, tok, capsys):
    model_dir = export_hf(tiny_model(), tmp_path / "model", tok)
    assert eval_command(str(model_dir), wikitext=str(WIKITEXT_DIR), samples=False, max_tokens=200) == 0
    doc = json.loads((model_dir / "eval.json").read_text())
    assert [s["protocol"]["name"] for s in doc["evaluations"]] == ["standard", "sparknet-2000"]
    standard, published_2000 = in_protocol(doc, "standard"), in_protocol(doc, "sparknet-2000")
    assert standard["results"][1]["perplexity"] == 29.9  # GPT-2's only standard-protocol figure
    assert published_2000["results"][2]["perplexity"] == 150.35  # CodeLion's, under its own protocol
    assert all(r["protocol"] == "sparknet-2000" for r in published_2000["results"])
    out = capsys.readouterr().out
    assert "WikiText-2 (standard protocol, test split)" in out and "(sparknet-2000 protocol" in out


def test_cli_offers_every_protocol():
    from engine.cli import EVAL_PROTOCOLS
    from engine.evaluate import PROTOCOLS

    assert EVAL_PROTOCOLS == PROTOCOLS


def test_demo_run_is_evaluated_on_its_held_out_text_with_no_download(logs, tmp_path):
    """The tour's run: the demo mix and its own tokenizer, with no WikiText and no GPT-2 tokenizer to be had."""
    from cli_helpers import only_run, sparknet
    from engine.data import validation_batches
    from engine.evaluate import load_target
    from engine.train import load_run

    env = {k: v for k, v in os.environ.items() if k not in ("SPARKNET_WIKITEXT", "SPARKNET_TOKENIZER")}
    env.update(HF_HOME=str(tmp_path / "empty-hf-home"), HF_HUB_OFFLINE="1")
    sparknet("train", "--profile", "tiny-cpu", "--set", "run.tokens=8192", env=env)
    run_dir = only_run(logs)
    (section,) = json.loads((run_dir / "eval.json").read_text())["evaluations"]
    assert section["protocol"]["name"] == "held-out" and section["protocol"]["mix"] == "demo"
    (row,) = section["results"]  # nothing is published on the demo's text: no baseline rows
    assert "WikiText-2" in section["note"] and "gpt2" in section["note"]
    assert row["bits_per_byte"] == pytest.approx(row["loss"] * row["tokens_scored"]
                                                 / (row["bytes_scored"] * math.log(2)))
    # the same figure computed directly from the final model and the mix's held-out windows
    loaded, (_, mix, _) = load_target(str(run_dir)), load_run(run_dir)
    nll, count, n_bytes = 0.0, 0, 0
    with torch.no_grad():
        for batch in validation_batches(mix, 262_144, batch=8, context=loaded.model.cfg.context - 1):
            x = torch.from_numpy(batch)
            logits = loaded.model(x[:, :-1])
            nll += float(F.cross_entropy(logits.flatten(0, 1).float(), x[:, 1:].flatten(), reduction="sum"))
            count += x[:, 1:].numel()
            n_bytes += sum(len(loaded.tokenizer.decode(r[1:].tolist()).encode("utf-8")) for r in batch)
    assert (row["tokens_scored"], row["bytes_scored"]) == (count, n_bytes)
    assert row["loss"] == pytest.approx(nll / count, rel=1e-5)

    proc = sparknet("eval", run_dir.name, "--no-samples", env=env)
    assert "held-out text of mix 'demo'" in proc.stdout and "WikiText-2" in proc.stdout
