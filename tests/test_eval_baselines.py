"""Evaluation against the baselines: published figures, measured ones, tokenizers that differ, and which protocols
run by default (so that GPT-2 and CodeLion both have a figure, and a demo run needs no download)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from cli_helpers import scaled
from eval_helpers import PROJECT, WIKITEXT_DIR, in_protocol, read_eval, tiny_model

from engine.data.tokenizer import load_tokenizer
from engine.evaluate import eval_command, score_stream, standard_text, wikitext_rows
from engine.models.export_hf import export_hf

# ------------------------------------------------------------------ baselines


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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
    assert gpt2["loss"] == pytest.approx(score_stream(baseline_model, ids, 32, "cpu").loss, rel=1e-5)
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


@pytest.mark.slow
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


# ------------------------------------------------------------------ which protocols run by default


@pytest.mark.slow
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
    from engine.cli.parser import EVAL_PROTOCOLS
    from engine.evaluate import PROTOCOLS

    assert EVAL_PROTOCOLS == PROTOCOLS


@pytest.mark.slow
def test_demo_run_is_evaluated_on_its_held_out_text_with_no_download(logs, tmp_path):
    """The tour's run: the demo mix and its own tokenizer, with no WikiText and no GPT-2 tokenizer to be had."""
    from cli_helpers import only_run, sparknet

    from engine.data import validation_batches
    from engine.evaluate import load_target
    from engine.runs.rundir import load_run

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
