"""The learning-rate schedule: linear warm-up, then cosine, linear or constant decay to min_lr."""

from __future__ import annotations

import math

from engine.config import Profile


def lr_at(step: int, profile: Profile) -> float:
    """Linear warm-up to lr, then decay to min_lr at the last step."""
    o, total, warm = profile.optim, profile.steps, profile.warmup_steps
    if warm > 0 and step < warm:
        return o.lr * (step + 1) / warm
    if profile.schedule.decay == "constant" or total <= warm:
        return o.lr
    progress = min(1.0, (step - warm) / max(1, total - warm))
    if profile.schedule.decay == "linear":
        factor = 1.0 - progress
    else:
        factor = 0.5 * (1.0 + math.cos(math.pi * progress))
    return o.min_lr + factor * (o.lr - o.min_lr)
