"""TensorBoard event files beside metrics.jsonl (run.tensorboard = true): `tensorboard --logdir logs` shows every run.

The rows are the ones metrics.jsonl and system.jsonl get, written through
PyTorch's own writer as they are logged; a value the row does not have (no
validation on this step, a GPU that reports no power) is left out, never 0.
"""

from __future__ import annotations

from pathlib import Path

from engine.formatting import is_number
from engine.runs.records import MetricRow, SystemRow

TENSORBOARD_DIR = "tensorboard"
# MetricRow field -> TensorBoard tag
METRIC_TAGS = {
    "loss": "train/loss",
    "val_loss": "val/loss",
    "wikitext_ppl": "val/wikitext_ppl",
    "lr": "train/lr",
    "grad_norm": "train/grad_norm",
    "tokens_per_s": "speed/tokens_per_s",
    "mfu": "speed/mfu",
}
GPU_TAGS = {"temp_c": "temp_c", "power_w": "power_w", "util_pct": "util_pct"}


class TensorBoardLog:
    """One SummaryWriter for the run, at RUN/tensorboard; system rows are stamped with the latest step."""

    def __init__(self, run_dir: Path, flush_secs: int = 5):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / TENSORBOARD_DIR), flush_secs=flush_secs)
        self.step = 0

    def metric(self, row: MetricRow) -> None:
        self.step = row.step or self.step
        for key, tag in METRIC_TAGS.items():
            value = getattr(row, key)
            if is_number(value):
                self.writer.add_scalar(tag, value, self.step)

    def system(self, row: SystemRow) -> None:
        for gpu in row.gpus:
            for key, name in GPU_TAGS.items():
                value = getattr(gpu, key)
                if is_number(value):
                    self.writer.add_scalar(f"gpu{gpu.index}/{name}", value, self.step, walltime=row.t)
        if is_number(row.cpu_pct):
            self.writer.add_scalar("host/cpu_pct", row.cpu_pct, self.step, walltime=row.t)

    def close(self) -> None:
        self.writer.close()
