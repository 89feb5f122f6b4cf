"""Stop a run before the machine runs out of memory.

On a unified-memory machine (a DGX Spark: the GB10 shares the 128 GB of
system memory) NVML reports no GPU memory, CUDA's free figure counts the page
cache as used, and when memory does run out the whole host can wedge with no
out-of-memory kill. So the trainer reads MemAvailable from /proc/meminfo, the
kernel's own estimate of what can still be handed out, and stops itself
(after a checkpoint) when it falls below `run.memory_floor_gb`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

GIB = 1 << 30


def meminfo_path() -> Path:
    return Path(os.environ.get("SPARKNET_MEMINFO", "/proc/meminfo"))


def read_meminfo(path: Path | None = None) -> dict[str, int]:
    """/proc/meminfo as bytes by field name; {} where it cannot be read (not Linux)."""
    try:
        text = (path or meminfo_path()).read_text()
    except OSError:
        return {}
    fields = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            fields[name.strip()] = int(parts[0]) * (1024 if parts[1:2] == ["kB"] else 1)
    return fields


def available_memory_b(path: Path | None = None) -> int | None:
    return read_meminfo(path).get("MemAvailable")


class MemoryGuard:
    """Says, at most once a second, whether available memory has fallen below the floor."""

    def __init__(self, floor_gb: float, every_s: float = 1.0, clock=time.monotonic):
        self.floor_b = int(floor_gb * GIB)
        self.every_s, self.clock = every_s, clock
        self._next = 0.0

    def low(self) -> str | None:
        """A one-line reason to stop when memory is below the floor, else None."""
        if self.floor_b <= 0 or self.clock() < self._next:
            return None
        self._next = self.clock() + self.every_s
        available = available_memory_b()
        if available is None or available >= self.floor_b:
            return None
        return (f"available memory fell to {available / GIB:.1f} GB, below the floor of {self.floor_b / GIB:.1f} GB "
                f"(run.memory_floor_gb)")
