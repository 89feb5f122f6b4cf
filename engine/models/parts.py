"""Pieces both networks share (engine/model.py's GPT-2 and engine/model_modern.py's modern GPT)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.config.loading import ModelConfig, padded_vocab


def num_parameters(model: nn.Module) -> int:
    total = sum(p.numel() for p in model.parameters())
    padding = (model.padded_vocab - model.vocab_size) * model.cfg.n_embd
    return total - padding * (1 if model.cfg.tie_embeddings else 2)


def logits_or_loss(logits: torch.Tensor, vocab_size: int, targets: torch.Tensor | None):
    if targets is None:
        return logits[..., :vocab_size]  # drop the padding columns
    padded = logits.size(-1)
    logits = logits.float().reshape(-1, padded)
    if padded > vocab_size:
        # the padding columns get -inf rather than being sliced off: rows keep their
        # aligned width, so the loss kernels read and write them at full bandwidth
        column = torch.arange(padded, device=logits.device)
        logits = logits.masked_fill(column >= vocab_size, float("-inf"))
    return F.cross_entropy(logits, targets.reshape(-1), ignore_index=-100)


def pad_vocab_rows(state: dict[str, torch.Tensor], names: tuple[str, ...], cfg: ModelConfig) -> None:
    """Give exported (true-vocabulary) embedding and output matrices back their internal padding rows, as zeros."""
    rows = padded_vocab(cfg)
    for name in names:
        t = state.get(name)
        if t is not None and t.size(0) < rows:
            state[name] = torch.cat([t, t.new_zeros(rows - t.size(0), *t.shape[1:])])
