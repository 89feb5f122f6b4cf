"""`sparknet bench` with Python's garbage collector as the engine leaves it, or switched off, to measure whether its
pauses cost the training step anything (the host issues a `modern-70m` step in 85% of the GPU's time, so a pause of
a few milliseconds can leave the GPU waiting).

    python lab/bench_gc.py on --profile modern-70m --mix standin.toml --steps 40      # as the engine runs
    python lab/bench_gc.py freeze --profile modern-70m --mix standin.toml --steps 40  # gc.freeze() after step 1
    python lab/bench_gc.py off --profile modern-70m --mix standin.toml --steps 40     # no automatic collection

The bench trains in this process. At the end the script prints to stderr how many collections of each generation
ran while it did, their total host time and the longest one.
"""

import gc
import sys
import time

from engine.cli.main import main
from engine.train.trainer import Trainer

MODES = ("on", "freeze", "off")


class Pauses:
    """Every collection's generation and duration, from gc.callbacks."""

    def __init__(self) -> None:
        self.started = 0.0
        self.runs: list[tuple[int, float]] = []

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        else:
            self.runs.append((info["generation"], (time.perf_counter() - self.started) * 1e3))

    def summary(self) -> str:
        parts = []
        for generation in (0, 1, 2):
            ms = [t for g, t in self.runs if g == generation]
            parts.append(f"generation {generation}: {len(ms)} collections, {sum(ms):.1f} ms in all, "
                         f"longest {max(ms, default=0.0):.1f} ms")
        return "gc: " + "; ".join(parts)


def freeze_after_the_first_step() -> None:
    """Everything alive after the first (compiling) step moves to the permanent generation, which collections
    never scan again."""
    first_step = Trainer.train_step

    def train_step(self, *args, **kwargs):
        result = first_step(self, *args, **kwargs)
        Trainer.train_step = first_step
        gc.collect()
        gc.freeze()
        print(f"gc: {gc.get_freeze_count():,} objects frozen after the first step", file=sys.stderr)
        return result

    Trainer.train_step = train_step


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in MODES:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    pauses = Pauses()
    gc.callbacks.append(pauses)
    if sys.argv[1] == "off":
        gc.disable()
    elif sys.argv[1] == "freeze":
        freeze_after_the_first_step()
    code = main(["bench", *sys.argv[2:]])
    print(pauses.summary(), file=sys.stderr)
    sys.exit(code)
