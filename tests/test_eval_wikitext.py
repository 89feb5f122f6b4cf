"""WikiText-2 for evaluation: its rows and published token counts, the raw file's bytes, the 2,000-line set,
what happens without the files or the hub, and the encoded prefix a capped evaluation scores.

The GPT-2 tokenizer and WikiText-2 files come from ../shared/data. The hub is kept out with HF_HUB_OFFLINE
(conftest) and, where a cached copy could change the outcome, a private HF_HOME in a subprocess.
"""

import numpy as np
import pytest
from eval_helpers import WIKITEXT_DIR, tiny_model

from engine import SparkNetError
from engine.evaluate import (
    eval_command,
    load_wikitext_ids,
    sparknet_2000_lines,
    standard_text,
    wikitext_rows,
)
from engine.evaluate.wikitext import PREFIX_MARGIN_TOKENS, encode_prefix
from engine.models.export_hf import export_hf


@pytest.mark.slow
def test_wikitext_rows_and_published_token_counts(tok, test_rows):
    valid_rows, origin = wikitext_rows("validation", WIKITEXT_DIR)
    assert origin.endswith("wiki.valid.raw")
    assert (len(test_rows), len(valid_rows)) == (4358, 3760)  # the hub's row counts
    # hub rows: a blank line is an empty row, a line with text keeps its newline
    assert test_rows[:3] == ["", " = Robert Boulter = \n", ""]
    joined = standard_text(test_rows)
    ids, n_bytes = load_wikitext_ids(tok, WIKITEXT_DIR, split="test")
    # the Hugging Face recipe ("\n\n".join of the rows) gives 287,644 tokens, the figure its users report;
    # the file's own text gives the 286,221 quoted in the reference notes
    assert len(ids) == len(tok.encode(joined)) == 287_644
    assert len(tok.encode((WIKITEXT_DIR / "wiki.test.raw").read_text(encoding="utf-8"))) == 286_221
    assert len(tok.encode((WIKITEXT_DIR / "wiki.valid.raw").read_text(encoding="utf-8"))) == 249_887
    # the byte counter is exact over the whole split
    assert n_bytes(0, len(ids)) == len(joined.encode("utf-8"))
    # a capped score (in training, in the bench) encodes only the start, and gets the same ids
    first, first_bytes = load_wikitext_ids(tok, WIKITEXT_DIR, split="test", max_ids=50_001)
    assert np.array_equal(first, ids[:50_001]) and first_bytes(0, 50_001) == n_bytes(0, 50_001)


def test_sparknet_2000_lines_match_datasets_shuffle():
    import datasets

    rows, _ = wikitext_rows("validation", WIKITEXT_DIR)
    shuffled = datasets.Dataset.from_dict({"text": rows}).shuffle(seed=42)["text"]
    expected = [t.strip() for t in shuffled if t.strip()][:2000]
    lines = sparknet_2000_lines(rows)
    assert len(lines) == 2000
    assert lines == expected


def test_missing_wikitext_names_both_ways(monkeypatch, tmp_path):
    monkeypatch.delenv("SPARKNET_WIKITEXT", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SparkNetError) as e:
        wikitext_rows("test")
    msg = str(e.value)
    assert "\n" not in msg and "--wikitext DIR" in msg and "SPARKNET_WIKITEXT" in msg

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SparkNetError, match="wiki.test.raw not found"):
        wikitext_rows("test", empty)


def test_unreachable_hub_fails_fast(monkeypatch):
    import time

    for var in ("SPARKNET_WIKITEXT", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HTTPS_PROXY", "https_proxy",
                "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens there
    start = time.monotonic()
    with pytest.raises(SparkNetError, match="the Hugging Face hub is not reachable.*--wikitext DIR"):
        wikitext_rows("test")
    assert time.monotonic() - start < 5  # no half-minute of library retries


def test_eval_without_wikitext_fails_before_writing(monkeypatch, tmp_path, tok):
    model_dir = export_hf(tiny_model(), tmp_path / "model", tok)
    monkeypatch.delenv("SPARKNET_WIKITEXT", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SparkNetError, match="SPARKNET_WIKITEXT"):
        eval_command(str(model_dir), protocol="standard", samples=False, max_tokens=100)
    assert not (model_dir / "eval.json").exists()


def test_the_raw_file_bytes_are_the_split_files_own(test_rows):
    from engine.evaluate.wikitext import raw_file_bytes

    assert raw_file_bytes(test_rows) == (WIKITEXT_DIR / "wiki.test.raw").stat().st_size  # 1,290,590


@pytest.mark.parametrize("n", [1, 1025, 4097])
def test_a_capped_evaluation_encodes_a_prefix_with_the_whole_texts_first_ids(tok, test_rows, n):
    text = standard_text(test_rows[:600])
    whole = tok.encode(text)
    assert len(whole) > n + PREFIX_MARGIN_TOKENS
    assert encode_prefix(tok, text, n) == whole[:n]
    assert encode_prefix(tok, text[:300], n) == tok.encode(text[:300])[:n]  # a text shorter than asked: all of it
