"""One process owns a run directory: an exclusive OS lock on its `.lock` file, held for the trainer's lifetime.

The lock is an open file description with flock() on it, so the operating system drops it when the
owner dies, whatever the cause (crash, SIGKILL, reboot): a lock that is held means a live owner, and a
pid in status.json alone never decides that (after a reboot the pid may belong to another process).

The CLI takes the lock before it writes anything and hands the same open file to the training process it
starts (the descriptor is inherited; SPARKNET_RUN_LOCK names it), so there is no moment between the
command and the trainer when a second `resume` could slip in.

No torch here: the control panel probes locks through this module.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from engine import SparkNetError

LOCK_NAME = ".lock"
EVAL_LOCK_NAME = ".eval.lock"
ENV_FD = "SPARKNET_RUN_LOCK"  # the inherited descriptor's number, or "parent" when a launcher above holds it
ACQUIRE_TRIES_S = 0.25  # a reader's probe holds the lock for microseconds; an owner for hours


class LockHeld(SparkNetError):
    pass


class RunLock:
    """An exclusive lock on one file of a run directory; `fd` stays open (and locked) until release()."""

    def __init__(self, path: Path, fd: int):
        self.path = path
        self.fd = fd

    @classmethod
    def acquire(cls, run_dir: Path, what: str = "trainer", name: str = LOCK_NAME, wait: bool = False) -> "RunLock":
        path = Path(run_dir) / name
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if wait:
            fcntl.flock(fd, fcntl.LOCK_EX)
        deadline = time.monotonic() + ACQUIRE_TRIES_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    owner = _read_owner(path)
                    hint = f"; `sparknet stop {Path(run_dir).name}` stops it" if name == LOCK_NAME else \
                        "; wait for it to end"
                    raise LockHeld(f"run {Path(run_dir).name} already has a{'n' if what[0] in 'aeiou' else ''} "
                                   f"{what} running{owner}{hint}") from None
                time.sleep(0.01)
        lock = cls(path, fd)
        lock.set_owner(os.getpid())
        return lock

    @classmethod
    def adopt(cls, run_dir: Path, fd: int) -> "RunLock | None":
        """The lock a parent process took and passed down, if `fd` really is that file, still locked."""
        path = Path(run_dir) / LOCK_NAME
        try:
            if os.fstat(fd).st_ino != path.stat().st_ino:
                return None
        except OSError:
            return None
        lock = cls(path, fd)
        lock.set_owner(os.getpid())
        return lock

    @property
    def run_dir(self) -> Path:
        return self.path.parent

    def set_owner(self, pid: int) -> None:
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{pid}\n".encode(), 0)

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _read_owner(path: Path) -> str:
    try:
        pid = path.read_text().strip()
    except OSError:
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""


def lock_held(run_dir: Path, name: str = LOCK_NAME) -> bool:
    """Whether a live process holds the run's lock. A shared probe: it never blocks an owner for long."""
    path = Path(run_dir) / name
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the probe's shared lock at once
    return False


def lock_for_worker(run_dir: Path) -> RunLock | None:
    """In the training process: the lock handed down by the CLI, or one taken now (None under a launcher that
    holds it for its workers). Raises LockHeld when another process owns the run."""
    inherited = os.environ.pop(ENV_FD, "")
    if inherited == "parent":
        return None
    if inherited.isdigit():
        lock = RunLock.adopt(run_dir, int(inherited))
        if lock is not None:
            return lock
    return RunLock.acquire(run_dir)
