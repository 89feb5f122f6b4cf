"""The evaluation protocols against direct implementations: the sliding window scored token by token, the
2,000-line protocol line by line, bits per byte, an exported folder against the engine's model, the capped
in-training score and sampling. Real parts: the GPT-2 tokenizer and WikiText-2 files from ../shared/data, tiny
random models on the CPU, transformers loading exported folders.
"""

import math
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from eval_helpers import LN_VOCAB, WIKITEXT_DIR, no_progress, read_eval, tiny_model

from engine.evaluate import (
    capped_wikitext_eval,
    eval_command,
    load_model_folder,
    sample_continuations,
    score_stream,
    sliding_windows,
    sparknet_2000_lines,
    standard_text,
    wikitext_rows,
)
from engine.evaluate.protocols import StandardProtocol
from engine.models.export_hf import export_hf
from engine.models.gpt2 import GPT


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


def test_bits_per_raw_byte_counts_the_file_not_the_joined_text(tmp_path, tok, test_rows):
    """The whole split's loss over the bytes of the file it came from: the blank lines that join the rows for
    scoring are not in the file, so they are not in this denominator."""
    from rich.console import Console

    from engine.evaluate.report import print_section

    rows = test_rows[:12]
    raw = "".join(row or " \n" for row in rows)
    loaded = load_model_folder(export_hf(tiny_model(), tmp_path / "model", tok))
    protocol = StandardProtocol(rows, stride=32, max_tokens=None)
    row = protocol.measure("m", loaded, torch.device("cpu"), None, no_progress)
    nll = row["loss"] * row["tokens_scored"]
    assert row["raw_bytes"] == len(raw.encode("utf-8")) < row["bytes_scored"]
    assert row["bits_per_raw_byte"] == pytest.approx(nll / (len(raw.encode("utf-8")) * math.log(2)))
    console = Console(record=True, width=200)
    print_section({"protocol": protocol.settings(), "results": [row], "deltas": []}, console)
    assert f"bits per byte of the raw file: {row['bits_per_raw_byte']:.4f}" in console.export_text()
    capped = StandardProtocol(rows, stride=32, max_tokens=50).measure("m", loaded, torch.device("cpu"), None,
                                                                       no_progress)
    assert "bits_per_raw_byte" not in capped  # a part of the split has no file of its own


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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_stride_none_is_half_of_each_context(tmp_path, tok):
    model_dir = export_hf(tiny_model(context=64), tmp_path / "model", tok)
    eval_command(str(model_dir), protocol="standard", stride=None, wikitext=str(WIKITEXT_DIR), samples=False,
                 max_tokens=200)
    doc = read_eval(model_dir)
    row = doc["results"][0]
    assert (row["stride"], row["tokens_scored"]) == (32, 200)  # overlapping windows score every token
    assert doc["protocol"]["stride"] == "half the model's context, at most 512"


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
