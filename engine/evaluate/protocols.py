"""The evaluation protocols: what text is scored and how, one class each, each giving one measured row.

standard       WikiText-2 test, sliding window of each model's context
sparknet-2000  the published protocol: 2,000 WikiText-2 validation lines, each alone
held-out       the run's own mix, its held-out split: bits per byte for a model
               whose tokenizer is not GPT-2's (the demo's), with no download
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np

from engine import SparkNetError
from engine.evaluate.models import LoadedModel
from engine.evaluate.scoring import (
    DEFAULT_STRIDE,
    as_scoring_model,
    bits_per_byte,
    default_stride,
    safe_exp,
    score_lines,
    score_stream,
    sliding_windows,
)
from engine.evaluate.wikitext import (
    SPARKNET_2000_LINES,
    SPARKNET_2000_SEED,
    byte_counter,
    encode_prefix,
    raw_file_bytes,
    sparknet_2000_lines,
    standard_text,
)

PROTOCOLS = ("standard", "sparknet-2000", "held-out")
WIKITEXT_PROTOCOLS = ("standard", "sparknet-2000")
HELD_OUT_TOKENS = 262_144  # the demo's whole held-out split is smaller; a big mix's is capped here

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
        self.raw_bytes = raw_file_bytes(rows)
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
            first = self.max_tokens + 1 if self.max_tokens else None
            self._ids[key] = np.asarray(encode_prefix(loaded.tokenizer, self.text, first), dtype=np.int64)
        ids = self._ids[key]
        sm = as_scoring_model(loaded.model)
        _check_ids(ids, loaded, sm.vocab_size)
        stride = min(self.stride or default_stride(sm.context), sm.context)
        total = sum(e - f for _, e, f in sliding_windows(len(ids), sm.context, stride))
        s = score_stream(sm, ids, stride, device, autocast_dtype=amp, progress=start_task(name, total))
        count = byte_counter(loaded.tokenizer, ids)
        n_bytes = sum(count(a, b) for a, b in s.spans)
        row = _measured_row(name, loaded, self.name, s.loss, s.nll, s.tokens, n_bytes,
                            context=sm.context, stride=stride, vocab_size=sm.vocab_size)
        if self.max_tokens and len(ids) == self.max_tokens + 1:
            row["deviation"] = f"capped at {self.max_tokens:,} tokens"
        elif row["loss"] is not None:
            # the whole split: its loss over the file's own bytes compares across tokenizers and joinings
            row.update(bits_per_raw_byte=bits_per_byte(s.nll, self.raw_bytes), raw_bytes=self.raw_bytes)
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
        capped = False
        if self.max_tokens:  # lines encoded one at a time, only as many as the cap takes
            line_ids, scored = [], 0
            for line in self.lines:
                if scored >= self.max_tokens:
                    capped = True
                    break
                line_ids.append(loaded.tokenizer.encode(line)[:max_len])
                scored += max(len(line_ids[-1]) - 1, 0)
        else:
            line_ids = [ids[:max_len] for ids in loaded.tokenizer.encode_batch(self.lines)]
        for ids in line_ids:
            _check_ids(ids, loaded, sm.vocab_size)
        total = sum(max(len(ids) - 1, 0) for ids in line_ids)
        s = score_lines(sm, line_ids, loaded.tokenizer.eos_id, device, autocast_dtype=amp,
                        batch_size=self.batch_size, progress=start_task(name, total))
        # the first token of every line is context, never a target
        n_bytes = sum(len(loaded.tokenizer.decode(ids[1:]).encode("utf-8")) for ids in line_ids)
        row = _measured_row(name, loaded, self.name, s.mean_of_batch_means, s.nll, s.tokens, n_bytes,
                            lines=len(line_ids), max_len=max_len, batch_size=self.batch_size,
                            skipped_batches=s.skipped_batches, vocab_size=sm.vocab_size)
        deviations = []
        if capped:
            deviations.append(f"capped at {len(line_ids):,} lines ({self.max_tokens:,} tokens)")
        if max_len < self.max_len:
            deviations.append(f"lines truncated to the model's context {max_len}")
        row["deviation"] = "; ".join(deviations) or None
        return row


class HeldOutProtocol:
    """The run's mix, its held-out split (never trained on): windows of the model's context, scored whole."""

    name = "held-out"
    split = "validation"
    batch_size = 8

    def __init__(self, run_dir: Path, max_tokens: int | None):
        from engine.runs.rundir import load_run

        _, self.mix, _ = load_run(run_dir)
        self.max_tokens = max_tokens

    def settings(self) -> dict:
        return {"name": self.name, "split": self.split, "mix": self.mix.name,
                "validation_share": self.mix.validation_share, "max_tokens": self.max_tokens or HELD_OUT_TOKENS,
                "description": f"the held-out split of mix '{self.mix.name}' (documents never trained on), in "
                               "windows of the model's context spread over each source by weight; every token "
                               "after a window's first scored; bits per byte over the UTF-8 text of the scored "
                               "tokens, which compares across tokenizers"}

    def measure(self, name: str, loaded: LoadedModel, device, amp, start_task: StartTask) -> dict:
        from engine.data import validation_batches

        sm = as_scoring_model(loaded.model)
        tokens = self.max_tokens or HELD_OUT_TOKENS
        windows = [list(row) for batch in validation_batches(self.mix, tokens, batch=self.batch_size,
                                                             context=sm.context - 1) for row in batch]
        for ids in windows:
            _check_ids(ids, loaded, sm.vocab_size)
        s = score_lines(sm, windows, loaded.tokenizer.eos_id, device, autocast_dtype=amp,
                        batch_size=self.batch_size, progress=start_task(name, sum(len(w) - 1 for w in windows)))
        n_bytes = sum(len(loaded.tokenizer.decode(ids[1:]).encode("utf-8")) for ids in windows)
        return _measured_row(name, loaded, self.name, s.nll / s.tokens, s.nll, s.tokens, n_bytes,
                             windows=len(windows), context=sm.context, vocab_size=sm.vocab_size)


def protocols_for(protocol: str | None, loaded: LoadedModel, gpt2_tokenized: bool) -> list[str]:
    """The protocols an evaluation runs: the one asked for, else both WikiText ones for a GPT-2-tokenized model
    (GPT-2 and CodeLion each have a figure under one of them), else the run's own held-out text."""
    if protocol == "held-out" and loaded.run_dir is None:
        raise SparkNetError(f"{loaded.path}: --protocol held-out scores a run's own held-out text, and a model "
                            "folder has no run; give the run, or --protocol standard")
    if protocol is not None:
        return [protocol]
    if gpt2_tokenized or loaded.run_dir is None:
        return list(WIKITEXT_PROTOCOLS)
    return ["held-out"]


def make_protocol(name: str, loaded: LoadedModel, stride: int | None, wikitext: str | None,
                  max_tokens: int | None) -> tuple[object, str | None]:
    """The protocol object, and where its text came from (WikiText's origin; None for the run's own mix)."""
    from engine.evaluate.wikitext import wikitext_rows

    if name == "held-out":
        return HeldOutProtocol(loaded.run_dir, max_tokens), None
    rows, origin = wikitext_rows("test" if name == "standard" else "validation", wikitext)
    runner = StandardProtocol(rows, stride, max_tokens) if name == "standard" else \
        Sparknet2000Protocol(rows, max_tokens)
    return runner, origin
