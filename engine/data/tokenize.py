"""Tokenizing batches of documents, in this process or a pool of worker processes that die with their parent."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Iterator

import numpy as np

from engine.data.tokenizer import Tokenizer

BATCH_CHARS = 2_000_000  # text per tokenization task (about half a million tokens)
BATCH_DOCS = 2048


_worker_tokenizer: Tokenizer | None = None


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


Batch = tuple[list[str], list[bool]]  # texts, and whether each ends its document


def _encode_in_worker(batch: Batch) -> tuple[np.ndarray, np.ndarray]:
    return encode_documents(_worker_tokenizer, *batch)


def encode_documents(tok: Tokenizer, texts: list[str], ends: list[bool] | None = None) -> tuple[np.ndarray,
                                                                                                np.ndarray]:
    """Tokens of all texts, each non-empty one that ends its document followed by EOS (a piece of a longer
    document runs on into the next), and each text's token count (0 when empty)."""
    dtype = np.dtype(tok.token_dtype)
    ends = ends if ends is not None else [True] * len(texts)
    keep = [i for i, t in enumerate(texts) if t and not t.isspace()]
    ids = tok.encode_batch([texts[i] for i in keep]) if keep else []
    lengths = np.zeros(len(texts), dtype=np.int64)
    for i, doc in zip(keep, ids):
        lengths[i] = len(doc) + ends[i]
    flat = np.empty(int(lengths.sum()), dtype=dtype)
    pos = 0
    for i, doc in zip(keep, ids):
        n = len(doc)
        flat[pos:pos + n] = doc
        if ends[i]:
            flat[pos + n] = tok.eos_id
        pos += n + ends[i]
    return flat, lengths


def _text_batches(pieces: Iterator[tuple[str, bool]]) -> Iterator[Batch]:
    texts: list[str] = []
    ends: list[bool] = []
    chars = 0
    for text, end in pieces:
        texts.append(text)
        ends.append(end)
        chars += len(text)
        if chars >= BATCH_CHARS or len(texts) >= BATCH_DOCS:
            yield texts, ends
            texts, ends, chars = [], [], 0
    if texts:
        yield texts, ends


class _Encoder:
    """Tokenizes batches of texts in order, in this process or across a pool of worker processes."""

    def __init__(self, tok: Tokenizer, workers: int):
        self.tok = tok
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    def encoded(self, batches: Iterator[Batch], use_pool: bool) -> Iterator[tuple[np.ndarray, np.ndarray, list]]:
        """(tokens, lengths) per batch, as encode_documents returns them, and the batch's ends, in order."""
        if not use_pool or self.workers <= 1:
            for texts, ends in batches:
                yield *encode_documents(self.tok, texts, ends), ends
            return
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"),
                                             initializer=_init_worker,
                                             initargs=(self.tok.to_serialized(), os.getpid()))
        pending: deque = deque()
        try:
            # A bounded window of batches in flight: reading never runs far ahead of tokenizing.
            for batch in batches:
                pending.append((self._pool.submit(_encode_in_worker, batch), batch[1]))
                if len(pending) >= 2 * self.workers:
                    future, ends = pending.popleft()
                    yield *future.result(), ends
            while pending:
                future, ends = pending.popleft()
                yield *future.result(), ends
        finally:
            for future, _ in pending:
                future.cancel()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
