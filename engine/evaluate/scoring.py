"""Scoring text with a language model: one code path for the engine's models and Hugging Face causal LMs.

Losses are summed in float32 over exactly the tokens a protocol scores, so a
perplexity is exp(total NLL / tokens scored) and bits per byte is
total NLL / (UTF-8 bytes of the scored tokens x ln 2).
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from engine import SparkNetError

# Logits dominate evaluation memory (batch x window x vocabulary); 2**27 float32
# values is 512 MiB, which fits beside any model SparkNet trains.
LOGITS_BUDGET = 2**27


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    model = getattr(model, "module", model)  # DistributedDataParallel
    return getattr(model, "_orig_mod", model)  # torch.compile


class ScoringModel:
    """logits(idx) -> (B, T, V) for an engine model or a transformers causal LM."""

    def __init__(self, module: torch.nn.Module, context: int, vocab_size: int, hf: bool):
        self.module = module
        self.context = int(context)
        self.vocab_size = int(vocab_size)
        self.hf = hf

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def _engine_head(self) -> bool:
        return not self.hf and hasattr(self.module, "hidden") and hasattr(self.module, "lm_head")

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        # engine models may pad their output layer for speed; padding columns are not tokens
        return self.module.lm_head(hidden)[..., : self.vocab_size]

    def logits(self, idx: torch.Tensor) -> torch.Tensor:
        if self.hf:
            return self.module(input_ids=idx, use_cache=False).logits[..., : self.vocab_size]
        return self.module(idx)[..., : self.vocab_size]

    def logits_at(self, idx: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """(N, V) logits of the positions where the (B, T) mask is True; engine models skip the head elsewhere."""
        if self._engine_head():
            return self._head(self.module.hidden(idx)[positions])
        return self.logits(idx)[positions]

    def last_logits(self, idx: torch.Tensor) -> torch.Tensor:
        """(B, V) logits of the last position, for sampling."""
        if self._engine_head():
            return self._head(self.module.hidden(idx)[:, -1])
        if self.hf:
            try:
                return self.module(input_ids=idx, use_cache=False, logits_to_keep=1).logits[:, -1, : self.vocab_size]
            except TypeError:  # transformers older than logits_to_keep
                pass
        return self.logits(idx)[:, -1]


def as_scoring_model(model) -> ScoringModel:
    if isinstance(model, ScoringModel):
        return model
    module = unwrap(model)
    cfg = getattr(module, "cfg", None)
    if cfg is not None and hasattr(cfg, "context"):
        return ScoringModel(module, cfg.context, cfg.vocab_size, hf=False)
    config = getattr(module, "config", None)
    if config is not None:
        context = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
        if context:
            return ScoringModel(module, context, config.vocab_size, hf=True)
    raise SparkNetError(f"cannot evaluate a {module.__class__.__name__}: expected a SparkNet model or a "
                        "Hugging Face causal language model")


def resolve_device(device: str | torch.device) -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise SparkNetError(f"--device {device}: not a device; use auto, cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SparkNetError(f"--device {device}: torch sees no CUDA GPU; use --device cpu or auto")
    return dev


def default_autocast(device: torch.device) -> torch.dtype | None:
    """bf16 on a GPU that has it; full precision elsewhere."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


# ------------------------------------------------------------------ token streams (standard protocol)


DEFAULT_STRIDE = 512  # half of GPT-2's context, as in the Hugging Face recipe


