"""The end of a finished run: the final model exported (whole or not at all), then the final evaluation."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from engine import SparkNetError
from engine.config.schema import Profile
from engine.files import utc_now
from engine.formatting import fmt_steps
from engine.runs.records import Phase
from engine.runs.status import State
from engine.train.interrupt import Interrupted, interruptible
from engine.train.reporter import Reporter


@dataclass
class Finisher:
    run_dir: Path
    profile: Profile
    tokenizer: str  # the mix's tokenizer spec, saved beside the model
    device: torch.device
    report: Reporter
    stop_requested: Callable[[], bool]

    def finish(self, model: torch.nn.Module, step: int, loss: float | None) -> None:
        """Rank 0 writes model/ and eval.json; a stop during the evaluation ends the run finished without it."""
        if not self.report.is_main:
            return
        self.export(model)
        if self.profile.run.final_eval:
            self.evaluate()
        self.report.status(state=State.FINISHED, phase=Phase.NONE, eta_s=0, finished_at=utc_now())
        final = f"{loss:.4f}" if loss is not None else "unknown"
        self.report.event("finished", f"finished {fmt_steps(step)}, final loss {final}", step=step)

    def export(self, model: torch.nn.Module) -> None:
        from engine.data.tokenizer import load_tokenizer
        from engine.models.export_hf import export_hf

        self.report.status(phase=Phase.EXPORTING)
        tokenizer = None
        try:
            tokenizer = load_tokenizer(self.tokenizer)
        except SparkNetError as e:
            self.report.event("warning", f"tokenizer not saved with the model: {e}")
        # written aside and renamed: a model/ folder is always a whole final model
        staging = self.run_dir / ".model.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        export_hf(model, staging, tokenizer)
        shutil.rmtree(self.run_dir / "model", ignore_errors=True)
        os.replace(staging, self.run_dir / "model")

    def evaluate(self) -> None:
        from engine.evaluate import eval_command

        self.report.status(phase=Phase.EVALUATING)
        try:
            with interruptible(self.stop_requested):
                eval_command(str(self.run_dir), stride=None, device=str(self.device.type), wait_for_lock=True,
                             max_tokens=self.profile.run.final_eval_tokens or None)
            self.report.event("eval", "final evaluation written to eval.json")
        except SparkNetError as e:
            self.report.event("warning", f"final evaluation skipped: {e}")
        except Interrupted:
            self.report.rd.clear_stop()
            self.report.event("warning", f"final evaluation stopped; `sparknet eval {self.run_dir.name}` runs it")
