"""WikiText-2 raw: the rows of a split, from a local folder or the Hugging Face hub, and the texts each protocol scores.

A local folder (--wikitext DIR or SPARKNET_WIKITEXT) holds wiki.test.raw and
wiki.valid.raw. The hub's rows of a split are the file's lines: a line with
text keeps its trailing "\\n", a blank line is an empty row. Joined with
"\\n\\n" (the Hugging Face perplexity recipe) the test split is 287,644 GPT-2
tokens; the file's own text, not joined, is 286,221.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from engine import SparkNetError
from engine.data.hub import hub_offline, hub_reachable

HUB_DATASET = "wikitext"
HUB_CONFIG = "wikitext-2-raw-v1"
SPLIT_FILES = {"test": "wiki.test.raw", "validation": "wiki.valid.raw"}
_SPLIT_ALIASES = {"test": "test", "validation": "validation", "valid": "validation", "val": "validation"}

SPARKNET_2000_LINES = 2000
SPARKNET_2000_SEED = 42


def _split_name(split: str) -> str:
    try:
        return _SPLIT_ALIASES[split]
    except KeyError:
        raise SparkNetError(f"WikiText-2 split '{split}': use test or validation") from None


def rows_from_file(path: Path) -> list[str]:
    try:
        with open(path, encoding="utf-8") as f:
            return [line if line.strip() else "" for line in f]
    except UnicodeDecodeError as e:
        raise SparkNetError(f"WikiText-2: {path} is not UTF-8 text (byte {e.start:,} is not); name a folder "
                            "holding the raw files wiki.test.raw and wiki.valid.raw") from None


def _rows_from_hub(split: str) -> tuple[list[str] | None, str]:
    """(rows, "") or (None, why not)."""
    if hub_offline():
        return None, "HF_HUB_OFFLINE is set"
    if not hub_reachable():
        return None, "the Hugging Face hub is not reachable"
    try:
        from datasets import load_dataset

        ds = load_dataset(HUB_DATASET, HUB_CONFIG, split=split)
        return list(ds["text"]), ""
    except Exception as e:  # any hub or cache failure means: use a local copy
        return None, f"loading {HUB_DATASET}/{HUB_CONFIG} from the hub failed ({e.__class__.__name__})"


def wikitext_rows(split: str, wikitext_dir: str | os.PathLike | None = None) -> tuple[list[str], str]:
    """(rows of the split, where they came from). The local folder wins when one is named."""
    split = _split_name(split)
    origin = "--wikitext"
    if wikitext_dir is None and os.environ.get("SPARKNET_WIKITEXT"):
        wikitext_dir, origin = os.environ["SPARKNET_WIKITEXT"], "SPARKNET_WIKITEXT"
    if wikitext_dir is not None:
        folder = Path(os.path.expandvars(os.path.expanduser(str(wikitext_dir))))
        path = folder / SPLIT_FILES[split]
        if not path.is_file():
            raise SparkNetError(f"WikiText-2: {path} not found; {origin} must name a folder holding "
                                "wiki.test.raw and wiki.valid.raw")
        return rows_from_file(path), str(path)
    rows, why = _rows_from_hub(split)
    if rows is None:
        raise SparkNetError(f"WikiText-2 not available: {why} and no local copy was named; set SPARKNET_WIKITEXT=DIR "
                            "(`eval` also takes --wikitext DIR), a folder holding wiki.test.raw and wiki.valid.raw")
    return rows, f"hub:{HUB_DATASET}/{HUB_CONFIG}"


def standard_text(rows: list[str]) -> str:
    return "\n\n".join(rows)


# Ids at the end of an encoded prefix that may differ from the whole text's: the cut can fall inside a word
PREFIX_MARGIN_TOKENS = 256


def encode_prefix(tokenizer, text: str, n: int | None) -> list[int]:
    """The first n ids of the whole text's encoding (n None: all of them), from an encoding of only as much of it
    as they need (a capped evaluation reads a few thousand tokens of a text whose whole encoding takes seconds).
    The prefix runs at least PREFIX_MARGIN_TOKENS past them, so that the words the cut splits differently are not
    among them."""
    if n is None:
        return tokenizer.encode(text)
    chars = max(8 * n, 4096)  # never 0, which doubling would keep at 0
    while chars < len(text):
        ids = tokenizer.encode(text[:chars])
        if len(ids) >= n + PREFIX_MARGIN_TOKENS:
            return ids[:n]
        chars *= 2
    return tokenizer.encode(text)[:n]


def raw_file_bytes(rows: list[str]) -> int:
    """The UTF-8 bytes of the split's file: each text row as it stands, each blank row one " \n" line."""
    return sum(len(row.encode("utf-8")) if row else 2 for row in rows)


def sparknet_2000_lines(rows: list[str], n: int = SPARKNET_2000_LINES, seed: int = SPARKNET_2000_SEED) -> list[str]:
    """The published line sample: rows shuffled as datasets.Dataset.shuffle(seed) does, first n non-empty stripped."""
    order = np.random.default_rng(seed).permutation(len(rows))
    lines = []
    for i in order:
        line = rows[i].strip()
        if line:
            lines.append(line)
            if len(lines) == n:
                break
    return lines


def byte_counter(tokenizer, ids) -> Callable[[int, int], int]:
    """n_bytes(start, end): UTF-8 bytes of the text of ids[start:end].

    Exact when the span starts and ends on character boundaries; a span that
    cuts a multi-byte character counts the replacement character instead.
    """

    def n_bytes(start: int, end: int) -> int:
        if end <= start:
            return 0
        return len(tokenizer.decode([int(t) for t in ids[start:end]]).encode("utf-8"))

    return n_bytes


def load_wikitext_ids(tokenizer, wikitext_dir: str | os.PathLike | None = None, split: str = "test",
                      max_ids: int | None = None) -> tuple[np.ndarray, Callable[[int, int], int]]:
    """The standard protocol's token stream of a split (its first max_ids ids when given) and its byte counter;
    SparkNetError when no copy is found."""
    rows, _ = wikitext_rows(split, wikitext_dir)
    ids = np.asarray(encode_prefix(tokenizer, standard_text(rows), max_ids), dtype=np.int64)
    return ids, byte_counter(tokenizer, ids)
