"""`sparknet eval`: score a run or model folder on WikiText-2 beside GPT-2 and CodeLion's 70M.

Prints the table and writes eval.json (see docs/evaluation.md).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from engine import SparkNetError, __version__
from engine.evaluate.models import (BASELINES, Baseline, BaselineUnavailable, LoadedModel, baseline_for,
                                    is_gpt2_tokenizer, load_baseline, load_target)
from engine.evaluate.published import PUBLISHED, PUBLISHED_TOKENIZER
from engine.evaluate.scoring import (as_scoring_model, bits_per_byte, default_autocast, resolve_device, safe_exp,
                                     sample_continuations, score_lines, score_stream, sliding_windows)
from engine.evaluate.wikitext import (SPARKNET_2000_LINES, SPARKNET_2000_SEED, byte_counter, sparknet_2000_lines,
                                      standard_text, wikitext_rows)
from engine.formatting import fmt_ratio

PROTOCOLS = ("standard", "sparknet-2000")
DEFAULT_STRIDE = 512  # half of GPT-2's context, as in the Hugging Face recipe
TARGET_NAME = "this run"

SAMPLE_PROMPTS = (
    "The history of the city begins",
    "In mathematics, a prime number is",
    "The experiment showed that",
    "Once upon a time, in a small village,",
    "To bake bread at home, you need",
)
SAMPLE_TOKENS = 48
SAMPLE_SEED = 1337

Advance = Callable[[int], None]
StartTask = Callable[[str, int], Advance]


def _check_ids(ids, loaded: LoadedModel, vocab_size: int) -> None:
    top = int(np.max(ids)) if len(ids) else 0
    if top >= vocab_size:
        raise SparkNetError(f"{loaded.path}: tokenizer {loaded.tokenizer_name} gives ids up to {top} but the model's "
                            f"vocabulary has {vocab_size}; the model and its tokenizer do not belong together")


def _measured_row(name: str, loaded: LoadedModel, protocol: str, loss: float, nll: float, tokens: int,
                  n_bytes: int, **extra) -> dict:
    note = loaded.note
    if not math.isfinite(loss):
        # JSON has no NaN or infinity; say what happened instead
        loss, nll = None, float("nan")
        note = "; ".join(n for n in (note, "the loss is not a finite number: the model's outputs are broken") if n)
    return {
        "model": name,
        "path": loaded.path,
        "source": "measured",
        "protocol": protocol,
        "loss": loss,
        "perplexity": None if loss is None else safe_exp(loss),
        "tokens_scored": tokens,
        "bytes_scored": n_bytes,
        "bits_per_byte": None if loss is None else bits_per_byte(nll, n_bytes),
        "tokenizer": loaded.tokenizer_name,
        "tokenizer_matches": True,
        "note": note,
        "deviation": None,
        **extra,
    }


class StandardProtocol:
    """The split joined with "\\n\\n", tokenized once, scored by a sliding window of each model's context."""

    name = "standard"
    split = "test"

    def __init__(self, rows: list[str], stride: int | None, max_tokens: int | None):
        self.text = standard_text(rows)
        self.stride = stride
        self.max_tokens = max_tokens
        self._ids: dict = {}  # tokenizer fingerprint -> ids, so baselines sharing a tokenizer reuse them

    def settings(self) -> dict:
        return {"name": self.name, "split": self.split, "joined_with": "\n\n", "context": "each model's own",
                "stride": self.stride or f"half the model's context, at most {DEFAULT_STRIDE}",
                "max_tokens": self.max_tokens,
                "description": "WikiText-2 raw test, rows joined with blank lines, tokenized once; sliding window "
                               "of the model's context, only tokens new to each window scored"}

    def measure(self, name: str, loaded: LoadedModel, device, amp, start_task: StartTask) -> dict:
        key = loaded.tokenizer.fingerprint
        if key not in self._ids:
            self._ids[key] = np.asarray(loaded.tokenizer.encode(self.text), dtype=np.int64)
        ids = self._ids[key]
        if self.max_tokens:
            ids = ids[: self.max_tokens + 1]
        sm = as_scoring_model(loaded.model)
        _check_ids(ids, loaded, sm.vocab_size)
        stride = min(self.stride or max(1, min(DEFAULT_STRIDE, sm.context // 2)), sm.context)
        total = sum(e - f for _, e, f in sliding_windows(len(ids), sm.context, stride))
        s = score_stream(sm, ids, stride, device, autocast_dtype=amp, progress=start_task(name, total))
        count = byte_counter(loaded.tokenizer, ids)
        n_bytes = sum(count(a, b) for a, b in s.spans)
        row = _measured_row(name, loaded, self.name, s.loss, s.nll, s.tokens, n_bytes,
                            context=sm.context, stride=stride)
        if self.max_tokens and len(ids) == self.max_tokens + 1:
            row["deviation"] = f"capped at {self.max_tokens:,} tokens"
        return row


class Sparknet2000Protocol:
    """The published protocol: 2,000 validation lines, each alone, at most 256 tokens, batch 8, mean of batch means."""

    name = "sparknet-2000"
    split = "validation"
    max_len = 256
    batch_size = 8

    def __init__(self, rows: list[str], max_tokens: int | None):
        self.lines = sparknet_2000_lines(rows, SPARKNET_2000_LINES, SPARKNET_2000_SEED)
        self.max_tokens = max_tokens

    def settings(self) -> dict:
        return {"name": self.name, "split": self.split, "lines": SPARKNET_2000_LINES, "seed": SPARKNET_2000_SEED,
                "max_len": self.max_len, "batch_size": self.batch_size, "max_tokens": self.max_tokens,
                "description": "WikiText-2 raw validation shuffled with seed 42, first 2,000 non-empty stripped "
                               "lines, each scored alone (no context, no BOS), 256-token truncation, pads masked, "
                               "batch 8, loss = mean of the batch means"}

    def measure(self, name: str, loaded: LoadedModel, device, amp, start_task: StartTask) -> dict:
        sm = as_scoring_model(loaded.model)
        max_len = min(self.max_len, sm.context)
        line_ids = [loaded.tokenizer.encode(line)[:max_len] for line in self.lines]
        capped = False
        if self.max_tokens:
            kept, scored = [], 0
            for ids in line_ids:
                if scored >= self.max_tokens:
                    capped = True
                    break
                kept.append(ids)
                scored += max(len(ids) - 1, 0)
            line_ids = kept
        for ids in line_ids:
            _check_ids(ids, loaded, sm.vocab_size)
        total = sum(max(len(ids) - 1, 0) for ids in line_ids)
        s = score_lines(sm, line_ids, loaded.tokenizer.eos_id, device, autocast_dtype=amp,
                        batch_size=self.batch_size, progress=start_task(name, total))
        # the first token of every line is context, never a target
        n_bytes = sum(len(loaded.tokenizer.decode(ids[1:]).encode("utf-8")) for ids in line_ids)
        row = _measured_row(name, loaded, self.name, s.mean_of_batch_means, s.nll, s.tokens, n_bytes,
                            lines=len(line_ids), max_len=max_len, batch_size=self.batch_size,
                            skipped_batches=s.skipped_batches)
        deviations = []
        if capped:
            deviations.append(f"capped at {len(line_ids):,} lines ({self.max_tokens:,} tokens)")
        if max_len < self.max_len:
            deviations.append(f"lines truncated to the model's context {max_len}")
        row["deviation"] = "; ".join(deviations) or None
        return row


def published_row(baseline: Baseline, protocol: str, target_is_gpt2_tokenized: bool, reason: str = "") -> dict:
    fig = PUBLISHED[(baseline.key, protocol)]
    note = fig.note + (f"; not measured: {reason}" if reason else "")
    return {
        "model": baseline.name,
        "hf_id": baseline.hf_id,
        "source": "published",
        "protocol": fig.protocol,
        "loss": fig.loss,
        "perplexity": fig.perplexity,
        "tokens_scored": None,
        "bits_per_byte": None,
        "tokenizer": PUBLISHED_TOKENIZER,
        "tokenizer_matches": target_is_gpt2_tokenized,
        "note": note,
    }


def compute_deltas(target: dict, others: list[dict]) -> list[dict]:
    """This model against each baseline; loss and perplexity only where the tokenizers agree."""
    deltas = []
    for b in others:
        d = {"against": b["model"], "source": b["source"], "loss_delta": None, "perplexity_ratio": None,
             "bits_per_byte_delta": None, "comparable": "no", "note": ""}
        if target["bits_per_byte"] is not None and b["bits_per_byte"] is not None:
            d["bits_per_byte_delta"] = target["bits_per_byte"] - b["bits_per_byte"]
        if b["tokenizer_matches"]:
            if b["loss"] is not None and target["loss"] is not None:
                d["loss_delta"] = target["loss"] - b["loss"]
            if b["perplexity"] is not None and target["perplexity"] is not None:
                d["perplexity_ratio"] = target["perplexity"] / b["perplexity"]
        has_number = any(d[k] is not None for k in ("loss_delta", "perplexity_ratio", "bits_per_byte_delta"))
        if not has_number:
            d["note"] = "no figure to compare" if b["tokenizer_matches"] else \
                "tokenizers differ and no bits per byte was published"
        elif not b["tokenizer_matches"]:
            d["comparable"] = "bits per byte only"
            d["note"] = "tokenizers differ: per-token loss and perplexity do not compare"
        elif b["source"] == "measured":
            d["comparable"] = "yes"
        elif b["protocol"] == target["protocol"] and not target.get("deviation"):
            d["comparable"] = "yes"
            d["note"] = "against a published figure"
        else:
            d["comparable"] = "approximate"
            why = target.get("deviation") or f"published protocol: {b['protocol']}"
            d["note"] = f"against a published figure; {why}"
        deltas.append(d)
    return deltas


# ------------------------------------------------------------------ the command


def _progress():
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("tokens"),
                    TimeRemainingColumn(), console=Console(stderr=True), transient=False)


def _check_options(protocol: str, stride: int | None, temperature: float, top_k: int, max_tokens: int | None) -> None:
    if protocol not in PROTOCOLS:
        raise SparkNetError(f"--protocol {protocol}: use {' or '.join(PROTOCOLS)}")
    if stride is not None and stride < 1:
        raise SparkNetError(f"--stride {stride}: must be a positive number of tokens")
    if temperature < 0:
        raise SparkNetError(f"--temperature {temperature}: must be 0 (greedy) or more")
    if top_k < 0:
        raise SparkNetError(f"--top-k {top_k}: must be 0 (no limit) or more")
    if max_tokens is not None and max_tokens < 1:
        raise SparkNetError(f"--max-tokens {max_tokens}: must be a positive number of tokens")


def eval_command(target: str, protocol: str = "standard", stride: int | None = DEFAULT_STRIDE,
                 wikitext: str | None = None, baselines: bool = False, baseline_dirs: dict[str, str] = {},
                 device: str = "auto", samples: bool = True, temperature: float = 0.8, top_k: int = 50,
                 max_tokens: int | None = None, wait_for_lock: bool = False) -> int:
    """Evaluate, print the table, write eval.json; 0 when done, 1 when the model's loss is not a number.

    The standard protocol's stride is capped at each model's context; None
    means half of each model's context, at most 512.

    Baselines are measured live when `baselines` is set or a folder is named
    for them; otherwise, or when their weights do not load, their published
    figures are shown, labelled as such.

    One evaluation at a time per run (a second is refused, or waits with
    wait_for_lock). A run's final model writes eval.json; a checkpoint of an
    unfinished run writes eval-step-N.json beside it and never replaces it.
    """
    from engine.rundir import resolve_run
    from engine.runlock import EVAL_LOCK_NAME, RunLock

    _check_options(protocol, stride, temperature, top_k, max_tokens)
    run_dir = None
    try:
        run_dir = resolve_run(target)
    except SparkNetError:
        pass  # a model folder, not a run
    lock = RunLock.acquire(run_dir, what="evaluation", name=EVAL_LOCK_NAME, wait=wait_for_lock) if run_dir else None
    try:
        return _evaluate(target, protocol, stride, wikitext, baselines, baseline_dirs, device, samples, temperature,
                         top_k, max_tokens)
    finally:
        if lock is not None:
            lock.release()


def _evaluate(target, protocol, stride, wikitext, baselines, baseline_dirs, device, samples, temperature, top_k,
              max_tokens) -> int:
    from rich.console import Console

    from engine.rundir import utc_now

    dirs = {baseline_for(name).key: path for name, path in baseline_dirs.items()}
    dev = resolve_device(device)
    amp = default_autocast(dev)
    loaded = load_target(target)
    loaded.model.to(dev)
    rows, data_origin = wikitext_rows("test" if protocol == "standard" else "validation", wikitext)
    runner = StandardProtocol(rows, stride, max_tokens) if protocol == "standard" else \
        Sparknet2000Protocol(rows, max_tokens)
    results = _score_all(runner, loaded, protocol, baselines, dirs, dev, amp)
    sampled = []
    if samples:
        sampled = sample_continuations(loaded.model, loaded.tokenizer, SAMPLE_PROMPTS, dev,
                                       max_new_tokens=SAMPLE_TOKENS, temperature=temperature, top_k=top_k,
                                       seed=SAMPLE_SEED, autocast_dtype=amp)
    doc = {
        "created_at": utc_now(),
        "target": loaded.path,
        "checkpoint_step": loaded.checkpoint_step,
        "final": loaded.final,
        "protocol": runner.settings(),
        "results": results,
        "deltas": compute_deltas(results[0], results[1:]),
        "samples": sampled,
        "settings": {
            "device": str(dev),
            "precision": "bf16 autocast" if amp is torch.bfloat16 else "fp32",
            "wikitext": data_origin,
            "baselines_live": bool(baselines),
            "baseline_dirs": dirs,
            "sampling": {"temperature": temperature, "top_k": top_k, "max_new_tokens": SAMPLE_TOKENS,
                         "seed": SAMPLE_SEED},
            "engine_version": __version__,
        },
    }
    out = _write_eval(doc, loaded, protocol)
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # a log file has no width; 80 columns would squeeze the table
    print_report(doc, console, out)
    return 0 if results[0]["loss"] is not None else 1


def _score_all(runner, loaded: LoadedModel, protocol: str, baselines: bool, dirs: dict, dev, amp) -> list[dict]:
    """This model's row, then each baseline's: measured live when asked for and its weights load, else published."""
    from rich.console import Console

    gpt2_tokenized = is_gpt2_tokenizer(loaded.tokenizer)
    results = []
    with _progress() as progress:
        def start_task(name: str, total: int) -> Advance:
            task = progress.add_task(name, total=total)
            return lambda n: progress.advance(task, n)

        results.append(runner.measure(TARGET_NAME, loaded, dev, amp, start_task))
        results[0]["tokenizer_matches"] = True
        for b in BASELINES:
            if not (baselines or b.key in dirs):
                results.append(published_row(b, protocol, gpt2_tokenized))
                continue
            try:
                base = load_baseline(b, dirs.get(b.key))
            except BaselineUnavailable as e:
                Console(stderr=True).print(f"{b.name}: {e}; showing its published figures", markup=False,
                                           highlight=False, soft_wrap=True)
                results.append(published_row(b, protocol, gpt2_tokenized, reason=str(e)))
                continue
            base.model.to(dev)
            row = runner.measure(b.name, base, dev, amp, start_task)
            row["hf_id"] = b.hf_id
            row["tokenizer_matches"] = base.tokenizer.fingerprint == loaded.tokenizer.fingerprint
            results.append(row)
            del base
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    return results


def _write_eval(doc: dict, loaded: LoadedModel, protocol: str) -> Path:
    """eval.json (and eval-PROTOCOL.json) for a final model; eval-step-N.json for an earlier checkpoint."""
    from engine.rundir import write_json_atomic

    out_dir = Path(loaded.out_dir or loaded.path)
    if loaded.final is False:  # an earlier checkpoint: kept beside the final evaluation, never over it
        out = out_dir / f"eval-step-{loaded.checkpoint_step:08d}.json"
        write_json_atomic(out, doc)
        return out
    out = out_dir / "eval.json"
    write_json_atomic(out, doc)
    # one file per protocol as well, so evaluating with the other protocol keeps both
    write_json_atomic(out_dir / f"eval-{protocol}.json", doc)
    return out


# ------------------------------------------------------------------ printing


def _num(value, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def print_report(doc: dict, console, written_to: Path | None = None) -> None:
    from rich.table import Table

    proto = doc["protocol"]
    table = Table(title=f"WikiText-2 ({proto['name']} protocol, {proto['split']} split)", title_justify="left")
    for col, justify in (("model", "left"), ("source", "left"), ("protocol", "left"), ("loss", "right"),
                         ("perplexity", "right"), ("bits/byte", "right"), ("tokens", "right"),
                         ("tokenizer", "left")):
        table.add_column(col, justify=justify)
    for r in doc["results"]:
        tok = r["tokenizer"] if r["tokenizer_matches"] else f"{r['tokenizer']} (differs)"
        table.add_row(r["model"], r["source"], r["protocol"], _num(r["loss"], ".4f"), _num(r["perplexity"], ".2f"),
                      _num(r["bits_per_byte"], ".4f"), _num(r["tokens_scored"], ","), tok,
                      style="italic" if r["source"] == "published" else None)
    console.print(table)
    for r in doc["results"]:
        notes = [n for n in (r.get("deviation"), r.get("note")) if n]
        if notes:
            console.print(f"  {r['model']} ({r['source']}): {'; '.join(notes)}", markup=False, highlight=False,
                          soft_wrap=True)
    for d in doc["deltas"]:
        parts = []
        if d["loss_delta"] is not None:
            parts.append(f"loss {d['loss_delta']:+.4f}")
        if d["perplexity_ratio"] is not None:
            parts.append(f"perplexity {fmt_ratio(d['perplexity_ratio'])}")
        if d["bits_per_byte_delta"] is not None:
            parts.append(f"bits/byte {d['bits_per_byte_delta']:+.4f}")
        text = ", ".join(parts) or "—"
        tail = f"; {d['note']}" if d["note"] else ""
        console.print(f"vs {d['against']} ({d['source']}): {text} [comparable: {d['comparable']}{tail}]",
                      markup=False, highlight=False, soft_wrap=True)
    for s in doc["samples"]:
        console.print(f"» {s['prompt']}{s['continuation']}", markup=False, highlight=False, soft_wrap=True)
    if written_to is not None:
        console.print(f"wrote {written_to}", markup=False, highlight=False, soft_wrap=True)
