"""The chart's maths: smoothing a curve and putting perplexities in a loss's unit. No Textual here."""

from __future__ import annotations

import math


def ema(values: list[float], smoothing: float) -> list[float]:
    """Exponential moving average with TensorBoard's debiasing; smoothing 0 returns the values."""
    if smoothing <= 0:
        return list(values)
    out, last, weight = [], 0.0, 0.0
    for v in values:
        last = smoothing * last + (1 - smoothing) * v
        weight = smoothing * weight + (1 - smoothing)
        out.append(last / weight)
    return out


MEDIAN_WINDOW = 5  # a spike of up to two logged steps cannot move a trailing median of five


def trailing_median(values: list[float], window: int = MEDIAN_WINDOW) -> list[float]:
    out = []
    for i in range(len(values)):
        recent = sorted(values[max(0, i - window + 1):i + 1])
        out.append(recent[len(recent) // 2] if len(recent) % 2 else (recent[len(recent) // 2 - 1]
                                                                      + recent[len(recent) // 2]) / 2)
    return out


def smooth(values: list[float], smoothing: float) -> list[float]:
    """The curve a user reads through the noise: a trailing median (so one spike cannot pull it), then the
    moving average; smoothing 0 returns the values."""
    if smoothing <= 0:
        return list(values)
    return ema(trailing_median(values), smoothing)


def log_points(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """(step, perplexity) -> (step, ln perplexity), the same unit as a loss."""
    return [(x, math.log(y)) for x, y in points if y > 0]
