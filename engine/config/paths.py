"""Where SparkNet keeps what outlives a run: the token cache and the measured ceilings (torch-free), and the one
check of a folder a setting names."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from engine import SparkNetError


def nearest_existing(path: Path) -> Path:
    """`path`, or the nearest folder above it that exists: where a folder for it would be made."""
    existing = Path(path)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return existing


def checked_folder(path: Path, variable: str) -> Path:
    """`path`, refused in one line when it, or the nearest part of it that exists, is a file: every later write
    under it would fail with `Not a directory` far from the setting that caused it."""
    existing = nearest_existing(path)
    if existing.exists() and not existing.is_dir():
        where = "is a file" if existing == path else f"lies under {existing}, which is a file"
        raise SparkNetError(f"{variable}: {path} {where}, not a folder; point {variable} at a folder")
    return path


def writable_folder(path: Path, variable: str, fix: str = "") -> Path:
    """`path` as checked_folder leaves it, refused in one line when no folder can be made in it (or in the nearest
    part of it that exists): a real folder is made there and removed, since permissions alone do not tell (a
    read-only mount, /proc, a full disk)."""
    existing = nearest_existing(checked_folder(path, variable))
    try:
        shutil.rmtree(tempfile.mkdtemp(prefix=".sparknet-probe-", dir=existing))
    except OSError as e:
        fix = fix or f"point {variable} at a folder you can write"
        raise SparkNetError(f"{variable}: cannot write in {existing} ({e.strerror or e}); {fix}") from None
    return path


def cache_root(cache_dir: Path | str | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    path = Path(os.environ.get("SPARKNET_CACHE") or Path.home() / ".cache" / "sparknet").expanduser()
    return checked_folder(path, "SPARKNET_CACHE")
