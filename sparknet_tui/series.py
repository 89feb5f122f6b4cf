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


def log_points(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """(step, perplexity) -> (step, ln perplexity), the same unit as a loss."""
    return [(x, math.log(y)) for x, y in points if y > 0]
