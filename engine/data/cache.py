"""The token cache: per source, numbered shards of token ids and a manifest of what is committed (with each
shard's checksum), under a folder lock; verifying and repairing it."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

from engine.data.sources import SourceReader
from engine.data.tokenizer import Tokenizer
from engine.files import utc_now

CACHE_FORMAT = 2  # 2: each shard's sha256 in the manifest
SHARD_TOKENS = 100_000_000  # 200 MB uint16 shards


class _ShardWriter:
    """Appends tokens of one split to numbered shard files; the manifest records what is committed, with each
    shard's checksum (kept current as tokens are appended, so committing never reads a shard back)."""

    def __init__(self, folder: Path, split: str, dtype: np.dtype, shard_tokens: int, shards: list[dict]):
        self.folder, self.split, self.dtype, self.shard_tokens = folder, split, dtype, shard_tokens
        self.shards = shards
        self._fh = None
        self._hash = None  # the last shard's running checksum

    def append(self, tokens: np.ndarray) -> None:
        tokens = tokens.astype(self.dtype, copy=False)
        while len(tokens):
            if not self.shards or self.shards[-1]["tokens"] >= self.shard_tokens:
                self._close()
                self.shards.append({"file": f"{self.split}-{len(self.shards):05d}.bin", "tokens": 0,
                                    "sha256": hashlib.sha256().hexdigest()})
                self._hash = hashlib.sha256()
            shard = self.shards[-1]
            if self._fh is None:
                self._hash = self._hash or _file_hash(self.folder / shard["file"], shard["tokens"] * self.dtype.itemsize)
                self._fh = open(self.folder / shard["file"], "ab")
            take = min(len(tokens), self.shard_tokens - shard["tokens"])
            data = tokens[:take].tobytes()
            self._fh.write(data)
            self._hash.update(data)
            shard["tokens"] += take
            shard["sha256"] = self._hash.hexdigest()
            tokens = tokens[take:]

    def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()

    def _close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        self._hash = None

    close = _close


def _file_hash(path: Path, nbytes: int):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while nbytes > 0:
            block = f.read(min(nbytes, 1 << 22))
            if not block:
                break
            h.update(block)
            nbytes -= len(block)
    return h


def cache_damage(folder: Path, manifest: dict, checksums: bool = True) -> str | None:
    """What is wrong with a source's committed shards (missing, shorter, another checksum), or None."""
    itemsize = np.dtype(manifest["dtype"]).itemsize
    for split in ("train", "val"):
        for shard in manifest["shards"][split]:
            f = folder / shard["file"]
            want = shard["tokens"] * itemsize
            try:
                size = f.stat().st_size
            except OSError:
                return f"{shard['file']} is missing"
            if size < want:  # a longer file is a prepare's uncommitted tail, which the next one cuts off
                return f"{shard['file']} is {size:,} bytes, the manifest says {want:,}"
            if checksums and _file_hash(f, want).hexdigest() != shard.get("sha256"):
                return f"{shard['file']} does not match its checksum"
    return None


def _new_manifest(reader: SourceReader, tok: Tokenizer) -> dict:
    return {
        "format": CACHE_FORMAT,
        "source": reader.spec,
        "source_name": reader.src.name,
        "tokenizer": {"name": tok.name, "origin": tok.origin, "fingerprint": tok.fingerprint,
                      "eos_id": tok.eos_id, "n_vocab": tok.n_vocab},
        "dtype": tok.token_dtype,
        "complete": False,
        "documents_read": 0,
        "documents": {"train": 0, "val": 0},
        "tokens": {"train": 0, "val": 0},
        "empty_documents": 0,
        "undecodable_bytes": 0,
        "validation_share": reader.validation_share,
        "shards": {"train": [], "val": []},
        "created_at": utc_now(),
        "updated_at": utc_now(),
    }


# What every reader of a manifest relies on: one missing or of another type makes the manifest unusable, and the
# source is tokenized again instead of every run of the mix failing on it.
MANIFEST_FIELDS = {"source": dict, "tokenizer": dict, "dtype": str, "complete": bool, "documents_read": int,
                   "documents": dict, "tokens": dict, "empty_documents": int, "undecodable_bytes": int,
                   "validation_share": (int, float), "shards": dict}


def read_manifest(folder: Path) -> dict | None:
    """A source's committed manifest; None when there is none or it is not one this engine can use."""
    try:
        data = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    return data if _usable_manifest(data) else None


def _usable_manifest(data) -> bool:
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
        return False
    if not all(isinstance(data.get(key), kind) for key, kind in MANIFEST_FIELDS.items()):
        return False
    if data["dtype"] not in ("uint16", "uint32"):
        return False
    splits = ("train", "val")
    return (all(isinstance(data["tokens"].get(s), int) and isinstance(data["documents"].get(s), int) for s in splits)
            and all(isinstance(data["shards"].get(s), list) for s in splits)
            and all(isinstance(shard, dict) and isinstance(shard.get("file"), str)
                    and isinstance(shard.get("tokens"), int) for s in splits for shard in data["shards"][s]))


def _restore_to_manifest(folder: Path, manifest: dict) -> bool:
    """Cut shard files back to what the manifest committed (a kill may leave a partial tail).
    False when the files are shorter than the manifest says or fail their checksums: the cache must be rebuilt."""
    itemsize = np.dtype(manifest["dtype"]).itemsize
    listed = {"manifest.json", ".lock"}
    for split in ("train", "val"):
        for shard in manifest["shards"][split]:
            f = folder / shard["file"]
            listed.add(shard["file"])
            want = shard["tokens"] * itemsize
            if not f.exists() or f.stat().st_size < want:
                return False
            if f.stat().st_size > want:
                os.truncate(f, want)
    _remove_files(folder, keep=listed)
    return cache_damage(folder, manifest) is None


def _remove_files(folder: Path, keep: set[str]) -> None:
    for f in folder.iterdir():
        if f.name not in keep:
            if f.is_dir():
                shutil.rmtree(f)
            else:
                f.unlink()


class _Lock:
    """An exclusive lock on a source's cache folder: a second prepare (another rank, another
    terminal) waits and then finds the work done."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self._fh = open(folder / ".lock", "w")

    def __enter__(self):
        fcntl.flock(self._fh, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self._fh, fcntl.LOCK_UN)
        self._fh.close()


def source_cache_dir(root: Path, tok: Tokenizer, reader: SourceReader) -> Path:
    return root / "tokens" / tok.fingerprint / reader.cache_key()


def _discard_if_damaged(folder: Path) -> str | None:
    """Verify a finished source's shards; a damaged cache is removed (under the folder's lock): what was wrong."""
    manifest = read_manifest(folder)
    if manifest is None or cache_damage(folder, manifest) is None:
        return None
    with _Lock(folder):
        manifest = read_manifest(folder)
        damage = cache_damage(folder, manifest) if manifest is not None else None
        if damage:  # else another prepare rebuilt it while this one waited
            _remove_files(folder, keep={".lock"})
    return damage
