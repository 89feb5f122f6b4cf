"""Loss on a mix's held-out windows: the same windows every call, the mean over sequences."""

from __future__ import annotations

from typing import Callable

import torch

from engine.config.loading import MixConfig


@torch.no_grad()
def held_out_loss(loss_of: Callable[[torch.Tensor], torch.Tensor], mix: MixConfig, tokens: int, batch: int,
                  context: int, device: torch.device, lengths: dict[str, int] | None = None) -> float:
    """loss_of(windows) is the mean loss of a (rows, context + 1) batch of token windows on `device`; `lengths`
    as for validation_batches."""
    from engine.data import validation_batches

    total, count = 0.0, 0
    for arr in validation_batches(mix, tokens, batch=batch, context=context, lengths=lengths):
        windows = torch.from_numpy(arr).to(device)
        total += loss_of(windows).item() * windows.size(0)
        count += windows.size(0)
    return total / max(1, count)
