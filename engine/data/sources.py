"""Where documents come from: the sources of a mix (local files of five formats, or Hugging Face datasets) read
as one stream of texts in a fixed order. No torch, no tokenizer: reading only."""

from __future__ import annotations

import codecs
import gzip
import hashlib
import io
import json
import os
import re
import zlib
from pathlib import Path
from typing import Iterator

from engine import SparkNetError, one_line
from engine.config.loading import MixConfig, SourceConfig
from engine.data.hub import hub_host, hub_offline, hub_reachable

TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".jsonl", ".json", ".parquet")
_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n.*?\r?\n(?:---|\.\.\.)[ \t]*(?:\r?\n|\Z)", re.S)


class DataError(SparkNetError):
    pass


class BadDocumentError(DataError):
    """The source's content is malformed: its partial cache is discarded, the user fixes the file."""


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:48] or "source"


# Undecodable bytes are dropped and counted, never fatal: one stray Latin-1 byte in a
# folder of blog posts should not stop a run.
_undecodable_bytes = [0]
CHECK_CHARS = 1 << 20  # how much of a source its pre-start check reads
# A document longer than this is read and tokenized in pieces of at most this many characters, cut after
# whitespace: memory stays bounded whatever the length of a line (a scraped dump's single 1 GB line included).
PIECE_CHARS = 1 << 20
READ_BYTES = 1 << 20  # a plain-text file is read this much at a time
Piece = tuple[str, bool]  # a document's text, or part of it, and whether it ends the document
NOT_TEXT_SHARE = 0.1  # more undecodable bytes than this share of what was read: not text


def _count_and_skip(err: UnicodeDecodeError):
    _undecodable_bytes[0] += err.end - err.start
    return "", err.end


codecs.register_error("sparknet-skip-count", _count_and_skip)


def _decode(data: bytes, encoding: str = "utf-8") -> str:
    text = data.decode(encoding, errors="sparknet-skip-count")
    return text[1:] if text.startswith("\ufeff") else text


def cut_point(text: str, start: int = 0) -> int:
    """Where to end a piece of `text` that starts at `start`: after the last whitespace in the last tenth of
    PIECE_CHARS, else PIECE_CHARS on; an offset from `start`."""
    low = PIECE_CHARS - PIECE_CHARS // 10
    best = max(text.rfind(c, start + low, start + PIECE_CHARS) for c in (" ", "\n", "\t"))
    return best - start + 1 if best >= 0 else PIECE_CHARS


def full_pieces(text: str) -> Iterator[str]:
    """The pieces of `text` that leave more than PIECE_CHARS behind them; the rest is text[sum of their lengths:].
    Sliced by offset: a 1 GB document is never copied whole again."""
    start = 0
    while len(text) - start > PIECE_CHARS:
        end = start + cut_point(text, start)
        yield text[start:end]
        start = end


def pieces_of(text: str) -> Iterator[Piece]:
    start = 0
    for piece in full_pieces(text):
        yield piece, False
        start += len(piece)
    yield text[start:], True


