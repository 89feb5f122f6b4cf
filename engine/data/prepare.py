"""Preparing a mix: make the cache hold every hub source's share of a run's tokens, and every local source
whole, plus the validation share.

Each source is read once, tokenized in parallel batches with an end-of-text token after every document, and
split between train and validation by whole documents, so none straddles the two. Work is committed every second
or so; an interrupted prepare continues from the last commit and a complete source is never read again. A stop
takes effect after the batch in hand.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from engine import SparkNetError, one_line
from engine.config.loading import MixConfig
from engine.config.paths import cache_root
from engine.data.cache import (
    SHARD_TOKENS,
    _discard_if_damaged,
    _Lock,
    _new_manifest,
    _remove_files,
    _restore_to_manifest,
    _ShardWriter,
    read_manifest,
    source_cache_dir,
)
from engine.data.sources import BadDocumentError, DataError, SourceReader, _slug
from engine.data.tokenize import _Encoder, _text_batches
from engine.data.tokenizer import Tokenizer, load_tokenizer
from engine.files import utc_now, write_json_atomic

DEFAULT_PREPARE_TOKENS = 10_000_000  # hub sources' budget when `prepare` gets no --tokens
# Slack over share * tokens: a run's last optimizer step may overshoot its token budget, and the
# loader's per-source count may run a few windows ahead of the exact share.
WINDOW_MARGIN_TOKENS = 65_536
TARGET_SLACK = 0.01
COMMIT_EVERY_S = 1.0
PROGRESS_EVERY_S = 0.5
POOL_MIN_TOKENS = 1_000_000  # below this a worker pool costs more to start than it saves


def required_train_tokens(share: float, tokens: int) -> int:
    """The train tokens a source that may not repeat must hold for a run of `tokens` tokens: its share, plus a
    margin for the draw order (each source stays within len(sources) windows of its exact share) and an epoch's
    random offset, which WINDOW_MARGIN_TOKENS covers for contexts up to 1,024 and tens of sources. The one
    formula: preparation and the loader both refuse below it."""
    return math.ceil(share * tokens) + WINDOW_MARGIN_TOKENS


def target_train_tokens(share: float, tokens: int) -> int:
    """What preparation reads of a hub source: the need plus a slack, so that a run resumed a little longer fits."""
    return math.ceil(share * tokens * (1 + TARGET_SLACK)) + WINDOW_MARGIN_TOKENS  # required_train_tokens, + 1%


def source_target(local: bool, share: float, tokens: int) -> int | None:
    """The train tokens of a source that a run of `tokens` reads: None for a local source, read whole (a run then
    samples all of it, not its first documents in file order: a corpus kept in topic or name order would give a
    short run only its first topics); a hub source's share plus slack."""
    return None if local else target_train_tokens(share, tokens)


def holds(manifest: dict | None, target: int | None) -> bool:
    """Whether a source's cache already holds what `source_target` asks of it."""
    return manifest is not None and (manifest["complete"] or
                                     (target is not None and manifest["tokens"]["train"] >= target))


class PrepareStopped(Exception):
    """A stop was asked for while preparing: what was committed stays, and the next prepare continues."""


class _Progress:
    """Per-source progress, handed to a callback and written as JSON for the control panel. Nothing is written
    until `writing` is set, once every source has passed its checks: a refused input leaves no file behind."""

    def __init__(self, mix: MixConfig, callback, paths: list[Path]):
        self.mix = mix
        self.callback = callback
        self.paths = paths
        self.writing = False
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
        if self.writing:
            for p in self.paths:
                try:
                    write_json_atomic(p, snap)
                except OSError:
                    pass  # progress is advisory; a full or read-only disk must not stop the work
        if self.callback is not None:
            self.callback(snap)


@dataclass
class _SourcePlan:
    reader: SourceReader
    folder: Path
    share: float
    target: int | None  # train tokens to hold (None: the whole local source)
    required: int | None  # train tokens a source that may not repeat must have
    done: bool  # already cached (and verified)
    repaired: str | None = None  # what was wrong with a damaged cache that is tokenized again


