"""status.json as a typed record: its states and phases, and what readers derive from it (progress, the thermal
pause), each derived here once so that the CLI and every panel screen say the same. Torch-free."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from engine.runs.records import Phase, number, text, whole


class State(str, Enum):
    PREPARING = "preparing"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FINISHED = "finished"
    FAILED = "failed"
    STALLED = "stalled"  # never written: readers derive it for a live run that went quiet for too long
    UNKNOWN = "unknown"  # no status.json, or one without a state a reader knows

    def __str__(self) -> str:  # the word status.json holds, wherever it is shown
        return self.value


LIVE = (State.PREPARING, State.RUNNING, State.STOPPING, State.STALLED)

# Every field status.json may hold: the writer refuses any other, so a misspelt key fails where it is written.
FIELDS = frozenset({
    "state", "phase", "run_id", "pid", "started_at", "finished_at", "updated_at", "step", "steps", "tokens",
    "total_tokens", "loss", "val_loss", "tokens_per_s", "eta_s", "mfu", "mfu_basis", "update_every_s", "error",
    "paused", "fast_paths", "memory_floor_b", "diverged",
    "stalled_s", "evaluating",  # derived by readers, never written
})


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
    def phase(self) -> Phase | str:
        """The phase as a Phase where it is one; a phase this reader does not know stays its text."""
        value = text(self.fields.get("phase")) or ""
        try:
            return Phase(value)
        except ValueError:
            return value

    @property
    def live(self) -> bool:
        return self.state in LIVE

    @property
    def compiling(self) -> bool:
        return self.state == State.RUNNING and self.phase == Phase.COMPILING

    @property
    def paused(self) -> str | None:
        """Why the thermal guard paused the run, while it is paused."""
        paused = self.fields.get("paused")
        return paused if isinstance(paused, str) and paused else None

    def number(self, key: str) -> float | None:
        return number(self.fields.get(key))

    @property
    def step(self) -> int:
        return whole(self.fields.get("step")) or 0

    @property
    def steps(self) -> int | None:
        return whole(self.fields.get("steps"))

    @property
    def eta_s(self) -> float | None:
        return self.number("eta_s")

    @property
    def stalled_s(self) -> float | None:
        return self.number("stalled_s")

    @property
    def error(self) -> str | None:
        return text(self.fields.get("error"))

    @property
    def progress(self) -> float | None:
        """The share of the run done, in [0, 1]: by tokens, by steps where tokens are not known, 1 once finished."""
        for done, total in (("tokens", "total_tokens"), ("step", "steps")):
            a, b = self.number(done), self.number(total)
            if a is not None and b is not None and b > 0:
                return min(1.0, max(0.0, a / b))
        return 1.0 if self.state == State.FINISHED else None