def text_file_pieces(f: Path, strip_front: bool, encoding: str = "utf-8") -> Iterator[Piece]:
    """A .txt or .md file as pieces, read a megabyte at a time; Markdown's YAML front matter is dropped."""
    decoder = codecs.getincrementaldecoder(encoding)(errors="sparknet-skip-count")
    buffer, first = "", True
    with _open_bytes(f) as fh:
        while True:
            data = fh.read(READ_BYTES)
            buffer += decoder.decode(data, final=not data)
            if first and (len(buffer) >= PIECE_CHARS or not data):
                buffer = buffer[1:] if buffer.startswith("\ufeff") else buffer
                buffer = strip_front_matter(buffer) if strip_front else buffer
                first = False
            start = 0
            for piece in full_pieces(buffer):
                yield piece, False
                start += len(piece)
            buffer = buffer[start:]
            if not data:
                yield buffer, True
                return


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
            spec = {"kind": "path", "path": s.path, "text_field": s.text_field, "files": len(self.files),
                    "files_hash": files_hash, "validation_share": self.validation_share}
            if s.encoding.lower().replace("_", "-") not in ("utf-8", "utf8"):
                spec["encoding"] = s.encoding  # other bytes, other text: a cache of its own
            return spec
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
        """Open the source and read its first documents, so a bad source fails before anything is written: one
        with no text at all, or whose first text is mostly bytes that are not UTF-8 (a binary file, another
        encoding), is refused."""
        it = self.pieces(skip=0)
        chars = 0
        try:
            for text, _ in it:
                chars += len(text)
                if chars >= CHECK_CHARS:
                    break
        finally:
            it.close()
        where = self.src.path or self.src.hf
        if chars == 0:
            raise DataError(f"source '{self.src.name}': {where} holds no text; fill it, point path at the right "
                            f"file, or remove the source from {self.mix_where}")
        skipped = self.undecodable_bytes
        if skipped > NOT_TEXT_SHARE * (chars + skipped):
            encoding = "UTF-8" if self.src.encoding.lower().replace("_", "-") in ("utf-8", "utf8") else \
                self.src.encoding
            raise DataError(f"source '{self.src.name}': {skipped / (chars + skipped):.0%} of the first bytes of "
                            f"{where} are not {encoding}, so it is not text SparkNet can read; if it is text in "
                            f"another encoding, say so with encoding = \"latin-1\" (or its own) on the source in "
                            f"{self.mix_where}, or convert it (for example with iconv); else remove it")

    def pieces(self, skip: int = 0) -> Iterator[Piece]:
        """Every document in a fixed order, empty ones included (as ''), after the first `skip`; a long one in
        pieces (see PIECE_CHARS), each with whether it ends its document."""
        base = _undecodable_bytes[0]
        if self.kind == "path":
            pieces = self._local_pieces()
            ended = 0
            while ended < skip:  # the documents before `skip` are read through and dropped
                piece = next(pieces, None)
                if piece is None:
                    return
                ended += piece[1]
        else:
            pieces = (piece for doc in self._hf_documents(skip) for piece in pieces_of(doc))
        try:
            for piece in pieces:
                self.undecodable_bytes = _undecodable_bytes[0] - base
                yield piece
        finally:
            self.undecodable_bytes = _undecodable_bytes[0] - base
            pieces.close()

    def _local_pieces(self) -> Iterator[Piece]:
        for f in self.files:
            kind = _kind(f)
            try:
                if kind in (".txt", ".md", ".markdown"):
                    yield from text_file_pieces(f, strip_front=kind != ".txt", encoding=self.src.encoding)
                    continue
                docs = {".jsonl": self._jsonl_documents, ".json": self._json_documents,
                        ".parquet": self._parquet_documents}[kind](f)
                for doc in docs:
                    yield from pieces_of(doc)
            except (OSError, EOFError, zlib.error) as e:
                raise BadDocumentError(f"source '{self.src.name}': cannot read {f} ({one_line(e)}); "
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
                    record = json.loads(_decode(line, self.src.encoding))
                except json.JSONDecodeError as e:
                    raise BadDocumentError(f"source '{self.src.name}': {f} line {n} is not valid JSON ({e.msg}); "
                                           "fix or remove that line") from None
                yield self._record_text(record, f, f"line {n}")

    def _json_documents(self, f: Path) -> Iterator[str]:
        with _open_bytes(f) as fh:
            text = _decode(fh.read(), self.src.encoding)
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
                                   f"({one_line(e)}); replace it") from None
        columns = pf.schema_arrow.names
        if field not in columns:
            raise BadDocumentError(f"source '{self.src.name}': {f} has no column '{field}' "
                                   f"(columns: {', '.join(columns[:8])}); set text_field in {self.mix_where}")
        for batch in pf.iter_batches(columns=[field], batch_size=1024):
            for value in batch.column(0).to_pylist():
                yield value if isinstance(value, str) else ""

    def check_hub(self) -> None:
        """A hub dataset fails in seconds on a machine that cannot reach the hub (unless told to work offline)."""
        if self.kind != "hf" or self.local_dataset is not None or hub_offline():
            return
        if not hub_reachable():
            raise DataError(f"source '{self.src.name}': cannot reach the Hugging Face hub ({hub_host()}) to load "
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
            raise DataError(f"source '{s.name}': dataset '{location}' could not be loaded ({one_line(e)}); "
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
                                f"({one_line(e)}); run prepare again to continue from there") from None
