"""The run's voice: status.json, events (echoed to train.log and sent as notifications) and the failure line. Only
rank 0 writes; on other ranks every call is a no-op, so the trainer calls it without asking which rank it is."""

from __future__ import annotations

import logging

from engine.runs.records import Phase
from engine.runs.rundir import RunWriter
from engine.runs.status import State

log = logging.getLogger("sparknet")


class Reporter:
    def __init__(self, rd: RunWriter, is_main: bool):
        self.rd = rd
        self.is_main = is_main
        self.notifier = None  # set by the training process once the run's notification settings are read

    def status(self, **fields) -> None:
        if self.is_main:
            self.rd.update_status(**fields)

    def event(self, event_name: str, message: str = "", **extra) -> None:
        if self.is_main:
            self.rd.event(event_name, message, **extra)
            log.info("%s: %s", event_name, message)
            if self.notifier is not None:
                self.notifier.send(event_name, message)

    def fail(self, message: str, step: int, kind: str = "failed", diverged: bool = False) -> None:
        """The run ends as failed with one line; `kind` is the notification it sends (failed or loss_spike);
        `diverged` marks a loss the divergence guard stopped, for readers such as a sweep."""
        try:
            self.status(state=State.FAILED, error=message, phase=Phase.NONE, diverged=diverged or None)
        except OSError:  # a full disk may refuse even this; the line still reaches train.log
            pass
        try:
            self.event("error", message, step=step)  # which writes the line to train.log too
            logged = self.is_main
        except OSError:
            logged = False
        if not logged:
            log.info("error: %s", message)
        if self.notifier is not None:
            self.notifier.send(kind, message)

    def close(self) -> None:
        if self.notifier is not None:
            self.notifier.close()
