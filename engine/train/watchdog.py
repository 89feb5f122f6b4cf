"""The trainer's own stall alarm: a thread that notices when the loop has gone quiet for far longer than usual.

It judges by the same rule as every reader of the run directory (rundir.effective_status), from the
status the trainer last wrote, and reports once per stall (and once when progress comes back).
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from engine.runs.rundir import RunDir, last_progress, stall_after_s


class StallWatch:
    def __init__(self, rd: RunDir, on_event: Callable[[str, str], None], poll_s: float = 5.0):
        self.rd = rd
        self.on_event = on_event
        self.poll_s = poll_s
        self.stalled = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="sparknet-stall-watch")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def check(self, now: float | None = None) -> None:
        status = self.rd.status()
        if status.get("state") not in ("preparing", "running", "stopping"):
            return
        quiet = (time.time() if now is None else now) - last_progress(self.rd.path, status)
        limit = stall_after_s(status)
        if quiet > limit and not self.stalled:
            self.stalled = True
            self.on_event("stalled", f"no progress for {quiet:.0f} s in phase '{status.get('phase') or 'training'}' "
                                     f"at step {status.get('step', 0)} (usually under {limit:.0f} s)")
        elif quiet <= limit and self.stalled:
            self.stalled = False
            self.on_event("recovered", f"progress again at step {status.get('step', 0)}")

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.check()
            except Exception:  # an alarm must never take the run down
                pass
