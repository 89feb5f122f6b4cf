"""The trainer's checkpointer: writes a step's checkpoint (rank 0, after every rank has handed in where its loader
stands) and finds the newest one a resume can load, moving aside each one that cannot."""

from __future__ import annotations

from pathlib import Path

import torch

from engine.files import utc_now
from engine.hardware import distributed
from engine.models.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_newest,
    move_aside,
    recover_interrupted_saves,
    save_checkpoint,
)
from engine.runs.records import Phase
from engine.train.reporter import Reporter


class Checkpointer:
    def __init__(self, run_dir: Path, keep: int, report: Reporter, world: int):
        self.run_dir, self.keep, self.report, self.world = run_dir, keep, report, world
        self.saved_step = -1  # every rank knows it, so all of them skip a repeated checkpoint together

    def save(self, step: int, model: torch.nn.Module, optimizer, loader_state: dict, state: dict,
             reason: str) -> None:
        """Checkpoint `step`: the model, the optimizer, every rank's `loader_state` and the rest of `state`."""
        self.report.status(phase=Phase.CHECKPOINTING)
        self.saved_step = step
        gathered = distributed.gather(loader_state, self.world)
        if self.report.is_main:
            loaders = {str(rank): each for rank, each in enumerate(gathered)}
            path = save_checkpoint(self.run_dir, step, model, optimizer,
                                   {**state, "loader": loaders, "saved_at": utc_now(), "reason": reason},
                                   keep=self.keep, on_event=self.report.event)
            self.report.event("checkpoint", f"saved {path.name} ({reason})", step=step)
        distributed.barrier(self.world)

    def restore(self, model: torch.nn.Module, optimizer,
                device: torch.device) -> tuple[tuple[Path, dict] | None, list[Path]]:
        """((path, state) of the newest checkpoint that verifies and loads into `model` and `optimizer`, or None),
        and the newer ones that did not, each moved aside (rank 0) and said. A failed load may have left some of
        its weights in `model` and `optimizer`."""
        if self.report.is_main:
            recover_interrupted_saves(self.run_dir)
        distributed.barrier(self.world)
        skipped = []

        def skip(path: Path, error: CheckpointError) -> None:
            skipped.append(path)
            dest = move_aside(path, str(error)) if self.report.is_main else path
            self.report.event("warning", f"checkpoint {path.name} skipped: {error}; moved to {dest}; falling back "
                                         "to the one before")

        found = load_newest(self.run_dir, lambda path: load_checkpoint(path, model, optimizer, device), skip)
        return found, skipped
