"""The trainer's checkpointer: writes a step's checkpoint (rank 0, after every rank has handed in where its loader
stands) and finds the newest one a resume can load, moving aside each one that cannot."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

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
from engine.train.reporter import Reporter


class Checkpointer:
    def __init__(self, run_dir: Path, keep: int, report: Reporter, world: int):
        self.run_dir, self.keep, self.report, self.world = run_dir, keep, report, world
        self.saved_step = -1  # every rank knows it, so all of them skip a repeated checkpoint together

    def save(self, step: int, model: torch.nn.Module, optimizer, loader_state: dict, state: dict,
             reason: str) -> None:
        """Checkpoint `step`: the model, the optimizer, every rank's `loader_state` and the rest of `state`."""
        self.report.status(phase="checkpointing")
        self.saved_step = step
        gathered = distributed.gather(loader_state, self.world)
        if self.report.is_main:
            loaders = {str(rank): each for rank, each in enumerate(gathered)}
            path = save_checkpoint(self.run_dir, step, model, optimizer,
                                   {**state, "loader": loaders, "saved_at": utc_now(), "reason": reason},
                                   keep=self.keep, on_event=self.report.event)
            self.report.event("checkpoint", f"saved {path.name} ({reason})", step=step)
        distributed.barrier(self.world)

    def restore(self, model: torch.nn.Module, optimizer, device: torch.device) -> tuple[Path, dict] | None | bool:
        """(path, state) of the newest checkpoint that verifies and loads into `model` and `optimizer`; each newer
        one that does not is moved aside (rank 0) and said. None when there was none to load; False when every one
        failed, which may have left some of their weights in `model` and `optimizer`."""
        if self.report.is_main:
            recover_interrupted_saves(self.run_dir)
        distributed.barrier(self.world)
        skipped = []

        def skip(path: Path, error: CheckpointError) -> None:
            skipped.append(path)
            dest = move_aside(path, str(error)) if self.report.is_main else path
            self.report.event("warning", f"checkpoint {path.name} skipped: {error}; moved to {dest}; falling back "
                                         "to the one before")

        load: Callable[[Path], dict] = lambda path: load_checkpoint(path, model, optimizer, device)  # noqa: E731
        found = load_newest(self.run_dir, load, skip)
        return found if found is not None else (False if skipped else None)
