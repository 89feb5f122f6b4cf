"""`sparknet eval` as a user runs it: eval.json and the printed report for a run or a model folder, one-line
errors for bad targets and options, a broken model, the in-training curve against the final evaluation, a capped
evaluation never replacing a fuller one, and a report that fits 80 columns.
"""

import json
from pathlib import Path

import pytest
import torch
from cli_helpers import sparknet
from eval_helpers import WIKITEXT_DIR, in_protocol, make_run, read_eval, tiny_model

from engine import SparkNetError
from engine.evaluate import (
    eval_command,
    score_stream,
    standard_text,
    wikitext_rows,
)
from engine.models.export_hf import export_hf


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
        assert eval_command(str(model_dir), protocol="standard", wikitext=str(WIKITEXT_DIR), device="cpu",
                            samples=False, max_tokens=max_tokens) == 0

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
