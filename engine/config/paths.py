"""Where SparkNet keeps what outlives a run: the token cache and the measured ceilings (torch-free)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root(cache_dir: Path | str | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    return Path(os.environ.get("SPARKNET_CACHE") or Path.home() / ".cache" / "sparknet").expanduser()
