"""Published WikiText-2 figures for the baselines, shown when their weights are not measured here.

Only what was published: a figure the sources do not give stays None and the
table shows a dash. None of these was measured by SparkNet.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PublishedFigure:
    protocol: str  # the protocol as published, which may differ from SparkNet's
    loss: float | None
    perplexity: float | None
    note: str


_FIRST_ATTEMPT_TABLE = "published WikiText-2 table of the first DGX Spark attempt (validation, 2,000 lines, no context)"

PUBLISHED: dict[tuple[str, str], PublishedFigure] = {
    ("gpt2", "sparknet-2000"): PublishedFigure("sparknet-2000", 3.9407, 51.45, _FIRST_ATTEMPT_TABLE),
    ("codelion", "sparknet-2000"): PublishedFigure("sparknet-2000", 5.0129, 150.35, _FIRST_ATTEMPT_TABLE),
    ("gpt2", "standard"): PublishedFigure(
        "HF sliding window, context 1024, test", None, 29.9,
        "about 29.9, Hugging Face 'Perplexity of fixed-length models' (stride not stated; no loss or bytes published)"),
    ("codelion", "standard"): PublishedFigure(
        "standard", None, None, "no published figure for this protocol"),
}

PUBLISHED_TOKENIZER = "gpt2"  # both baselines use GPT-2's tokenizer
