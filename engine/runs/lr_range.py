"""Reading an LR range test: the loss against the rate, smoothed, cut where it ran away, and the rate to use.

The suggestion follows Smith's range test as fastai's finder reads it: one tenth of the rate at which the smoothed
loss was lowest, a rate still on the steep, stable part of the curve. The steepest descent is reported beside it.
Pure Python: the CLI writes lr-find.json with it and the panel draws it.
"""

from __future__ import annotations

import math

RUNAWAY = 4.0  # the curve ends where the smoothed loss passes this many times its lowest value


def smoothed(losses: list[float]) -> list[float]:
    """A centred moving average over about a fifteenth of the steps (at least five). Read after the test, it needs
    no lag: a running average would put the lowest loss several steps, and so several times the rate, too late."""
    half = max(5, len(losses) // 15) // 2
    windows = (losses[max(0, i - half):i + half + 1] for i in range(len(losses)))
    return [sum(window) / len(window) for window in windows]


def read_range(points: list[tuple[float, float]], ended_early: bool = False) -> dict:
    """points: (rate, loss) in step order; ended_early: the trainer stopped the test where the loss ran away.
    Returns the curve kept, the suggested rate and how it was chosen."""
    points = [(lr, loss) for lr, loss in points if lr > 0 and math.isfinite(loss)]
    if len(points) < 5:
        raise ValueError(f"the test logged {len(points)} usable steps; it needs at least 5 (raise --steps)")
    curve = smoothed([loss for _, loss in points])
    end, lowest_so_far = len(curve), curve[0]
    for i, value in enumerate(curve):
        lowest_so_far = min(lowest_so_far, value)
        if value > RUNAWAY * lowest_so_far:
            end = i + 1
            break
    rates, curve = [lr for lr, _ in points[:end]], curve[:end]
    lowest = min(range(len(curve)), key=curve.__getitem__)
    slopes = [(curve[i + 1] - curve[i - 1]) / (math.log(rates[i + 1]) - math.log(rates[i - 1]))
              for i in range(1, max(1, lowest))] or [0.0]
    steepest = 1 + min(range(len(slopes)), key=slopes.__getitem__) if lowest > 1 else 0
    # still falling at the top of the range: the lowest point says nothing of where the rate becomes too high
    at_top = end == len(points) and not ended_early and lowest >= len(curve) - max(2, len(curve) // 20)
    return {
        "suggested_lr": None if at_top else rates[lowest] / 10,
        "rule": ("none: the loss was still falling at the top of the range; raise schedule.range_to" if at_top
                 else "one tenth of the rate at the lowest smoothed loss"),
        "lowest_loss_lr": rates[lowest], "lowest_loss": curve[lowest],
        "steepest_lr": rates[steepest],
        "ran_away_at_lr": rates[-1] if end < len(points) or ended_early else None,
        "curve": [[lr, loss, s] for (lr, loss), s in zip(points[:end], curve)],
    }
