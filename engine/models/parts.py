"""Pieces both networks share (engine/models/gpt2.py's GPT-2 and engine/models/modern.py's modern GPT)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.config.loading import ModelConfig, padded_vocab
from engine.kernels.output_layer import fused_linear_cross_entropy


def num_parameters(model: nn.Module) -> int:
    total = sum(p.numel() for p in model.parameters())
    padding = (model.padded_vocab - model.vocab_size) * model.cfg.n_embd
    return total - padding * (1 if model.cfg.tie_embeddings else 2)


def check_length(idx: torch.Tensor, context: int) -> int:
    """The sequence length of a batch of token ids, refused above the model's context."""
    T = idx.size(1)
    if T > context:
        raise ValueError(f"sequence of {T} tokens is longer than the model's context {context}")
    return T


def logits_or_loss(logits: torch.Tensor, vocab_size: int, targets: torch.Tensor | None):
    """The logits without their padding columns, or the mean cross-entropy over them; the loss fills the padding
    columns of `logits` (an output layer's fresh output) in place."""
    if targets is None:
        return logits[..., :vocab_size]  # drop the padding columns
    padded = logits.size(-1)
    logits = logits.float().reshape(-1, padded)
    if padded > vocab_size:
        # the padding columns get -inf rather than being sliced off: rows keep their aligned width, so the loss
        # kernels read and write them at full bandwidth; filled in place, the other columns are not copied
        logits[:, vocab_size:] = float("-inf")
    return F.cross_entropy(logits, targets.reshape(-1), ignore_index=-100)


def output(model: nn.Module, hidden: torch.Tensor, targets: torch.Tensor | None):
    """A network's output from its last hidden states: logits (B, T, V) without targets, the mean cross-entropy
    loss with them, through the one-pass output layer and loss where the kernels chose it."""
    if targets is not None and model.fused_loss:
        return fused_linear_cross_entropy(hidden, model.lm_head.weight, targets, model.vocab_size, fp8=model.fp8_head)
    return logits_or_loss(model.lm_head(hidden), model.vocab_size, targets)


def pad_vocab_rows(state: dict[str, torch.Tensor], names: tuple[str, ...], cfg: ModelConfig) -> None:
    """Give exported (true-vocabulary) embedding and output matrices back their internal padding rows, as zeros."""
    rows = padded_vocab(cfg)
    for name in names:
        t = state.get(name)
        if t is not None and t.size(0) < rows:
            state[name] = torch.cat([t, t.new_zeros(rows - t.size(0), *t.shape[1:])])
