"""The learning-rate schedule as one multiplier of every base rate: linear warm-up, then cosine, linear, constant
or warm-down decay to min_lr / lr; or the LR range test's exponential rise. Each optimizer group applies it to its
own base rate (optim.lr for AdamW's groups, optim.muon_lr for Muon's matrices), so both rates follow one curve."""

from __future__ import annotations

import math

from engine.config.schema import Profile


def tested_rate(profile: Profile) -> float:
    """The base rate the logged learning rate is a multiple of: Muon's in its range test, else optim.lr."""
    muon = profile.schedule.decay == "range" and profile.schedule.range_group == "muon"
    return profile.optim.muon_lr if muon else profile.optim.lr


def lr_factor(step: int, profile: Profile) -> float:
    """Linear warm-up to 1, then decay to min_lr / lr at the last step.

    warmdown: the factor holds at 1 until the last `schedule.warmdown` fraction of the steps, then falls
    linearly to the floor."""
    o, total, warm = profile.optim, profile.steps, profile.warmup_steps
    s = profile.schedule
    if s.decay == "range":
        return s.range_from * (s.range_to / s.range_from) ** (step / max(1, total - 1))
    if warm > 0 and step < warm:
        return (step + 1) / warm
    decay = profile.schedule.decay
    if decay == "constant" or total <= warm:
        return 1.0
    if decay == "warmdown":
        start = max(warm, total - round(profile.schedule.warmdown * total))
        factor = 1.0 if step < start else 1.0 - (step - start) / max(1, total - start)
    else:
        progress = min(1.0, (step - warm) / max(1, total - warm))
        factor = 1.0 - progress if decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    floor = o.min_lr / o.lr
    return floor + factor * (1.0 - floor)
