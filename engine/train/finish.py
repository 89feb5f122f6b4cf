"""The end of a finished run: the final model exported (whole or not at all), then the final evaluation."""

from __future__ import annotations

import os
import shutil

from engine import SparkNetError
from engine.files import utc_now
from engine.train.interrupt import Interrupted, interruptible


def finish_run(trainer, loss: float | None) -> None:
    """Rank 0 writes model/ and eval.json; a stop during the evaluation ends the run finished without it."""
    if not trainer.is_main:
        return
    from engine.models.export_hf import export_hf

    trainer.status(phase="exporting model")
    tokenizer = None
    try:
        from engine.data.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(trainer.mix.tokenizer)
    except SparkNetError as e:
        trainer.event("warning", f"tokenizer not saved with the model: {e}")
    # written aside and renamed: a model/ folder is always a whole final model
    staging = trainer.run_dir / ".model.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    export_hf(trainer.raw_model, staging, tokenizer)
    shutil.rmtree(trainer.run_dir / "model", ignore_errors=True)
    os.replace(staging, trainer.run_dir / "model")
    if trainer.profile.run.final_eval:
        trainer.status(phase="evaluating")
        try:
            from engine.evaluate import eval_command

            with interruptible(trainer.stop_requested):
                eval_command(str(trainer.run_dir), stride=None, device=str(trainer.device.type), wait_for_lock=True,
                             max_tokens=trainer.profile.run.final_eval_tokens or None)
            trainer.event("eval", "final evaluation written to eval.json")
        except SparkNetError as e:
            trainer.event("warning", f"final evaluation skipped: {e}")
        except Interrupted:
            trainer.rd.clear_stop()
            trainer.event("warning", f"final evaluation stopped; `sparknet eval {trainer.run_dir.name}` runs it")
    trainer.status(state="finished", phase="", eta_s=0, finished_at=utc_now())
    final = f"{loss:.4f}" if loss is not None else "unknown"
    trainer.event("finished", f"finished {trainer.step} steps, final loss {final}", step=trainer.step)

