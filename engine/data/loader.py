"""Reading the cache: windows drawn from a mix's cached sources by weight (MixLoader), and fixed held-out
windows (validation_batches). Every draw picks the source whose share is furthest behind (ties and near-ties
broken at random), so each source stays within a few windows of its exact share at every point of a run; windows
inside a source follow a seeded permutation per epoch, and the position is two small counters, so resuming is
exact."""

from __future__ import annotations

import math
import zlib
from pathlib import Path
from typing import Iterator

import numpy as np

from engine.config.loading import MixConfig
from engine.config.paths import cache_root
from engine.data.cache import cache_damage, read_manifest, source_cache_dir
from engine.data.prepare import required_train_tokens, source_target
from engine.data.sources import DataError, SourceReader
from engine.data.tokenizer import load_tokenizer


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
    (seed, mix.seed, total_tokens), whatever else the cache holds; state_dict()/load_state_dict() resume
    exactly.
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
        self._set_lengths([self._usable_tokens(i, total_tokens) for i in range(len(self.names))])
        if total_tokens is not None:
            self.check_enough(total_tokens)

    def _usable_tokens(self, i: int, total_tokens: int | None) -> int:
        """The tokens of source i that a run of total_tokens draws from. A hub source's are the first ones its
        preparation for that run reads, whatever more an earlier, larger preparation left in the cache: the
        run's windows then depend on the run alone. A local source is read whole, so all of it."""
        stream = self.streams[i]
        if total_tokens is None or self.split != "train":
            return stream.tokens
        target = source_target(bool(self.mix.sources[i].path), self.shares[i], total_tokens)
        return stream.tokens if target is None else min(stream.tokens, target)

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
        """Refuse a run whose non-repeating sources hold less than their share of it (the same need preparation
        checks: required_train_tokens)."""
        for i, name in enumerate(self.names):
            need = required_train_tokens(self.shares[i], total_tokens)
            if not self.repeat[i] and need > self.lengths[i]:
                raise DataError(f"source '{name}' holds {self.lengths[i]:,} usable tokens but a {total_tokens:,}-"
                                f"token run needs {need:,} of it ({need - self.lengths[i]:,} missing); run "
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

    def describe(self, total_tokens: int) -> str:
        """One line: per source, the tokens a run of total_tokens draws from and how many passes over them."""
        parts = []
        for i, name in enumerate(self.names):
            whole = self.manifests[i]["complete"] and self.lengths[i] == self.streams[i].tokens
            passes = self.shares[i] * total_tokens / (self.n_windows[i] * self.context)
            parts.append(f"{name} {self.lengths[i]:,} tokens ({'whole' if whole else 'its first ones'}), "
                         f"{passes:.3g} passes")
        return "; ".join(parts)

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


def validation_lengths(mix: MixConfig, cache_dir: Path | None = None) -> dict[str, int]:
    """Per source, the tokens its validation split holds now: a run keeps them in its checkpoints, and
    validation_batches, given them, views each split at that size."""
    streams, _ = _open_streams(mix, "val", cache_dir)
    return {src.name: stream.tokens for src, stream in zip(mix.sources, streams)}


def validation_batches(mix: MixConfig, tokens: int, *, batch: int, context: int, cache_dir: Path | None = None,
                       lengths: dict[str, int] | None = None) -> Iterator[np.ndarray]:
    """Held-out windows, the same on every call: about `tokens` tokens, split between sources by weight
    (fewer when the validation split holds fewer), as int64 arrays of shape (<= batch, context + 1).

    A local source's cache holds it whole, so its windows are spread evenly over the whole split. A hub
    source's cache grows with the runs prepared from it, so its windows are the split's first ones: a cache
    that grows later keeps them, and a smaller one gives the first of them. Where the split held fewer
    windows than its share, a cache that grows would add some: `lengths` (from validation_lengths) views
    each split at a run's own size, so its held-out set stays the same."""
    if mix.validation_share <= 0:
        raise DataError(f"mix '{mix.name}' has validation_share = 0, so no held-out tokens; "
                        "set validation_share > 0 (for example 0.005) and run `sparknet prepare`")
    streams, _ = _open_streams(mix, "val", cache_dir)
    shares = mix.shares
    windows_total = max(1, math.ceil(tokens / context))
    plan = []  # (position in the interleave, source, start)
    for src, stream in zip(mix.sources, streams):
        held = stream.tokens if lengths is None else min(stream.tokens, lengths.get(src.name, stream.tokens))
        available = (held - 1) // context if held > context else 0
        want = min(available, max(1, round(shares[src.name] * windows_total)))
        for t in range(want):
            j = t * available // want if src.path else t  # a local source is read whole (as _usable_tokens)
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
