"""WikiText-2 evaluation: both protocols against direct implementations, bits per byte, baselines, eval.json.

Real parts throughout: the GPT-2 tokenizer and WikiText-2 files from
../shared/data, tiny random models on the CPU, transformers loading exported
folders. The hub is kept out with HF_HUB_OFFLINE (conftest) and, where a
cached copy could change the outcome, a private HF_HOME in a subprocess.
"""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cli_helpers import sparknet
from eval_helpers import LN_VOCAB, WIKITEXT_DIR, in_protocol, make_run, no_progress, read_eval, tiny_model

from engine import SparkNetError
from engine.evaluate import (
    capped_wikitext_eval,
    eval_command,
    load_model_folder,
    load_wikitext_ids,
    sample_continuations,
    score_stream,
    sliding_windows,
    sparknet_2000_lines,
    standard_text,
    wikitext_rows,
)
from engine.evaluate.protocols import StandardProtocol
from engine.evaluate.wikitext import PREFIX_MARGIN_TOKENS, encode_prefix
from engine.models.export_hf import export_hf
from engine.models.gpt2 import GPT

# ------------------------------------------------------------------ data


@pytest.mark.slow
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
    # a capped score (in training, in the bench) encodes only the start, and gets the same ids
    first, first_bytes = load_wikitext_ids(tok, WIKITEXT_DIR, split="test", max_ids=50_001)
    assert np.array_equal(first, ids[:50_001]) and first_bytes(0, 50_001) == n_bytes(0, 50_001)


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


def test_the_raw_file_bytes_are_the_split_files_own(test_rows):
    from engine.evaluate.wikitext import raw_file_bytes

    assert raw_file_bytes(test_rows) == (WIKITEXT_DIR / "wiki.test.raw").stat().st_size  # 1,290,590


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


# ------------------------------------------------------------------ targets


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


