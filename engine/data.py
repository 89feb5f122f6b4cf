"""Data: mix -> token cache -> batches.

prepare_mix() reads each source of a mix (local files, or Hugging Face
`datasets` for hub ids and local dataset folders), tokenizes it in parallel
batches, appends the end-of-text token after every document and writes
uint16 shards (uint32 for large vocabularies) plus manifest.json into the
token cache. Documents are split between train and validation whole, so none
straddles the two. Writing is committed every second or so; an interrupted
prepare continues from the last commit and a complete source is never read
again.

MixLoader draws (batch, context + 1) windows from the cached sources by
weight. Every draw picks the source whose share is furthest behind (ties and
near-ties broken at random), so each source stays within a few windows of its
exact share at every point of a run and no source is drained before the next.
Windows inside a source follow a seeded permutation per epoch; the position is
two small counters, so resuming is exact.

No torch here: numpy only, so data work never touches the GPU.
"""

from __future__ import annotations

import codecs
import fcntl
import gzip
import hashlib
import io
import json
import math
import os
import re
import shutil
import signal
import sys
import threading
import time
import zlib
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urlparse

import numpy as np

from engine import SparkNetError
from engine.config import MixConfig, SourceConfig, load_mix
from engine.rundir import utc_now, write_json_atomic
from engine.tokenizer import Tokenizer, host_reachable, load_tokenizer

CACHE_FORMAT = 2  # 2: each shard's sha256 in the manifest
DEFAULT_PREPARE_TOKENS = 10_000_000  # hub sources' budget when `prepare` gets no --tokens
SHARD_TOKENS = 100_000_000  # 200 MB uint16 shards
# Slack over share * tokens: a run's last optimizer step may overshoot its token budget, and the
# loader's per-source count may run a few windows ahead of the exact share.
WINDOW_MARGIN_TOKENS = 65_536
TARGET_SLACK = 0.01
BATCH_CHARS = 2_000_000  # text per tokenization task (about half a million tokens)
BATCH_DOCS = 2048
COMMIT_EVERY_S = 1.0
PROGRESS_EVERY_S = 0.5
POOL_MIN_TOKENS = 1_000_000  # below this a worker pool costs more to start than it saves
TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".jsonl", ".json", ".parquet")
_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n.*?\r?\n(?:---|\.\.\.)[ \t]*(?:\r?\n|\Z)", re.S)


class DataError(SparkNetError):
    pass


class BadDocumentError(DataError):
    """The source's content is malformed: its partial cache is discarded, the user fixes the file."""


def cache_root(cache_dir: Path | str | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    return Path(os.environ.get("SPARKNET_CACHE") or Path.home() / ".cache" / "sparknet").expanduser()


def required_train_tokens(share: float, tokens: int) -> int:
    """Train tokens a source must hold for a run of `tokens` tokens (before repeating)."""
    return math.ceil(share * tokens) + WINDOW_MARGIN_TOKENS


def target_train_tokens(share: float, tokens: int) -> int:
    return math.ceil(share * tokens * (1 + TARGET_SLACK)) + WINDOW_MARGIN_TOKENS


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:48] or "source"


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{e.__class__.__name__}: {text[:240]}" if text else e.__class__.__name__


# ---------------------------------------------------------------- reading documents

# Undecodable bytes are dropped and counted, never fatal: one stray Latin-1 byte in a
# folder of blog posts should not stop a run.
_undecodable_bytes = [0]


def _count_and_skip(err: UnicodeDecodeError):
    _undecodable_bytes[0] += err.end - err.start
    return "", err.end


codecs.register_error("sparknet-skip-count", _count_and_skip)


def _decode(data: bytes) -> str:
    text = data.decode("utf-8", errors="sparknet-skip-count")
    return text[1:] if text.startswith("\ufeff") else text


