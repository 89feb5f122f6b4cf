"""SparkNet engine: data, model, training, evaluation, telemetry, run directories.

Importing this package (and engine.config, engine.rundir) must stay free of
torch so the control panel can share the validation and file-reading code.
"""

import os

__version__ = "0.1.0"


class SparkNetError(Exception):
    """A user-facing error: its message is one line that names what is wrong and how to fix it."""


def send_to_devnull(stream) -> None:
    """Later writes to `stream`, and what is still buffered in it, go nowhere: its reader went away (a closed pipe,
    a terminal that hung up), and each write would fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, stream.fileno())
    os.close(devnull)


def one_line(error: BaseException, limit: int = 240) -> str:
    """An error as `Type: message` on one line (its whitespace collapsed), at most `limit` characters: the part of
    a message that says what a library or the system reported."""
    text = " ".join(str(error).split())
    line = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return line if len(line) <= limit else line[:limit - 1] + "…"