@pytest.mark.slow
def test_run_evaluation_writes_eval_json_and_prints_table(logs, tok, capsys):
    model = tiny_model(seed=5)
    run_dir = make_run(logs, model)
    assert eval_command("tiny-run", protocol="standard", wikitext=str(WIKITEXT_DIR), max_tokens=300, stride=512,
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


@pytest.mark.slow
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
    assert row["loss"] == pytest.approx(score_stream(trained, ids, 32, "cpu").loss, rel=1e-5)


def test_bad_targets_and_options_are_one_line_errors(tmp_path, logs):
    for call, pattern in [
        (lambda: eval_command("no-such-run"), "not found"),
        (lambda: eval_command(str(tmp_path)), "not a run directory or model folder"),
        (lambda: eval_command("x", protocol="ppl"), "--protocol ppl"),
        (lambda: eval_command("x", stride=0), "--stride 0"),
        (lambda: eval_command("x", baseline_dirs={"gpt3": str(tmp_path)}), "gpt2=DIR or codelion=DIR"),
        (lambda: eval_command("x", top_k=-1), "--top-k"),
        (lambda: eval_command("x", tasks=["piqa"], limit=0), "--limit 0"),
    ]:
        with pytest.raises(SparkNetError, match=pattern) as e:
            call()
        assert "\n" not in str(e.value)


# ------------------------------------------------------------------ in-training evaluation and samples


@pytest.mark.parametrize("n", [1, 1025, 4097])
def test_a_capped_evaluation_encodes_a_prefix_with_the_whole_texts_first_ids(tok, test_rows, n):
    text = standard_text(test_rows[:600])
    whole = tok.encode(text)
    assert len(whole) > n + PREFIX_MARGIN_TOKENS
    assert encode_prefix(tok, text, n) == whole[:n]
    assert encode_prefix(tok, text[:300], n) == tok.encode(text[:300])[:n]  # a text shorter than asked: all of it


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


@pytest.mark.slow
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


@pytest.mark.slow
def test_the_in_training_curve_and_the_final_evaluation_are_one_procedure(logs):
    """tiny-cpu's context is 128: the curve once used a stride of 128 where the evaluation used 64."""
    from cli_helpers import only_run, sparknet

    from engine.files import read_jsonl

    mix = logs.parent / "stories-gpt2.toml"  # a GPT-2-tokenized mix, so WikiText-2 can be scored during training
    mix.write_text('tokenizer = "gpt2"\nvalidation_share = 0.1\n[[sources]]\nname = "stories"\nweight = 1.0\n'
                   f'path = "{Path(__file__).resolve().parents[1] / "profiles/mixes/demo/stories.jsonl"}"\n'
                   "repeat = true\n")
    # 256 tokens a step: each step's logits over GPT-2's vocabulary are 50,304 floats a token on a CPU
    sparknet("train", "--profile", "tiny-cpu", "--mix", str(mix), "--set", "model.vocab_size=50257",
             "--set", "batch.micro_batch=2", "--set", "batch.grad_accum=1", "--set", "run.tokens=1024",
             "--set", "run.wikitext_every=2", "--set", "run.wikitext_tokens=600", "--set", "run.final_eval=false",
             "--set", "run.compile=false")
    run = only_run(logs)
    curve = [r["wikitext_ppl"] for r in read_jsonl(run / "metrics.jsonl") if "wikitext_ppl" in r]
    assert eval_command(str(run), protocol="standard", wikitext=str(WIKITEXT_DIR), samples=False,
                        max_tokens=600) == 0
    final = read_eval(run)["results"][0]
    assert final["stride"] == 64
    assert curve[-1] == pytest.approx(final["perplexity"], rel=1e-4)


@pytest.mark.slow
def test_a_capped_evaluation_never_takes_the_place_of_a_fuller_one(tmp_path, tok):
    model_dir = export_hf(tiny_model(), tmp_path / "model", tok)

    def evaluate(max_tokens: int) -> None:
        sparknet("eval", str(model_dir), "--protocol", "standard", "--max-tokens", str(max_tokens), "--device", "cpu",
                 "--no-samples")

    def cap(name: str):
        (section,) = json.loads((model_dir / name).read_text())["evaluations"]
        return section["protocol"]["max_tokens"]

    evaluate(2048)
    evaluate(1024)  # a quick look after the real figure: kept beside it
    assert cap("eval.json") == 2048 and cap("eval-capped.json") == 1024
    evaluate(4096)  # more of the text than before: the better figure replaces it
    assert cap("eval.json") == 4096 and cap("eval-capped.json") == 1024


def samples_of(run: Path) -> list[dict]:
    (written,) = run.glob("eval*.json")  # eval.json, or eval-step-N.json for a checkpoint
    return json.loads(written.read_text())["samples"]


def assert_fits_80_columns(out: str, samples: list[dict]) -> None:
    lines = out.splitlines()
    paths = ("wrote /", "tokenizer ")  # a path is printed whole, for a terminal to fold
    long_lines = [line for line in lines if len(line) > 80 and not line.startswith(paths)]
    assert not long_lines, long_lines
    assert "…" not in out  # no header or cell cut short
    for header in ("loss", "perplexity", "bits/byte", "tokenizer"):
        assert header in out
    # wrapped at word boundaries: the printed samples hold the same words as the samples themselves
    words = {w for s in samples for w in (s["prompt"] + s["continuation"]).split()}
    printed = [w for line in lines for w in line.lstrip("» ").split()]
    start = next(i for i, line in enumerate(lines) if line.startswith("»"))
    sample_words = [w for line in lines[start:] if not line.startswith("wrote ") for w in line.lstrip("»").split()]
    assert printed and all(w in words for w in sample_words), [w for w in sample_words if w not in words]


@pytest.mark.slow
def test_the_eval_report_fits_80_columns_for_a_gpt2_run_and_a_demo_run(tmp_path, logs, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    gpt2_run = make_run(logs, tiny_model())
    out = sparknet("eval", str(gpt2_run), "--max-tokens", "2048", "--device", "cpu").stdout
    assert_fits_80_columns(out, samples_of(gpt2_run))
    sparknet("train", "--profile", "tiny-cpu", "--set", "run.tokens=4096", "--set", "run.final_eval=false",
             "--name", "demo")
    demo_run = next(p for p in logs.iterdir() if p.name.endswith("-demo"))
    out = sparknet("eval", str(demo_run), "--device", "cpu").stdout
    assert_fits_80_columns(out, samples_of(demo_run))
    quiet = sparknet("eval", str(demo_run), "--device", "cpu", "--no-samples").stdout
    assert "»" not in quiet  # no samples asked for, none printed (the file keeps the earlier ones)
    assert samples_of(demo_run)