def default_stride(context: int) -> int:
    """The standard protocol's stride when none is asked for: half the model's context, at most 512 (the final
    evaluation, `sparknet eval` and the trainer's WikiText-2 curve all use this one)."""
    return max(1, min(DEFAULT_STRIDE, context // 2))


def sliding_windows(n_tokens: int, context: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, first_target) per window, after Hugging Face's "Perplexity of fixed-length models".

    Windows start every `stride` tokens and hold up to `context` tokens; each
    scores only the targets first_target..end-1 that no earlier window scored.
    A token is scored from the logits of the position before it in the same
    window, so token 0 is never scored, and with stride == context neither is
    the first token of each chunk (disjoint chunks).
    """
    if context < 2:
        raise SparkNetError(f"context {context}: a window needs at least 2 tokens")
    if not 1 <= stride <= context:
        raise SparkNetError(f"--stride {stride}: must be between 1 and the model's context ({context})")
    windows = []
    prev_end = 0
    for begin in range(0, n_tokens, stride):
        end = min(begin + context, n_tokens)
        first = max(prev_end, begin + 1)
        if first < end:
            windows.append((begin, end, first))
        prev_end = end
        if end == n_tokens:
            break
    return windows


@dataclass
class StreamScore:
    nll: float  # nats, summed over the scored tokens
    tokens: int
    spans: list[tuple[int, int]] = field(default_factory=list)  # scored token ranges [start, end), merged

    @property
    def loss(self) -> float:
        return self.nll / self.tokens


def _merge_spans(windows: Sequence[tuple[int, int, int]]) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    for _, end, first in windows:
        if spans and spans[-1][1] == first:
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((first, end))
    return spans


def _batches_of_equal_length(windows, batch_size: int):
    batch: list[tuple[int, int, int]] = []
    for w in windows:
        if batch and (len(batch) == batch_size or w[1] - w[0] != batch[0][1] - batch[0][0]):
            yield batch
            batch = []
        batch.append(w)
    if batch:
        yield batch


@torch.no_grad()
def score_stream(model, ids, stride: int, device: torch.device | str, autocast_dtype: torch.dtype | None = None,
                 context: int | None = None, batch_size: int | None = None,
                 progress: Callable[[int], None] | None = None) -> StreamScore:
    """Sliding-window NLL of a token stream, windows batched; progress(n) is told of each n tokens scored."""
    sm = as_scoring_model(model)
    device = resolve_device(device)
    context = min(context or sm.context, sm.context)
    tokens = torch.as_tensor(np.asarray(ids, dtype=np.int64))
    windows = sliding_windows(len(tokens), context, stride)
    if not windows:
        raise SparkNetError(f"nothing to score: the text is {len(tokens)} token(s)")
    if batch_size is None:
        batch_size = max(1, LOGITS_BUDGET // (context * sm.vocab_size))
    total = torch.zeros((), dtype=torch.float64, device=device)
    for batch in _batches_of_equal_length(windows, batch_size):
        # inputs stop one short of the window: the last position predicts nothing inside it
        x = torch.stack([tokens[b:e - 1] for b, e, _ in batch])
        y = torch.stack([tokens[b + 1:e] for b, e, _ in batch])
        for row, (b, _, first) in enumerate(batch):
            y[row, : first - b - 1] = -100
        x, y = x.to(device), y.to(device)
        scored = y != -100
        with _autocast(device, autocast_dtype):
            logits = sm.logits_at(x, scored)
        total += F.cross_entropy(logits.float(), y[scored], reduction="sum").double()
        if progress:
            progress(sum(e - first for _, e, first in batch))
    n = sum(e - first for _, e, first in windows)
    return StreamScore(nll=float(total), tokens=n, spans=_merge_spans(windows))


def capped_wikitext_eval(model, ids, max_tokens: int, context: int, stride: int | None, device,
                         autocast_dtype: torch.dtype | None = None,
                         n_bytes: Callable[[int, int], int] | None = None) -> dict:
    """In-training WikiText-2: the standard protocol over the first max_tokens scored tokens (stride None: the
    default stride, as the final evaluation's).

    Returns {"loss", "ppl", "tokens"} (plus "bits_per_byte" when n_bytes is
    given); the model is put in eval mode and given back in the mode it had.
    """
    module = unwrap(model)
    was_training = module.training
    module.eval()
    try:
        s = score_stream(module, np.asarray(ids)[: max_tokens + 1], min(stride or default_stride(context), context),
                         device,
                         autocast_dtype=autocast_dtype, context=context)
    finally:
        module.train(was_training)
    out = {"loss": s.loss, "ppl": safe_exp(s.loss), "tokens": s.tokens}
    if n_bytes is not None:
        out["bits_per_byte"] = bits_per_byte(s.nll, sum(n_bytes(a, b) for a, b in s.spans))
    return out


# ------------------------------------------------------------------ single lines (sparknet-2000 protocol)


@dataclass
class LinesScore:
    batch_means: list[float]  # mean NLL of each batch's scored tokens
    nll: float
    tokens: int
    skipped_batches: int  # batches whose lines were all one token long: nothing to score

    @property
    def mean_of_batch_means(self) -> float:
        return sum(self.batch_means) / len(self.batch_means)


@torch.no_grad()
def score_lines(model, line_ids: Sequence[Sequence[int]], pad_id: int, device, autocast_dtype=None,
                batch_size: int = 8, progress: Callable[[int], None] | None = None) -> LinesScore:
    """Each line scored alone (no context, no BOS), batches right-padded with pad_id and pads masked.

    A causal model's logits for real tokens do not depend on padding to their
    right, so padding to the longest line of the batch gives the same numbers
    as padding every line to the protocol's maximum length.
    """
    sm = as_scoring_model(model)
    device = resolve_device(device)
    means, total, count, skipped = [], 0.0, 0, 0
    for i in range(0, len(line_ids), batch_size):
        batch = [list(ids) for ids in line_ids[i:i + batch_size]]
        width = max(len(ids) for ids in batch)
        if width > sm.context:
            raise SparkNetError(f"a line of {width} tokens is longer than the model's context {sm.context}")
        padded = torch.full((len(batch), width), pad_id, dtype=torch.long)
        y = torch.full((len(batch), max(width - 1, 0)), -100, dtype=torch.long)
        for row, ids in enumerate(batch):
            padded[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            if len(ids) > 1:
                y[row, : len(ids) - 1] = torch.tensor(ids[1:], dtype=torch.long)
        n = int((y != -100).sum())
        if n == 0:
            skipped += 1
            continue
        x, y = padded[:, :-1].to(device), y.to(device)
        scored = y != -100
        with _autocast(device, autocast_dtype):
            logits = sm.logits_at(x, scored)
        nll = float(F.cross_entropy(logits.float(), y[scored], reduction="sum"))
        means.append(nll / n)
        total += nll
        count += n
        if progress:
            progress(n)
    if not means:
        raise SparkNetError("nothing to score: every line is a single token")
    return LinesScore(batch_means=means, nll=total, tokens=count, skipped_batches=skipped)


# ------------------------------------------------------------------ sampling


@torch.no_grad()
def sample_continuations(model, tokenizer, prompts: Sequence[str], device, max_new_tokens: int = 48,
                         temperature: float = 0.8, top_k: int = 50, seed: int = 1337,
                         autocast_dtype: torch.dtype | None = None) -> list[dict]:
    """One sampled continuation per prompt, stopping early at end-of-text; seeded, so reruns repeat."""
    sm = as_scoring_model(model)
    device = resolve_device(device)
    # never sample an id the tokenizer cannot decode (models may pad their vocabulary)
    n_vocab = min(sm.vocab_size, int(getattr(tokenizer, "n_vocab", sm.vocab_size)))
    out = []
    for i, prompt in enumerate(prompts):
        generator = torch.Generator(device=device).manual_seed(seed + i)
        idx = torch.tensor([tokenizer.encode(prompt)], dtype=torch.long, device=device)
        new: list[int] = []
        for _ in range(max_new_tokens):
            with _autocast(device, autocast_dtype):
                logits = sm.last_logits(idx[:, -sm.context:])
            logits = logits[:, :n_vocab].float()
            if temperature <= 0:
                nxt = logits.argmax(dim=-1, keepdim=True)
            elif top_k:
                # sample among the k most likely tokens only
                values, candidates = torch.topk(logits / temperature, min(top_k, logits.size(-1)))
                pick = torch.multinomial(F.softmax(values, dim=-1), 1, generator=generator)
                nxt = candidates.gather(-1, pick)
            else:
                nxt = torch.multinomial(F.softmax(logits / temperature, dim=-1), 1, generator=generator)
            if int(nxt) == tokenizer.eos_id:
                break
            new.append(int(nxt))
            idx = torch.cat((idx, nxt), dim=1)
        out.append({"prompt": prompt, "continuation": tokenizer.decode(new)})
    return out


# ------------------------------------------------------------------ numbers


def safe_exp(loss: float) -> float | None:
    """exp(loss), or None where it is not a finite number (JSON has no infinity)."""
    try:
        value = math.exp(loss)
    except OverflowError:
        return None
    return value if math.isfinite(value) else None


def bits_per_byte(nll_nats: float, n_bytes: int) -> float | None:
    return nll_nats / (n_bytes * math.log(2)) if n_bytes > 0 else None
