"""What every screen reads from the panel it belongs to, handed to each screen when it is made."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

POLL_INTERVAL_S = 1.0


@dataclass
class PanelContext:
    clock: Callable[[], float] = time.time  # injected so screens render the same for the same files
    poll_interval: float = POLL_INTERVAL_S
    evaluating: set[Path] = field(default_factory=set)  # evaluations this panel started that have not ended
