"""Stops that take effect at once, for work that loses nothing when cut short.

The training loop stops between steps, after a checkpoint. Two phases can last minutes without a step
boundary: the first step of a compiled model (compiling it; nothing since the last checkpoint is lost
by abandoning it) and the final evaluation (the model is already saved). Inside `interruptible`, a stop
(SIGTERM, Ctrl-C, or the STOP file `sparknet stop` writes) raises Interrupted there and then.
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from typing import Callable, Iterator


class Interrupted(BaseException):
    """A stop was asked for inside an `interruptible` block. A BaseException, like KeyboardInterrupt, so that the
    libraries' own `except Exception` (torch.compile falls back to eager on errors) let it through."""


@contextmanager
def interruptible(stop_requested: Callable[[], bool], poll_s: float = 0.5) -> Iterator[None]:
    """Call from the main thread. A stop already asked for raises at once."""
    if stop_requested():
        raise Interrupted

    def abort(signum, frame):
        raise Interrupted

    previous = {s: signal.signal(s, abort) for s in (signal.SIGTERM, signal.SIGINT)}
    done = threading.Event()

    def watch() -> None:  # the STOP file is no signal: turn it into one
        while not done.wait(poll_s):
            if stop_requested():
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=watch, daemon=True, name="sparknet-stop-watch").start()
    try:
        yield
    finally:
        done.set()
        for s, handler in previous.items():
            signal.signal(s, handler)
