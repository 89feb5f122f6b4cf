"""Files every part of SparkNet reads and writes: atomic replacement, JSON and append-only JSONL.

Pure Python (no torch, no numpy), so the control panel shares it. A file is replaced by writing a
temporary file beside it and renaming it over the old one, so a reader sees the old file or the new one,
never half of either; a JSONL file is appended one whole line at a time and its readers tolerate a partial
last line.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, TypeVar

T = TypeVar("T")


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def write_text_atomic(path: Path, text: str, make_folder: bool = True) -> None:
    """Written under a temporary name and renamed: readers see the old file or the new one, never half. The folder
    is made first unless make_folder is False (a run's files: a deleted run must stay deleted)."""
    if make_folder:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); run files follow the umask like every other file of the run,
        # so a panel started by another user of the box can read them
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def follow_umask(path: Path) -> None:
    """Give a file the permissions the umask asks for, where its writer chose others (safetensors writes 0600)."""
    os.chmod(path, 0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json_atomic(path: Path, data: Any, make_folder: bool = True) -> None:
    write_text_atomic(path, json.dumps(data, indent=1) + "\n", make_folder)


def append_jsonl(path: Path, obj: dict) -> None:
    """Append one line in one write(). A partial last line (a writer killed mid-write) is cut off first,
    so the new record is never glued to the fragment and lost with it."""
    line = (json.dumps(obj, separators=(",", ":")) + "\n").encode()
    with open(path, "ab+") as f:
        size = f.seek(0, os.SEEK_END)
        if size:
            f.seek(size - 1)
            if f.read(1) != b"\n":
                _drop_partial_line(f, size)
        f.write(line)


def _drop_partial_line(f, size: int) -> None:
    end = size
    while end > 0:
        start = max(0, end - (1 << 16))
        f.seek(start)
        cut = f.read(end - start).rfind(b"\n")
        if cut >= 0:
            f.truncate(start + cut + 1)
            return
        end = start
    f.truncate(0)


def read_json(path: Path) -> dict | None:
    """A JSON object from a file; None when missing, unreadable or not an object."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_jsonl(path: Path) -> list[dict]:
    return JsonlFollower(path).read_new()


class JsonlFollower:
    """Reads only what was appended since the last call; keeps a partial last line for later."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.offset = 0
        self._partial = b""

    def read_new(self) -> list[dict]:
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < self.offset:  # file replaced: start over
                    self.offset, self._partial = 0, b""
                f.seek(self.offset)
                chunk = f.read()
        except OSError:
            return []
        self.offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()  # b"" when data ended with a newline
        out = []
        for line in lines:
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                out.append(obj)
        return out


def tail_text(path: Path, max_bytes: int = 8192, lines: int = 20) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return []
    return data.decode("utf-8", "replace").splitlines()[-lines:]


def newest_jsonl_record(path: Path, parse: Callable[[Any], T | None], max_bytes: int = 16384) -> T | None:
    """The newest line of a JSONL file that `parse` makes a record of, reading only the file's end; a line torn
    by a writer killed mid-write is passed over."""
    for line in reversed(tail_text(path, max_bytes=max_bytes, lines=50)):
        try:
            record = parse(json.loads(line))
        except ValueError:
            continue
        if record is not None:
            return record
    return None


def parse_utc(text) -> float:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def wait_for(predicate, timeout: float, interval: float = 0.1) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
