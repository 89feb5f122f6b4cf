"""What the evaluation tests share: the GPT-2 tokenizer and WikiText-2 from ../shared/data, tiny models, eval.json."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from engine.config.loading import ModelConfig
from engine.models.checkpoint import save_checkpoint
from engine.models.gpt2 import GPT

PROJECT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT.parent / "shared" / "data"
WIKITEXT_DIR = SHARED_DATA / "wikitext-2-raw"
TOKENIZER_DIR = SHARED_DATA / "gpt2-tokenizer" / "hf"
LN_VOCAB = math.log(50257)


def tiny_model(context=64, seed=0, dropout=0.0, vocab_size=50257) -> GPT:
    torch.manual_seed(seed)
    return GPT(ModelConfig(n_layer=1, n_embd=32, n_head=2, context=context, dropout=dropout,
                           vocab_size=vocab_size)).eval()


def make_run(logs: Path, model: GPT, name="tiny-run") -> Path:
    run_dir = logs / name
    run_dir.mkdir()
    (run_dir / "run.toml").write_text('[mix]\ntokenizer = "gpt2"\n')
    opt = torch.optim.AdamW(model.parameters())
    save_checkpoint(run_dir, 10, model, opt, {"tokens": 1000, "tokenizer": "gpt2"}, keep=2)
    return run_dir


def no_progress(name, total):
    return lambda n: None


def in_protocol(doc: dict, protocol: str = "standard") -> dict:
    """The document with one protocol's section (its protocol, results, deltas) lifted to the top."""
    (section,) = [s for s in doc["evaluations"] if s["protocol"]["name"] == protocol]
    return {**doc, **section}


def read_eval(folder: Path, protocol: str = "standard", name: str = "eval.json") -> dict:
    return in_protocol(json.loads((folder / name).read_text()), protocol)