def _open_bytes(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _kind(path: Path) -> str:
    """The text format of a file, looking through a .gz suffix; '' when unsupported."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    suffix = suffixes[-1] if suffixes else ""
    return suffix if suffix in TEXT_SUFFIXES else ""


def strip_front_matter(text: str) -> str:
    """Drop a leading YAML front matter block (--- ... ---) from Markdown."""
    return _FRONT_MATTER.sub("", text, count=1)


class SourceReader:
    """One source of a mix: where it lives, how to identify it in the cache, its documents."""

    def __init__(self, src: SourceConfig, mix: MixConfig):
        self.src = src
        self.mix_where = mix.source or mix.name or "the mix"
        self.validation_share = mix.validation_share
        self.files: list[Path] = []
        self.local_dataset: Path | None = None
        if src.path:
            self.kind = "path"
            self.files = self._local_files(Path(src.path))
        else:
            self.kind = "hf"
            hf = src.hf
            if hf.startswith(("/", ".", "~")):
                p = Path(os.path.expanduser(hf))
                if not p.is_absolute() and mix.source:
                    p = Path(mix.source).resolve().parent / p
                if not p.exists():
                    raise DataError(f"source '{src.name}': local dataset folder {p} does not exist; "
                                    f"fix `hf` in {self.mix_where}")
                self.local_dataset = p.resolve()
        self.undecodable_bytes = 0

    # Identity in the cache: what is read, how, and how it is split; never the user's name for it,
    # so the same source in another mix costs nothing.
    @property
    def spec(self) -> dict:
        s = self.src
        if self.kind == "path":
            listing = [(str(f.relative_to(self._root())), f.stat().st_size, f.stat().st_mtime_ns) for f in self.files]
            files_hash = hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:16]
            return {"kind": "path", "path": s.path, "text_field": s.text_field, "files": len(self.files),
                    "files_hash": files_hash, "validation_share": self.validation_share}
        spec = {"kind": "hf", "hf": str(self.local_dataset or s.hf), "config": s.config, "split": s.split,
                "text_field": s.text_field, "validation_share": self.validation_share}
        if self.local_dataset is not None:
            listing = sorted((str(f.relative_to(self.local_dataset)), f.stat().st_size)
                             for f in self.local_dataset.rglob("*") if f.is_file())
            spec["files_hash"] = hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:16]
        return spec

    def cache_key(self) -> str:
        label = Path(self.src.path).name if self.kind == "path" else (self.local_dataset.name if self.local_dataset
                                                                       else self.src.hf.replace("/", "--"))
        digest = hashlib.sha256(json.dumps(self.spec, sort_keys=True).encode()).hexdigest()[:12]
        return f"{_slug(label)}-{digest}"

    def _root(self) -> Path:
        p = Path(self.src.path)
        return p if p.is_dir() else p.parent

    def _local_files(self, p: Path) -> list[Path]:
        name, where = self.src.name, self.mix_where
        if not p.exists():
            raise DataError(f"source '{name}': path {p} does not exist; fix `path` in {where}")
        if p.is_file():
            if not _kind(p):
                raise DataError(f"source '{name}': {p} is not a .txt, .md, .jsonl, .json or .parquet file "
                                f"(gzip allowed); convert it or point `path` at a folder of such files")
            return [p]
        files = sorted(
            (f for f in p.rglob("*")
             if f.is_file() and _kind(f) and not any(part.startswith(".") for part in f.relative_to(p).parts)),
            key=lambda f: str(f.relative_to(p)),
        )
        if not files:
            raise DataError(f"source '{name}': folder {p} has no .txt, .md, .jsonl, .json or .parquet files "
                            f"(gzip allowed); add some or fix `path` in {where}")
        return files

    # -------------------------------------------------------- documents

    def check(self) -> None:
        """Open the source and read its first document, so a bad source fails before anything is written."""
        it = self.documents(skip=0)
        try:
            next(it, None)
        finally:
            it.close()

    def documents(self, skip: int = 0) -> Iterator[str]:
        """Every document in a fixed order, empty ones included (as ''), after the first `skip`."""
        base = _undecodable_bytes[0]
        docs = self._local_documents() if self.kind == "path" else self._hf_documents(skip)
        if self.kind == "path":
            for _ in range(skip):
                if next(docs, None) is None:
                    return
        try:
            for text in docs:
                self.undecodable_bytes = _undecodable_bytes[0] - base
                yield text
        finally:
            self.undecodable_bytes = _undecodable_bytes[0] - base
            docs.close()

    def _local_documents(self) -> Iterator[str]:
        for f in self.files:
            kind = _kind(f)
            try:
                if kind in (".txt", ".md", ".markdown"):
                    with _open_bytes(f) as fh:
                        text = _decode(fh.read())
                    yield strip_front_matter(text) if kind != ".txt" else text
                elif kind == ".jsonl":
                    yield from self._jsonl_documents(f)
                elif kind == ".json":
                    yield from self._json_documents(f)
                elif kind == ".parquet":
                    yield from self._parquet_documents(f)
            except (OSError, EOFError, zlib.error) as e:
                raise BadDocumentError(f"source '{self.src.name}': cannot read {f} ({_one_line(e)}); "
                                       "replace or remove that file") from None

    def _record_text(self, record, f: Path, where: str) -> str:
        field = self.src.text_field
        if not isinstance(record, dict):
            raise BadDocumentError(f"source '{self.src.name}': {f} {where} is not a JSON object; "
                                   f"each record needs a '{field}' field")
        if field not in record:
            fields = ", ".join(list(record)[:8]) or "none"
            raise BadDocumentError(f"source '{self.src.name}': {f} {where} has no field '{field}' (fields: {fields}); "
                                   f"set text_field in {self.mix_where}")
        value = record[field]
        if value is None:
            return ""
        if not isinstance(value, str):
            raise BadDocumentError(f"source '{self.src.name}': {f} {where} field '{field}' is "
                                   f"{type(value).__name__}, not text; set text_field to a text field")
        return value

    def _jsonl_documents(self, f: Path) -> Iterator[str]:
        with _open_bytes(f) as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(_decode(line))
                except json.JSONDecodeError as e:
                    raise BadDocumentError(f"source '{self.src.name}': {f} line {n} is not valid JSON ({e.msg}); "
                                           "fix or remove that line") from None
                yield self._record_text(record, f, f"line {n}")

    def _json_documents(self, f: Path) -> Iterator[str]:
        with _open_bytes(f) as fh:
            text = _decode(fh.read())
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            if e.msg == "Extra data":  # JSON Lines under a .json name
                for n, line in enumerate(text.splitlines(), 1):
                    if line.strip():
                        try:
                            record = json.loads(line)
                        except json.JSONDecodeError as e2:
                            raise BadDocumentError(f"source '{self.src.name}': {f} line {n} is not valid JSON "
                                                   f"({e2.msg}); fix or remove that line") from None
                        yield self._record_text(record, f, f"line {n}")
                return
            raise BadDocumentError(f"source '{self.src.name}': {f} is not valid JSON ({e.msg} at line {e.lineno}); "
                                   "fix the file") from None
        records = data if isinstance(data, list) else [data]
        for i, record in enumerate(records):
            yield self._record_text(record, f, f"item {i}")

    def _parquet_documents(self, f: Path) -> Iterator[str]:
        import pyarrow.parquet as pq

        field = self.src.text_field
        try:
            source = io.BytesIO(gzip.open(f).read()) if f.suffix == ".gz" else str(f)
            pf = pq.ParquetFile(source)
        except Exception as e:  # pyarrow raises ArrowInvalid and friends
            raise BadDocumentError(f"source '{self.src.name}': {f} is not a readable Parquet file "
                                   f"({_one_line(e)}); replace it") from None
        columns = pf.schema_arrow.names
        if field not in columns:
            raise BadDocumentError(f"source '{self.src.name}': {f} has no column '{field}' "
                                   f"(columns: {', '.join(columns[:8])}); set text_field in {self.mix_where}")
        for batch in pf.iter_batches(columns=[field], batch_size=1024):
            for value in batch.column(0).to_pylist():
                yield value if isinstance(value, str) else ""

    def check_hub(self) -> None:
        """A hub dataset fails in seconds on a machine that cannot reach the hub (unless told to work offline)."""
        if self.kind != "hf" or self.local_dataset is not None or _hub_offline():
            return
        endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
        host = endpoint.hostname or "huggingface.co"
        port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
        if not host_reachable(host, port):
            raise DataError(f"source '{self.src.name}': cannot reach the Hugging Face hub ({host}) to load "
                            f"'{self.src.hf}'; connect to the network, set HF_HUB_OFFLINE=1 to use a cached copy, "
                            f"or download it and set path = \"the local copy\" in {self.mix_where}")

    def _hf_documents(self, skip: int) -> Iterator[str]:
        s = self.src
        location = str(self.local_dataset) if self.local_dataset else s.hf
        hint = ("check the folder's files" if self.local_dataset else
                f"check the id at https://huggingface.co/datasets/{s.hf} and your network, "
                f"or download it and set path = \"the local copy\"")
        self.check_hub()
        try:
            import datasets

            datasets.logging.set_verbosity_error()
            ds = datasets.load_dataset(location, s.config or None, split=s.split, streaming=s.streaming)
            if skip:
                ds = ds.skip(skip) if s.streaming else ds.select(range(min(skip, len(ds)), len(ds)))
            rows = iter(ds)
            first = next(rows, None)
        except Exception as e:  # datasets raises many types: not found, offline, bad config, bad split
            raise DataError(f"source '{s.name}': dataset '{location}' could not be loaded ({_one_line(e)}); "
                            f"{hint}") from None
        if first is None:
            return
        field = s.text_field
        if field not in first:
            raise BadDocumentError(f"source '{s.name}': dataset '{location}' has no field '{field}' "
                                   f"(fields: {', '.join(list(first)[:8])}); set text_field in {self.mix_where}")
        n = skip
        row = first
        while row is not None:
            value = row.get(field)
            yield value if isinstance(value, str) else ""
            n += 1
            try:
                row = next(rows, None)
            except Exception as e:
                raise DataError(f"source '{s.name}': reading '{location}' stopped after {n:,} documents "
                                f"({_one_line(e)}); run prepare again to continue from there") from None


def _hub_offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


# ---------------------------------------------------------------- tokenizing

_worker_tokenizer: Tokenizer | None = None


class PrepareStopped(Exception):
    """A stop was asked for while preparing: what was committed stays, and the next prepare continues."""


def _init_worker(serialized: dict, parent: int) -> None:
    global _worker_tokenizer
    # A worker dies with its parent, however the parent ends (even SIGKILL), and leaves Ctrl-C to the
    # parent, which stops the pool in order.
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Each worker process is one tokenizing core; Rust threads inside it would only compete.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _worker_tokenizer = Tokenizer.from_serialized(serialized)


def _die_with_parent(parent: int) -> None:
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()  # elsewhere: poll
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _encode_in_worker(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    return encode_documents(_worker_tokenizer, texts)


def encode_documents(tok: Tokenizer, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Tokens of all texts, each non-empty one followed by EOS, and each text's token count (0 when empty)."""
    dtype = np.dtype(tok.token_dtype)
    keep = [i for i, t in enumerate(texts) if t and not t.isspace()]
    ids = tok.encode_batch([texts[i] for i in keep]) if keep else []
    lengths = np.zeros(len(texts), dtype=np.int64)
    for i, doc in zip(keep, ids):
        lengths[i] = len(doc) + 1
    flat = np.empty(int(lengths.sum()), dtype=dtype)
    pos = 0
    for doc in ids:
        n = len(doc)
        flat[pos:pos + n] = doc
        flat[pos + n] = tok.eos_id
        pos += n + 1
    return flat, lengths


def _text_batches(docs: Iterator[str]) -> Iterator[list[str]]:
    batch: list[str] = []
    chars = 0
    for text in docs:
        batch.append(text)
        chars += len(text)
        if chars >= BATCH_CHARS or len(batch) >= BATCH_DOCS:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


class _Encoder:
    """Tokenizes batches of texts in order, in this process or across a pool of worker processes."""

    def __init__(self, tok: Tokenizer, workers: int):
        self.tok = tok
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    def encoded(self, batches: Iterator[list[str]], use_pool: bool) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(tokens, lengths) per batch, as encode_documents returns them, in the batches' order."""
        if not use_pool or self.workers <= 1:
            for texts in batches:
                yield encode_documents(self.tok, texts)
            return
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"),
                                             initializer=_init_worker,
                                             initargs=(self.tok.to_serialized(), os.getpid()))
        pending: deque = deque()
        try:
            # A bounded window of batches in flight: reading never runs far ahead of tokenizing.
            for texts in batches:
                pending.append(self._pool.submit(_encode_in_worker, texts))
                if len(pending) >= 2 * self.workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for fut in pending:
                fut.cancel()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