def prepare_mix(mix: MixConfig, tokens: int | None, *, cache_dir: Path | None = None, workers: int | None = None,
                progress: Callable[[dict], None] | None = None, progress_path: Path | None = None,
                shard_tokens: int = SHARD_TOKENS, should_stop: Callable[[], bool] | None = None) -> dict:
    """Make the cache hold, for every hub source, its share of `tokens` train tokens, and every local source
    whole, plus the validation share.

    tokens=None: hub sources get their share of DEFAULT_PREPARE_TOKENS.
    Raises DataError (one line) when a source that may not repeat is smaller than its share, and
    PrepareStopped within about a batch of should_stop() turning true.
    Returns {source: {train_tokens, val_tokens, documents, epochs_needed, complete, state, cache, ...}}.
    """
    root = cache_root(cache_dir)
    if tokens is not None and tokens <= 0:
        raise DataError(f"tokens must be a positive number, got {tokens}")
    paths = [root / f"progress-{_slug(mix.name or 'mix')}.json"] + ([Path(progress_path)] if progress_path else [])
    prog = _Progress(mix, progress, paths)
    encoder: _Encoder | None = None
    report: dict[str, dict] = {}
    try:
        tok = load_tokenizer(mix.tokenizer)
        readers = [SourceReader(s, mix) for s in mix.sources]  # missing paths and empty folders fail here
        encoder = _Encoder(tok, workers or max(1, min(os.cpu_count() or 1, 32)))
        plans = [_plan_source(r, root, tok, mix.shares[r.src.name], tokens, prog) for r in readers]
        # Open every source that still needs work before writing anything: a bad id, an offline hub
        # or a malformed first record fails now, not after an hour on the other sources.
        for plan in plans:
            if not plan.done:
                prog.update(plan.reader.src.name, state="checking")
                plan.reader.check()
                prog.update(plan.reader.src.name, state="waiting")
        prog.writing = True
        for plan in plans:
            name = plan.reader.src.name
            if not plan.done:
                prog.update(name, state="tokenizing", force=True)
                _prepare_source(plan.reader, plan.folder, tok, plan.target, encoder, prog, shard_tokens, should_stop)
            report[name] = _source_report(plan, read_manifest(plan.folder), tokens)
            prog.update(name, state=report[name]["state"], tokens=report[name]["train_tokens"],
                        val_tokens=report[name]["val_tokens"], eta_s=0, force=True)
    except BaseException as e:
        prog.finish(error=str(e) if isinstance(e, SparkNetError) else
                    "interrupted" if isinstance(e, KeyboardInterrupt) else
                    "stopped" if isinstance(e, PrepareStopped) else one_line(e))
        raise
    finally:
        if encoder is not None:
            encoder.close()
    prog.finish()
    return report


def _plan_source(reader: SourceReader, root: Path, tok: Tokenizer, share: float, tokens: int | None,
                 prog: _Progress) -> _SourcePlan:
    """What one source needs: its quota, and whether the cache (verified) already holds it."""
    name = reader.src.name
    required = required_train_tokens(share, tokens) if tokens is not None else None
    target = source_target(reader.kind == "path", share, tokens if tokens is not None else DEFAULT_PREPARE_TOKENS)
    folder = source_cache_dir(root, tok, reader)
    manifest = read_manifest(folder)
    done = holds(manifest, target)
    plan = _SourcePlan(reader, folder, share, target, required, done)
    damage = _discard_if_damaged(folder) if done else None
    if damage:
        plan.repaired = f"source '{name}': its cached tokens were damaged ({damage}); tokenizing it again"
        manifest, plan.done = None, False
    prog.update(name, quota=target, state="cached" if plan.done else "waiting",
                tokens=manifest["tokens"]["train"] if manifest else 0)
    if plan.done:
        check_enough(reader, manifest, required, share, tokens)
    return plan


def _source_report(plan: _SourcePlan, manifest: dict, tokens: int | None) -> dict:
    check_enough(plan.reader, manifest, plan.required, plan.share, tokens)
    needed = math.ceil(plan.share * tokens) if tokens is not None else None
    train = manifest["tokens"]["train"]
    return {
        "train_tokens": train,
        "val_tokens": manifest["tokens"]["val"],
        "documents": manifest["documents"]["train"] + manifest["documents"]["val"],
        "epochs_needed": round(needed / train, 4) if needed and train else 0.0,
        "complete": manifest["complete"],
        "undecodable_bytes": manifest["undecodable_bytes"],
        "state": "cached" if plan.done else "prepared",
        "cache": str(plan.folder),
        "repaired": plan.repaired,
    }


def check_enough(reader: SourceReader, manifest: dict, required: int | None, share: float, tokens: int | None) -> None:
    """Refuse a run that a complete, non-repeating source holds too few tokens for (required_train_tokens)."""
    if required is None or reader.src.repeat or not manifest["complete"]:
        return
    have = manifest["tokens"]["train"]
    if have >= required:
        return
    src = reader.src
    max_run = math.floor((have - WINDOW_MARGIN_TOKENS) / share)
    shorter = (f"lower run.tokens to {max_run:,} or less" if max_run > 0 else
               f"it holds less than the {WINDOW_MARGIN_TOKENS:,} spare tokens alone")
    raise DataError(
        f"source '{src.name}' has {have:,} train tokens but a {tokens:,}-token run needs {required:,} "
        f"({share:.1%} of it, plus {WINDOW_MARGIN_TOKENS:,} spare): {required - have:,} missing; add data to it, "
        f"{shorter}, or set repeat = true for it in {reader.mix_where}"
    )


