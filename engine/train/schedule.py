"""The learning-rate schedule: linear warm-up, then cosine, linear, constant or warm-down decay to min_lr."""

from __future__ import annotations

import math

from engine.config.loading import Profile


def lr_at(step: int, profile: Profile) -> float:
    """Linear warm-up to lr, then decay to min_lr at the last step.

    warmdown: lr holds until the last `schedule.warmdown` fraction of the
    steps, then falls linearly to min_lr."""
    o, total, warm = profile.optim, profile.steps, profile.warmup_steps
    if warm > 0 and step < warm:
        return o.lr * (step + 1) / warm
    decay = profile.schedule.decay
    if decay == "constant" or total <= warm:
        return o.lr
    if decay == "warmdown":
        start = max(warm, total - round(profile.schedule.warmdown * total))
        factor = 1.0 if step < start else 1.0 - (step - start) / max(1, total - start)
    else:
        progress = min(1.0, (step - warm) / max(1, total - warm))
        factor = 1.0 - progress if decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return o.min_lr + factor * (o.lr - o.min_lr)
