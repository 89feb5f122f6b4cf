"""Helpers of the data tests: mix and JSONL files, reading a cached stream back, made-up documents."""

import json
from pathlib import Path

import numpy as np

import engine.data as data
from engine.data import read_manifest

PROJECT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT.parent / "shared" / "data"


def write_mix(path: Path, sources: list[dict], **top) -> Path:
    """A mix file; values are written as TOML literals."""
    top = {"tokenizer": "gpt2", "validation_share": 0.005, "seed": 42, **top}
    lines = [f"{k} = {json.dumps(v)}" for k, v in top.items()]
    for src in sources:
        lines.append("[[sources]]")
        lines += [f"{k} = {'true' if v is True else 'false' if v is False else json.dumps(v)}" for k, v in src.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_jsonl(path: Path, texts: list[str], field: str = "text") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({field: t}) + "\n" for t in texts))
    return path


def stream(folder: Path, split: str) -> np.ndarray:
    m = read_manifest(folder)
    parts = [np.fromfile(folder / s["file"], dtype=m["dtype"]) for s in m["shards"][split]]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=m["dtype"])


def documents_of(tokens: np.ndarray, eos: int) -> list[tuple]:
    """Split a cached stream at EOS; every document must end with one."""
    ends = np.flatnonzero(tokens == eos)
    assert len(tokens) == 0 or ends[-1] == len(tokens) - 1, "stream does not end with EOS"
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [tuple(tokens[a:b].tolist()) for a, b in zip(starts, ends)]


def unique_docs(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    words = "river stone apple lantern quiet orbit maple cobalt thunder violet meadow signal harbor".split()
    return [f"Document {i}. " + " ".join(rng.choice(words, size=int(rng.integers(20, 200)))) for i in range(n)]


class EncodeCounter:
    """Counts texts handed to the real encoder (prepare in-process: workers=1)."""

    def __init__(self, monkeypatch):
        self.texts = 0
        real = data.encode_documents

        def counting(tok, texts, ends=None):
            self.texts += len(texts)
            return real(tok, texts, ends)

        monkeypatch.setattr(data.tokenize, "encode_documents", counting)
