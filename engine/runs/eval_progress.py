"""RUN/eval-progress.json while a run is being evaluated: what is being scored, how far, and the process doing it.

The panel reads it to show progress and to stop the evaluation (SIGTERM to `pid`). It is replaced atomically at
most once a second and removed when the evaluation ends, however it ends. No torch here: the panel imports it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable

PROGRESS_NAME = "eval-progress.json"
WRITE_EVERY_S = 1.0


class ProgressFile:
    """Stages of one evaluation; a None run_dir (a model folder) writes nothing."""

    def __init__(self, run_dir: Path | None):
        self.path = Path(run_dir) / PROGRESS_NAME if run_dir is not None else None
        self.state = {"pid": os.getpid(), "started_at": time.time(), "stage": "loading the model", "done": 0,
                      "total": None, "unit": None}
        self._written = 0.0
        self._write(force=True)

    def stage(self, what: str, total: int | None, unit: str) -> Callable[[int], None]:
        """Start a stage; the returned function counts work done in it."""
        self.state.update(stage=what, done=0, total=total, unit=unit)
        self._write(force=True)

        def advance(n: int) -> None:
            self.state["done"] += n
            self._write()

        return advance

    def close(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)

    def _write(self, force: bool = False) -> None:
        if self.path is None or (not force and time.monotonic() - self._written < WRITE_EVERY_S):
            return
        from engine.files import write_json_atomic

        write_json_atomic(self.path, self.state)
        self._written = time.monotonic()


def read_progress(run_dir: Path) -> dict | None:
    """The evaluation's progress, or None when none is running (no file, or its process is gone)."""
    try:
        state = json.loads((Path(run_dir) / PROGRESS_NAME).read_text())
        os.kill(int(state["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return state if isinstance(state, dict) else None


def progress_line(state: dict) -> str:
    """'standard: this run · 120,000 of 287,643 tokens (42%)'."""
    done, total, unit = state.get("done"), state.get("total"), state.get("unit")
    line = str(state.get("stage") or "evaluating")
    if isinstance(total, int) and total > 0 and isinstance(done, int):
        line += f" · {done:,} of {total:,}{f' {unit}' if unit else ''} ({100 * done / total:.0f}%)"
    return line
