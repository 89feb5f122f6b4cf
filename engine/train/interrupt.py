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
def interruptible(stop_requested: Callable[[], bool], poll_s: float = 0.5,
                  exit_now: Callable[[int], None] | None = None) -> Iterator[None]:
    """Call from the main thread. A stop already asked for raises at once.

    With `exit_now`, a stop calls it instead of raising, with the signal's number (0 for the STOP file), and it
    must end the process. That is for work in torch.compile: an exception raised while its C++ code is calling
    back into Python cannot unwind through it, and the process aborts."""
    if stop_requested():
        raise Interrupted
    by_file = threading.Event()

    def abort(signum, frame):
        if exit_now is not None:
            exit_now(0 if by_file.is_set() else signum)
        raise Interrupted

    previous = {s: signal.signal(s, abort) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    done = threading.Event()

    def watch() -> None:  # the STOP file is no signal: turn it into one
        while not done.wait(poll_s):
            if stop_requested():
                by_file.set()
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=watch, daemon=True, name="sparknet-stop-watch").start()
    try:
        yield
    finally:
        done.set()
        for s, handler in previous.items():
            signal.signal(s, handler)