def _prepare_source(reader: SourceReader, folder: Path, tok: Tokenizer, target: int | None,
                    encoder: _Encoder, prog: _Progress, shard_tokens: int, should_stop=None) -> None:
    name = reader.src.name
    with _Lock(folder):
        manifest = _open_manifest(folder, reader, tok)  # another process may have finished it while we waited
        if holds(manifest, target):
            return
        dtype = np.dtype(manifest["dtype"])
        writers = {split: _ShardWriter(folder, split, dtype, shard_tokens, manifest["shards"][split])
                   for split in ("train", "val")}
        counts, docs_count = manifest["tokens"], manifest["documents"]
        undecodable0 = manifest["undecodable_bytes"]

        def commit() -> None:
            for w in writers.values():
                w.flush()
            manifest["undecodable_bytes"] = undecodable0 + reader.undecodable_bytes
            manifest["updated_at"] = utc_now()
            write_json_atomic(folder / "manifest.json", manifest)

        docs = reader.pieces(skip=manifest["documents_read"])
        batches = _text_batches(docs)
        encoded = encoder.encoded(batches, _use_pool(reader, target, counts["train"]))
        def report() -> None:
            prog.update(name, tokens=counts["train"], val_tokens=counts["val"],
                        documents=docs_count["train"] + docs_count["val"])

        try:
            manifest["complete"] = not _write_encoded(encoded, writers, manifest, target, commit, report,
                                                      should_stop, name)
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



def _write_encoded(encoded, writers: dict, manifest: dict, target: int | None, commit, report, should_stop,
                   name: str) -> bool:
    """Route each encoded batch to the train and validation shards, committing every COMMIT_EVERY_S; True when
    the source reached its target before its end."""
    last_commit = time.monotonic()
    open_doc: dict = {"split": None}  # the split of a long document whose pieces are still coming
    for flat, lengths, ends in encoded:
        parts, reached = _route_documents(flat, lengths, ends, manifest, target, open_doc)
        for split in ("train", "val"):
            if parts[split]:
                writers[split].append(np.concatenate(parts[split]))
        report()
        if reached:
            return True
        between = open_doc["split"] is None  # commits fall between documents: a resume starts at a whole one
        if should_stop is not None and should_stop():
            if between:
                commit()
            raise PrepareStopped(name)
        if between and time.monotonic() - last_commit >= COMMIT_EVERY_S:
            commit()
            last_commit = time.monotonic()
    return False


def _open_manifest(folder: Path, reader: SourceReader, tok: Tokenizer) -> dict:
    """The committed manifest with the files cut back to it, or a new one over an emptied folder."""
    manifest = read_manifest(folder)
    if manifest is not None and _restore_to_manifest(folder, manifest):
        return manifest
    _remove_files(folder, keep={".lock"})
    return _new_manifest(reader, tok)


def _use_pool(reader: SourceReader, target: int | None, have: int) -> bool:
    if target is not None:
        return target - have >= POOL_MIN_TOKENS
    if reader.kind == "path":  # about 4 bytes of text per token
        return sum(f.stat().st_size for f in reader.files) >= 4 * POOL_MIN_TOKENS
    return True


def _route_documents(flat: np.ndarray, lengths: np.ndarray, ends: list[bool], manifest: dict, target: int | None,
                     open_doc: dict) -> tuple[dict[str, list], bool]:
    """Split one encoded batch between train and validation by whole documents (every piece of a long one goes
    where its first went), counting documents in the manifest as they end; stops early (True) once train holds
    `target` tokens, between documents."""
    counts, docs_count, share = manifest["tokens"], manifest["documents"], manifest["validation_share"]
    parts: dict[str, list] = {"train": [], "val": []}
    pos = 0
    for n, end in zip(lengths.tolist(), ends):
        split = open_doc["split"]
        if n and split is None:
            total = counts["train"] + counts["val"]
            # Whole documents go to validation whenever that brings its share closer to the target.
            split = "val" if share > 0 and counts["val"] + n / 2 < share * (total + n) else "train"
        if n:
            parts[split].append(flat[pos:pos + n])
            counts[split] += n
            pos += n
        open_doc["split"] = None if end else split
        if not end:
            continue
        manifest["documents_read"] += 1
        if split is None:
            manifest["empty_documents"] += 1
        else:
            docs_count[split] += 1
        if target is not None and counts["train"] >= target:
            return parts, True
    return parts, False