# ---------------------------------------------------------------- the token cache


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


def read_manifest(folder: Path) -> dict | None:
    try:
        data = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == CACHE_FORMAT else None


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


# ---------------------------------------------------------------- progress


class _Progress:
    """Per-source progress, handed to a callback and written as JSON for the control panel."""

    def __init__(self, mix: MixConfig, callback, paths: list[Path]):
        self.mix = mix
        self.callback = callback
        self.paths = paths
        self.rows: dict[str, dict] = {
            s.name: {"name": s.name, "state": "waiting", "tokens": 0, "quota": None, "val_tokens": 0,
                     "documents": 0, "tokens_per_s": None, "eta_s": None}
            for s in mix.sources
        }
        self.state = "running"
        self.error: str | None = None
        self._last_emit = 0.0
        self._started: dict[str, tuple[float, int]] = {}

    def update(self, name: str, force: bool = False, **fields) -> None:
        row = self.rows[name]
        row.update(fields)
        if fields.get("state") == "tokenizing" and name not in self._started:
            self._started[name] = (time.monotonic(), row["tokens"])
        if name in self._started and row["state"] == "tokenizing":
            t0, tokens0 = self._started[name]
            elapsed = time.monotonic() - t0
            if elapsed > 0.2 and row["tokens"] > tokens0:
                rate = (row["tokens"] - tokens0) / elapsed
                row["tokens_per_s"] = round(rate)
                row["eta_s"] = round(max(0, row["quota"] - row["tokens"]) / rate, 1) if row["quota"] else None
        self.emit(force)

    def finish(self, error: str | None = None) -> None:
        self.state = "failed" if error else "done"
        self.error = error
        self.emit(force=True)

    def snapshot(self) -> dict:
        return {"mix": self.mix.name, "state": self.state, "error": self.error, "pid": os.getpid(),
                "updated_at": utc_now(), "sources": [dict(r) for r in self.rows.values()]}

    def emit(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_emit < PROGRESS_EVERY_S:
            return
        self._last_emit = now
        snap = self.snapshot()
        for p in self.paths:
            try:
                write_json_atomic(p, snap)
            except OSError:
                pass  # progress is advisory; a full or read-only disk must not stop the work
        if self.callback is not None:
            self.callback(snap)


# ---------------------------------------------------------------- prepare


def prepare_mix(mix: MixConfig, tokens: int | None, *, cache_dir: Path | None = None, workers: int | None = None,
                progress: Callable[[dict], None] | None = None, progress_path: Path | None = None,
                shard_tokens: int = SHARD_TOKENS, should_stop: Callable[[], bool] | None = None) -> dict:
    """Make the cache hold, for every source, its share of `tokens` train tokens plus its validation share.

    tokens=None: local sources are read whole, hub sources get their share of DEFAULT_PREPARE_TOKENS.
    Raises DataError (one line) when a source that may not repeat is smaller than its share, and
    PrepareStopped within about a batch of should_stop() turning true.
    Returns {source: {train_tokens, val_tokens, documents, epochs_needed, complete, state, cache, ...}}.
    """
    root = cache_root(cache_dir)
    if tokens is not None and tokens <= 0:
        raise DataError(f"tokens must be a positive number, got {tokens}")
    paths = [root / f"progress-{_slug(mix.name or 'mix')}.json"]
    if progress_path is not None:
        paths.append(Path(progress_path))
    prog = _Progress(mix, progress, paths)
    if workers is None:
        workers = max(1, min(os.cpu_count() or 1, 32))
    shares = mix.shares
    encoder: _Encoder | None = None
    report: dict[str, dict] = {}
    repaired: dict[str, str] = {}
    try:
        tok = load_tokenizer(mix.tokenizer)
        readers = [SourceReader(s, mix) for s in mix.sources]  # missing paths and empty folders fail here
        encoder = _Encoder(tok, workers)
        plans = []
        for reader in readers:
            name = reader.src.name
            if tokens is None:
                target = None if reader.kind == "path" else target_train_tokens(shares[name], DEFAULT_PREPARE_TOKENS)
                required = None
            else:
                target = target_train_tokens(shares[name], tokens)
                required = required_train_tokens(shares[name], tokens)
            folder = source_cache_dir(root, tok, reader)
            manifest = read_manifest(folder)
            done = manifest is not None and (manifest["complete"] or
                                             (target is not None and manifest["tokens"]["train"] >= target))
            damage = _discard_if_damaged(folder) if done else None
            if damage:
                repaired[name] = f"source '{name}': its cached tokens were damaged ({damage}); tokenizing it again"
                prog.update(name, state="waiting", note=repaired[name])
                manifest, done = None, False
            prog.update(name, quota=target, state="cached" if done else "waiting",
                        tokens=manifest["tokens"]["train"] if manifest else 0)
            if done:
                _check_enough(reader, manifest, required, shares[name], tokens)
            plans.append((reader, folder, target, required, done))
        # Open every source that still needs work before writing anything: a bad id, an offline hub
        # or a malformed first record fails now, not after an hour on the other sources.
        for reader, _, _, _, done in plans:
            if not done:
                prog.update(reader.src.name, state="checking")
                reader.check()
                prog.update(reader.src.name, state="waiting")
        for reader, folder, target, required, done in plans:
            name = reader.src.name
            if not done:
                prog.update(name, state="tokenizing", force=True)
                _prepare_source(reader, folder, tok, target, encoder, prog, shard_tokens, should_stop)
            manifest = read_manifest(folder)
            _check_enough(reader, manifest, required, shares[name], tokens)
            needed = math.ceil(shares[name] * tokens) if tokens is not None else None
            report[name] = {
                "train_tokens": manifest["tokens"]["train"],
                "val_tokens": manifest["tokens"]["val"],
                "documents": manifest["documents"]["train"] + manifest["documents"]["val"],
                "epochs_needed": round(needed / manifest["tokens"]["train"], 4) if needed and
                manifest["tokens"]["train"] else 0.0,
                "complete": manifest["complete"],
                "undecodable_bytes": manifest["undecodable_bytes"],
                "state": "cached" if done else "prepared",
                "cache": str(folder),
                "repaired": repaired.get(name),
            }
            prog.update(name, state=report[name]["state"], tokens=manifest["tokens"]["train"],
                        val_tokens=manifest["tokens"]["val"], eta_s=0, force=True)
    except BaseException as e:
        prog.finish(error=str(e) if isinstance(e, SparkNetError) else
                    "interrupted" if isinstance(e, KeyboardInterrupt) else
                    "stopped" if isinstance(e, PrepareStopped) else _one_line(e))
        raise
    finally:
        if encoder is not None:
            encoder.close()
    prog.finish()
    return report


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


def _check_enough(reader: SourceReader, manifest: dict, required: int | None, share: float, tokens: int | None) -> None:
    if required is None or reader.src.repeat or not manifest["complete"]:
        return
    have = manifest["tokens"]["train"]
    if have >= required:
        return
    src = reader.src
    max_run = max(0, math.floor((have - WINDOW_MARGIN_TOKENS) / share))
    raise DataError(
        f"source '{src.name}' has {have:,} train tokens but a {tokens:,}-token run needs {required:,} "
        f"({share:.1%} of it, plus {WINDOW_MARGIN_TOKENS:,} spare): {required - have:,} missing; add data to it, "
        f"lower run.tokens to {max_run:,} or less, or set repeat = true for it in {reader.mix_where}"
    )


def _prepare_source(reader: SourceReader, folder: Path, tok: Tokenizer, target: int | None,
                    encoder: _Encoder, prog: _Progress, shard_tokens: int, should_stop=None) -> None:
    name = reader.src.name
    with _Lock(folder):
        manifest = read_manifest(folder)  # another process may have finished it while we waited
        if manifest is not None and not _restore_to_manifest(folder, manifest):
            manifest = None
        if manifest is None:
            _remove_files(folder, keep={".lock"})
            manifest = _new_manifest(reader, tok)
        if manifest["complete"] or (target is not None and manifest["tokens"]["train"] >= target):
            return
        share = manifest["validation_share"]
        dtype = np.dtype(manifest["dtype"])
        writers = {split: _ShardWriter(folder, split, dtype, shard_tokens, manifest["shards"][split])
                   for split in ("train", "val")}
        counts = manifest["tokens"]
        docs_count = manifest["documents"]
        undecodable0 = manifest["undecodable_bytes"]
        last_commit = time.monotonic()

        def commit() -> None:
            for w in writers.values():
                w.flush()
            manifest["undecodable_bytes"] = undecodable0 + reader.undecodable_bytes
            manifest["updated_at"] = utc_now()
            write_json_atomic(folder / "manifest.json", manifest)

        if target is not None:
            use_pool = target - counts["train"] >= POOL_MIN_TOKENS
        elif reader.kind == "path":  # about 4 bytes of text per token
            use_pool = sum(f.stat().st_size for f in reader.files) >= 4 * POOL_MIN_TOKENS
        else:
            use_pool = True
        docs = reader.documents(skip=manifest["documents_read"])
        batches = _text_batches(docs)
        encoded = encoder.encoded(batches, use_pool)
        reached = False
        try:
            for flat, lengths in encoded:
                train_parts, val_parts = [], []
                pos = 0
                for n in lengths.tolist():
                    manifest["documents_read"] += 1
                    if n == 0:
                        manifest["empty_documents"] += 1
                        continue
                    total = counts["train"] + counts["val"]
                    # Whole documents go to validation whenever that brings its share closer to the target.
                    if share > 0 and counts["val"] + n / 2 < share * (total + n):
                        val_parts.append(flat[pos:pos + n])
                        counts["val"] += n
                        docs_count["val"] += 1
                    else:
                        train_parts.append(flat[pos:pos + n])
                        counts["train"] += n
                        docs_count["train"] += 1
                    pos += n
                    if target is not None and counts["train"] >= target:
                        reached = True
                        break
                for split, parts in (("train", train_parts), ("val", val_parts)):
                    if parts:
                        writers[split].append(np.concatenate(parts))
                prog.update(name, tokens=counts["train"], val_tokens=counts["val"],
                            documents=docs_count["train"] + docs_count["val"])
                if reached:
                    break
                if should_stop is not None and should_stop():
                    commit()
                    raise PrepareStopped(name)
                if time.monotonic() - last_commit >= COMMIT_EVERY_S:
                    commit()
                    last_commit = time.monotonic()
            if not reached:
                manifest["complete"] = True
            commit()
        except BadDocumentError:
            # Fixing the file or the mix changes the cache key, so this folder would only be litter.
            for w in writers.values():
                w.close()
            shutil.rmtree(folder, ignore_errors=True)
            raise
        # Interrupted, or the stream broke: what was committed stays, the next prepare continues from it.
        finally:
            encoded.close()
            batches.close()
            docs.close()
            for w in writers.values():
                w.close()
        if counts["train"] + counts["val"] == 0:
            shutil.rmtree(folder, ignore_errors=True)
            raise DataError(f"source '{name}' has no text (every document is empty); "
                            f"check text_field or the files in {reader.mix_where}")


# ---------------------------------------------------------------- reading the cache


class TokenStream:
    """One split of one cached source as a single read-only token sequence over memory-mapped shards."""

    def __init__(self, folder: Path, manifest: dict, split: str):
        self.folder = folder
        self.dtype = np.dtype(manifest["dtype"])
        self.shards = []
        starts = [0]
        for shard in manifest["shards"][split]:
            if shard["tokens"] == 0:
                continue
            self.shards.append(np.memmap(folder / shard["file"], dtype=self.dtype, mode="r",
                                         shape=(shard["tokens"],)))
            starts.append(starts[-1] + shard["tokens"])
        self.starts = np.array(starts, dtype=np.int64)
        self.tokens = int(self.starts[-1])

    def read(self, start: int, n: int) -> np.ndarray:
        i = int(np.searchsorted(self.starts, start, side="right")) - 1
        offset = start - int(self.starts[i])
        shard = self.shards[i]
        if offset + n <= len(shard):
            return shard[offset:offset + n]
        parts, need = [], n
        while need > 0:  # a window that crosses a shard boundary
            piece = self.shards[i][offset:offset + need]
            parts.append(piece)
            need -= len(piece)
            i, offset = i + 1, 0
        return np.concatenate(parts)


def _open_streams(mix: MixConfig, split: str, cache_dir: Path | None) -> tuple[list[TokenStream], list[dict]]:
    root = cache_root(cache_dir)
    tok = load_tokenizer(mix.tokenizer)
    streams, manifests = [], []
    for src in mix.sources:
        reader = SourceReader(src, mix)
        folder = source_cache_dir(root, tok, reader)
        manifest = read_manifest(folder)
        if manifest is None:
            raise DataError(f"source '{src.name}' of mix '{mix.name}' is not prepared in {root}; "
                            f"run `sparknet prepare --mix {mix.name}`")
        damage = cache_damage(folder, manifest, checksums=False)
        if damage:
            raise DataError(f"source '{src.name}': its cached tokens in {folder} are damaged ({damage}); "
                            f"`sparknet prepare --mix {mix.name}` tokenizes it again")
        streams.append(TokenStream(folder, manifest, split))
        manifests.append(manifest)
    return streams, manifests


def _mix64(x: int) -> int:
    """splitmix64: a well-mixed 64-bit hash, the loader's source of per-draw randomness."""
    m = 0xFFFFFFFFFFFFFFFF
    x = (x + 0x9E3779B97F4A7C15) & m
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & m
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & m
    return x ^ (x >> 31)


class MixLoader:
    """Token windows drawn from a mix's cached sources by weight.

    next_batch() returns int64 (batch, context + 1): inputs arr[:, :-1], targets arr[:, 1:].
    Global draw i goes to rank i % world, so ranks never share a window. Deterministic for
    (seed, mix.seed); state_dict()/load_state_dict() resume exactly.
    """

    STATE_VERSION = 1

    def __init__(self, mix: MixConfig, *, split: str = "train", batch: int, context: int, seed: int,
                 rank: int = 0, world: int = 1, cache_dir: Path | None = None, total_tokens: int | None = None):
        if split not in ("train", "val"):
            raise DataError(f"split must be 'train' or 'val', got {split!r}")
        if batch <= 0 or context <= 0:
            raise DataError(f"batch and context must be positive, got batch={batch}, context={context}")
        if not 0 <= rank < world:
            raise DataError(f"rank must be in [0, world), got rank={rank}, world={world}")
        self.mix, self.split, self.batch, self.context = mix, split, batch, context
        self.seed, self.rank, self.world = seed, rank, world
        self.names = [s.name for s in mix.sources]
        self.repeat = [s.repeat or split == "val" for s in mix.sources]
        self.streams, self.manifests = _open_streams(mix, split, cache_dir)
        shares = mix.shares
        self.shares = [shares[n] for n in self.names]
        self._set_seed(seed)
        self._source_keys = [zlib.crc32(n.encode()) for n in self.names]
        self.draw = 0
        self.counts = [0] * len(self.names)
        self._set_lengths([s.tokens for s in self.streams])
        if total_tokens is not None:
            self.check_enough(total_tokens)

    def _set_seed(self, seed: int) -> None:
        self.seed = seed
        self._key = _mix64(_mix64(seed & 0xFFFFFFFFFFFFFFFF) ^ (self.mix.seed & 0xFFFFFFFFFFFFFFFF))
        self._perm_cache = {}

    def _set_lengths(self, lengths: list[int]) -> None:
        self.lengths = list(lengths)
        c = self.context
        self.n_windows = []
        for name, length in zip(self.names, self.lengths):
            n = (length - c) // c  # windows per epoch; the epoch's random offset fits below c
            if n < 1:
                raise DataError(f"source '{name}' holds {length:,} {self.split} tokens, fewer than two windows of "
                                f"context {c}; add data to it or run `sparknet prepare` with more tokens")
            self.n_windows.append(n)
        self._perm_cache: dict[tuple[int, int], tuple[np.ndarray, int]] = {}

    def check_enough(self, total_tokens: int) -> None:
        """Refuse a run whose non-repeating sources hold fewer windows than their share of it."""
        draws = math.ceil(total_tokens / self.context)
        for i, name in enumerate(self.names):
            if self.repeat[i]:
                continue
            need = math.ceil(self.shares[i] * draws) + len(self.names)
            if need > self.n_windows[i]:
                missing = (need - self.n_windows[i]) * self.context
                raise DataError(f"source '{name}' holds {self.n_windows[i] * self.context:,} usable tokens but the "
                                f"run draws up to {need * self.context:,} from it ({missing:,} missing); run "
                                f"`sparknet prepare` with more tokens, add data, or set repeat = true for it")

    # -------------------------------------------------------- drawing

    def _pick_with(self, i: int, counts: list[int]) -> int:
        """Source of global draw i: one whose count is below its exact share, chosen at random weighted
        by how far below. Every source stays within len(sources) windows of its share."""
        n = i + 1
        deficits = [share * n - count for share, count in zip(self.shares, counts)]
        total = sum(d for d in deficits if d > 0)
        u = _mix64(self._key ^ i) / 2.0**64 * total
        for s, d in enumerate(deficits):
            if d > 0:
                if u < d:
                    return s
                u -= d
        return max(range(len(deficits)), key=deficits.__getitem__)  # floating-point edge

    def _epoch_order(self, s: int, epoch: int) -> tuple[np.ndarray, int]:
        key = (s, epoch)
        if key not in self._perm_cache:
            if len(self._perm_cache) > 2 * len(self.names):
                self._perm_cache.clear()
            rng = np.random.default_rng([self.seed & 0xFFFFFFFF, self.mix.seed & 0xFFFFFFFF,
                                         self._source_keys[s], epoch, 0 if self.split == "train" else 1])
            perm = rng.permutation(self.n_windows[s])
            offset = 0 if epoch == 0 else int(rng.integers(0, self.context))
            self._perm_cache[key] = (perm, offset)
        return self._perm_cache[key]

    def _window_start(self, s: int, k: int) -> int:
        n = self.n_windows[s]
        epoch = k // n
        if epoch > 0 and not self.repeat[s]:
            m = self.manifests[s]
            fix = ("set repeat = true for it or add data" if m["complete"] else
                   "run `sparknet prepare` with the run's token count")
            raise DataError(f"source '{self.names[s]}' ran out after {n * self.context:,} tokens and may not repeat; "
                            f"{fix}")
        perm, offset = self._epoch_order(s, epoch)
        return offset + int(perm[k % n]) * self.context

    def next_batch(self) -> np.ndarray:
        out = np.empty((self.batch, self.context + 1), dtype=np.int64)
        # Every rank steps through the same batch * world global draws, so all ranks hold the same
        # position and any rank's state_dict resumes every rank.
        first = self.draw
        counts = list(self.counts)
        for i in range(first, first + self.batch * self.world):
            s = self._pick_with(i, counts)
            if i % self.world == self.rank:
                row = (i - first) // self.world
                out[row] = self.streams[s].read(self._window_start(s, counts[s]), self.context + 1)
            counts[s] += 1
        self.counts = counts
        self.draw = first + self.batch * self.world
        return out

    def __iter__(self):
        while True:
            yield self.next_batch()

    # -------------------------------------------------------- accounting and resuming

    def tokens_by_source(self) -> dict[str, int]:
        """Tokens drawn per source so far by all ranks together (context tokens per window)."""
        return {n: c * self.context for n, c in zip(self.names, self.counts)}

    def epochs(self, state: dict | None = None) -> dict[str, float]:
        """Passes over each source so far, or at a position `state_dict` gave."""
        counts = [state["counts"][n] for n in self.names] if state is not None else self.counts
        return {n: c / w for n, c, w in zip(self.names, counts, self.n_windows)}

    def state_dict(self) -> dict:
        return {"version": self.STATE_VERSION, "split": self.split, "draw": self.draw,
                "counts": dict(zip(self.names, self.counts)), "lengths": dict(zip(self.names, self.lengths)),
                "seed": self.seed, "mix_seed": self.mix.seed, "context": self.context}

    def load_state_dict(self, state: dict) -> None:
        if not isinstance(state, dict) or state.get("version") != self.STATE_VERSION:
            raise DataError("the saved data position is from another SparkNet version; start a new run")
        if sorted(state["counts"]) != sorted(self.names):
            raise DataError(f"the saved data position is for sources {sorted(state['counts'])} but the mix has "
                            f"{sorted(self.names)}; resume with the run's own mix")
        if state["context"] != self.context:
            raise DataError(f"the saved data position is for context {state['context']}, not {self.context}; "
                            "resume with the run's own profile")
        lengths = []
        for name, stream in zip(self.names, self.streams):
            saved = int(state["lengths"][name])
            if stream.tokens < saved:
                raise DataError(f"source '{name}' holds {stream.tokens:,} tokens now but the run had {saved:,}; "
                                "the cache changed: run `sparknet prepare` for the run's mix again")
            lengths.append(saved)  # a cache that grew since is viewed at its old size, so the order is unchanged
        self._set_lengths(lengths)
        self._set_seed(int(state["seed"]))
        self.draw = int(state["draw"])
        self.counts = [int(state["counts"][n]) for n in self.names]


def validation_batches(mix: MixConfig, tokens: int, *, batch: int, context: int,
                       cache_dir: Path | None = None) -> Iterator[np.ndarray]:
    """Held-out windows, the same on every call: about `tokens` tokens, split between sources by weight
    (fewer when the validation split holds fewer), as int64 arrays of shape (<= batch, context + 1)."""
    if mix.validation_share <= 0:
        raise DataError(f"mix '{mix.name}' has validation_share = 0, so no held-out tokens; "
                        "set validation_share > 0 (for example 0.005) and run `sparknet prepare`")
    streams, _ = _open_streams(mix, "val", cache_dir)
    shares = mix.shares
    windows_total = max(1, math.ceil(tokens / context))
    plan = []  # (position in the interleave, source, start)
    for src, stream in zip(mix.sources, streams):
        available = (stream.tokens - 1) // context if stream.tokens > context else 0
        want = min(available, max(1, round(shares[src.name] * windows_total)))
        for t in range(want):
            j = t * available // want  # evenly spread over the whole split
            plan.append(((t + 0.5) / want, src.name, stream, j * context))
    if not plan:
        raise DataError(f"mix '{mix.name}' has no validation windows of {context + 1} tokens; raise "
                        "validation_share or prepare more tokens")
    plan.sort(key=lambda p: (p[0], p[1]))
    for b in range(0, len(plan), batch):
        chunk = plan[b:b + batch]
        out = np.empty((len(chunk), context + 1), dtype=np.int64)
        for r, (_, _, stream, start) in enumerate(chunk):
            out[r] = stream.read(start, context + 1)
        yield out


# ---------------------------------------------------------------- `sparknet prepare`


def _fmt_eta(seconds) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def _fmt_tokens(n) -> str:
    return "whole" if n is None else f"{n:,}"


class _PlainProgressPrinter:
    """One line per tokenizing source every few seconds: readable on a terminal and in train.log."""

    def __init__(self, out, every_s: float = 2.0):
        self.out, self.every_s, self._last = out, every_s, 0.0

    def __call__(self, snap: dict) -> None:
        now = time.monotonic()
        if now - self._last < self.every_s:
            return
        self._last = now
        for row in snap["sources"]:
            if row["state"] == "tokenizing":
                rate = f"{row['tokens_per_s']:,} tok/s" if row["tokens_per_s"] else "starting"
                print(f"  {row['name']:<16} {row['tokens']:>14,} / {_fmt_tokens(row['quota']):>14} tokens  "
                      f"{rate:>16}  ETA {_fmt_eta(row['eta_s'])}", file=self.out, flush=True)


def format_report(report: dict) -> str:
    header = f"{'source':<16} {'train tokens':>14} {'val tokens':>12} {'documents':>10} {'epochs':>7}  state"
    lines = [header, "-" * len(header)]
    for name, r in report.items():
        epochs = f"{r['epochs_needed']:.2f}" if r["epochs_needed"] else "-"
        state = r["state"] + ("" if r["complete"] else " (partial)")
        lines.append(f"{name:<16} {r['train_tokens']:>14,} {r['val_tokens']:>12,} {r['documents']:>10,} "
                     f"{epochs:>7}  {state}")
    return "\n".join(lines)


def prepare_command(mix_name: str, tokens: int | None, cache_dir: Path | None = None, *,
                    workers: int | None = None, out=None) -> int:
    """`sparknet prepare --mix M [--tokens N]`: tokenize and cache, print progress and a table; exit code."""
    out = out or sys.stdout
    try:
        mix = load_mix(mix_name)
        root = cache_root(cache_dir)
        budget = f"{tokens:,} tokens" if tokens else \
            f"local sources whole, hub sources {DEFAULT_PREPARE_TOKENS:,} tokens"
        print(f"preparing mix '{mix.name}' ({budget}) into {root}", file=out, flush=True)
        start = time.monotonic()
        report = prepare_mix(mix, tokens, cache_dir=root, workers=workers, progress=_PlainProgressPrinter(out))
    except KeyboardInterrupt:
        print("interrupted: run the same command again to continue where it stopped", file=sys.stderr)
        return 130
    except SparkNetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(format_report(report), file=out)
    for name, r in report.items():
        if r["repaired"]:
            print(f"warning: {r['repaired']}", file=out)
        if r["undecodable_bytes"]:
            print(f"warning: source '{name}': skipped {r['undecodable_bytes']:,} bytes that are not UTF-8",
                  file=out)
    print(f"done in {time.monotonic() - start:.1f}s", file=out, flush=True)
    return 0
