"""status.json as a typed record: its states, and what readers derive from it (progress, the thermal pause),
each derived here once so that the CLI and every panel screen say the same. Torch-free."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from engine.formatting import is_number


class State(str, Enum):
    PREPARING = "preparing"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FINISHED = "finished"
    FAILED = "failed"
    STALLED = "stalled"  # never written: readers derive it for a live run that went quiet for too long
    UNKNOWN = "unknown"  # no status.json, or one without a state a reader knows


LIVE = (State.PREPARING, State.RUNNING, State.STOPPING, State.STALLED)


@dataclass(frozen=True)
class RunStatus:
    """A status.json object (as effective_status returns it) with its derived figures; missing or malformed
    fields read as None."""
    fields: dict

    @property
    def state(self) -> State:
        try:
            return State(self.fields.get("state"))
        except ValueError:
            return State.UNKNOWN

    @property
    def live(self) -> bool:
        return self.state in LIVE

    @property
    def paused(self) -> str | None:
        """Why the thermal guard paused the run, while it is paused."""
        paused = self.fields.get("paused")
        return paused if isinstance(paused, str) and paused else None

    def number(self, key: str) -> float | None:
        value = self.fields.get(key)
        return value if is_number(value) else None

    @property
    def progress(self) -> float | None:
        """The share of the run done, in [0, 1]: by tokens, by steps where tokens are not known, 1 once finished."""
        for done, total in (("tokens", "total_tokens"), ("step", "steps")):
            a, b = self.number(done), self.number(total)
            if a is not None and b is not None and b > 0:
                return min(1.0, max(0.0, a / b))
        return 1.0 if self.state == State.FINISHED else None
