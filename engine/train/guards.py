"""The divergence guard: a loss that is not a number, or one far above its recent mean after warm-up, ends a run
before it trains on in vain (and before a checkpoint of broken weights replaces a good one)."""

from __future__ import annotations

import math
from pathlib import Path

from engine.config.schema import OptimConfig
from engine.runs.rundir import newest_checkpoint_step


class DivergenceGuard:
    WINDOW = 20  # logged losses the recent mean is taken over
    MIN_HISTORY = 5  # a spike needs this many before it can be judged

    def __init__(self, warmup_steps: int, spike_factor: float):
        self.warmup_steps = warmup_steps
        self.spike_factor = spike_factor
        self.recent: list[float] = []

    def check(self, step: int, loss: float, grad_norm: float) -> tuple[str, str] | None:
        """None when the loss is healthy; else (what happened, the notification it sends: failed | loss_spike)."""
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            return f"loss became {loss} (grad norm {grad_norm}) at step {step}", "failed"
        if step > self.warmup_steps and len(self.recent) >= self.MIN_HISTORY:
            mean = sum(self.recent) / len(self.recent)
            if loss > self.spike_factor * mean:
                return f"loss spiked to {loss:.3f} at step {step} (recent mean {mean:.3f})", "loss_spike"
        self.recent = (self.recent + [loss])[-self.WINDOW:]
        return None


def divergence_advice(run_dir: Path, optim: OptimConfig) -> str:
    """Which checkpoint survives, and the exact command that continues from it with every rate the profile sets
    halved (Muon's matrices have a rate of their own)."""
    step = newest_checkpoint_step(run_dir)
    kept = (f"the checkpoint from step {step} (step-{step:08d}) is kept" if step is not None else
            "no checkpoint was written yet, so a resume starts from step 0")
    halved = f"--set optim.lr={optim.lr / 2:.3g} --set optim.min_lr={optim.min_lr / 2:.3g}"
    if optim.name == "muon":
        halved += f" --set optim.muon_lr={optim.muon_lr / 2:.3g}"
    return (f"{kept}: `sparknet resume {run_dir.name} {halved}` continues with half the learning rate (or check "
            "the data)")
