"""The training process's entry: the run's lock, logging, signals, and one line for every way a run can end."""

from __future__ import annotations

import logging
import os
import signal
import sys
import traceback
from pathlib import Path

import torch

from engine import SparkNetError, one_line, send_to_devnull
from engine.data import PrepareStopped
from engine.files import utc_now
from engine.hardware import distributed
from engine.runs.records import Phase
from engine.runs.rundir import LOG_FORMAT, LOG_TIME_FORMAT, deleted_run_message, newest_checkpoint_step
from engine.runs.status import State
from engine.train.notify import Notifier
from engine.train.trainer import Trainer
from engine.train.watchdog import StallWatch


class ConsoleHandler(logging.StreamHandler):
    """The run's lines on stdout. When its reader goes away (`sparknet train ... | head`, a closed terminal), the run
    goes on with train.log alone, not with a logging error and its traceback for every later line."""

    def handleError(self, record: logging.LogRecord) -> None:
        if isinstance(sys.exc_info()[1], OSError):  # EPIPE for a pipe, EIO for a terminal that hung up
            send_to_devnull(self.stream)
            return
        super().handleError(record)


def setup_logging(run_dir: Path, rank: int, log_to_file: bool) -> None:
    handlers: list[logging.Handler] = [ConsoleHandler(sys.stdout)]
    if log_to_file and rank == 0:  # detached runs already have stdout in train.log
        handlers.append(logging.FileHandler(run_dir / "train.log"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, handlers=handlers,
                        format=LOG_FORMAT, datefmt=LOG_TIME_FORMAT, force=True)


def run_training(run_dir: Path, resume: bool = False, log_to_file: bool = False, lock=None,
                 from_scratch: bool = False) -> int:
    """Entry of the training process. Returns the exit code. `lock` is the run's lock when the caller took it;
    otherwise the one handed down is adopted, or the lock is taken here (refused when another process owns it)."""
    from engine.runs.lock import LockHeld, lock_for_worker

    trainer = Trainer(run_dir, resume, from_scratch)
    if lock is None:
        try:
            lock = lock_for_worker(trainer.run_dir)
        except LockHeld as e:
            print(f"sparknet: error: {e}", file=sys.stderr)
            return 2
    setup_logging(run_dir, trainer.rank, log_to_file)
    for stop_signal in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # SIGHUP: a foreground run's terminal closed
        signal.signal(stop_signal, trainer._on_signal)
    watch = None
    try:
        if trainer.is_main:
            watch = _announce(trainer)
        trainer.setup()
        code = trainer.run()
        # stopped by Ctrl-C or SIGTERM: the run is not done, and `sparknet train ... && next` must not go on
        return 128 + trainer.stop_signal if code == 0 and trainer.stop_signal and not trainer.finished else code
    except PrepareStopped:
        trainer.status(state=State.STOPPED, phase=Phase.NONE, eta_s=None)
        trainer.event("stopped", f"stopped during data preparation; the tokens prepared so far are kept and "
                                 f"`sparknet resume {trainer.run_dir.name}` continues")
        return 128 + trainer.stop_signal if trainer.stop_signal else 0
    except SparkNetError as e:
        trainer.fail(str(e))  # one line, on the console and in train.log
        return 1
    except BaseException as e:
        message = failure_line(e, trainer)
        if message is None:  # a bug, not a user mistake: keep the traceback in train.log
            traceback.print_exc()
            message = one_line(e, 300)
        trainer.fail(message)
        return 130 if isinstance(e, KeyboardInterrupt) else 1
    finally:
        if watch is not None:
            watch.stop()
        trainer.report.close()
        distributed.end()
        if lock is not None:
            lock.release()


def _announce(trainer: Trainer) -> StallWatch:
    """Rank 0 says the run is this process's now, reads its notification settings and starts the stall alarm."""
    trainer.rd.update_status(state=State.PREPARING, phase=Phase.PREPARING_DATA, pid=os.getpid(),
                             started_at=trainer.rd.status().get("started_at") or utc_now(), error=None, paused=None)
    trainer.report.notifier = Notifier.from_settings(trainer.run_dir.name, lambda m: trainer.event("warning", m))
    watch = StallWatch(trainer.rd, trainer.event)
    watch.start()
    return watch


def failure_line(e: BaseException, trainer: Trainer) -> str | None:
    """One line for a failure the user can act on (disk full, out of memory, interrupted); None for a bug."""
    from engine.models.checkpoint import disk_full_message, is_disk_full

    if not trainer.run_dir.is_dir():  # whatever write noticed it first
        return deleted_run_message(trainer.run_dir)
    if is_disk_full(e):
        return disk_full_message(Path(e.filename or trainer.run_dir), trainer.run_dir)
    if isinstance(e, torch.OutOfMemoryError):
        b = trainer.profile.batch
        fix = (f"--set batch.micro_batch={b.micro_batch // 2} --set batch.grad_accum={b.grad_accum * 2} keeps the "
               f"same tokens per step" if b.micro_batch > 1 else "a smaller model or context is needed")
        return f"out of GPU memory at batch.micro_batch={b.micro_batch}: {fix} (start a new run with it)"
    if isinstance(e, KeyboardInterrupt):
        step = newest_checkpoint_step(trainer.run_dir)
        kept = f"the checkpoint from step {step} is kept" if step is not None else "no checkpoint yet"
        return f"interrupted at step {trainer.step} before a checkpoint; {kept}; `sparknet resume` continues"
    return None
