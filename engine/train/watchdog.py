"""The trainer's own stall alarm: a thread that notices when the loop has gone quiet for far longer than usual.

It uses the limits every reader of the run directory uses (rundir.stall_after_s), but measures quiet on the
monotonic clock, from the last time the run's status was written or its preparation progress changed: a wall clock set
forward or back while the run is quiet never raises a false alarm. It reports once per stall (and once when
progress comes back).
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from engine.runs.rundir import RunWriter, stall_after_s
from engine.runs.status import RunStatus


class StallWatch:
    def __init__(self, rd: RunWriter, on_event: Callable[[str, str], None], poll_s: float = 5.0):
        self.rd = rd
        self.on_event = on_event
        self.poll_s = poll_s
        self.stalled = False
        self._seen: tuple | None = None
        self._changed_at = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="sparknet-stall-watch")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _signs_of_life(self) -> tuple:
        try:
            progress = (self.rd.path / "prepare.json").stat()
            prepared = progress.st_size, progress.st_mtime_ns
        except OSError:
            prepared = None
        return self.rd.updates, prepared

    def check(self, monotonic_now: float | None = None) -> None:
        now = time.monotonic() if monotonic_now is None else monotonic_now
        status = self.rd.status()
        run = RunStatus(status)
        signs = self._signs_of_life()
        if signs != self._seen:
            self._seen, self._changed_at = signs, now
        if not run.live:
            return
        quiet, limit = now - self._changed_at, stall_after_s(status)
        if quiet > limit and not self.stalled:
            self.stalled = True
            self.on_event("stalled", f"no progress for {quiet:.0f} s in phase '{run.phase or 'training'}' "
                                     f"at step {run.step} (usually under {limit:.0f} s)")
        elif quiet <= limit and self.stalled:
            self.stalled = False
            self.on_event("recovered", f"progress again at step {run.step}")

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.check()
            except Exception:  # an alarm must never take the run down
                pass
