"""A document of any length is read and tokenized in bounded pieces: the cache holds exactly the tokenized text, one
document with one EOS, and a stop inside a long document resumes without a token twice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from data_helpers import EncodeCounter, documents_of, stream, unique_docs, write_jsonl, write_mix

import engine.data as data
from engine.config.loading import load_mix
from engine.data import prepare_mix, read_manifest
from engine.data.sources import PIECE_CHARS, pieces_of, text_file_pieces
from engine.data.tokenizer import load_tokenizer


def long_line(chars: int, seed: int = 0) -> str:
    """Random words, one space between them, ending with the first whole word at or past `chars` characters."""
    words = "river stone äpple lantern quiet orbit maple cobalt thunder violet 海 meadow signal harbor".split()
    picks = np.random.default_rng(seed).integers(len(words), size=chars // 2 + 1)  # a word and its space: 2+
    text = " ".join(words[i] for i in picks.tolist())
    end = text.find(" ", chars)
    return text if end == -1 else text[:end]


def test_a_long_text_is_cut_after_whitespace_into_pieces_that_join_back():
    text = long_line(3 * PIECE_CHARS + 12345)
    pieces = list(pieces_of(text))
    assert "".join(p for p, _ in pieces) == text
    assert [end for _, end in pieces] == [False, False, False, True]
    assert all(len(p) <= PIECE_CHARS and p.endswith(" ") for p, _ in pieces[:-1])


def test_a_text_file_is_read_a_megabyte_at_a_time_whatever_its_bytes(tmp_path, monkeypatch):
    monkeypatch.setattr(data.sources, "READ_BYTES", 1001)  # multi-byte characters split across reads
    text = long_line(2 * PIECE_CHARS, seed=1)
    path = tmp_path / "one-line.md"
    path.write_text("---\ntitle: front matter\n---\n" + text, encoding="utf-8")
    pieces = list(text_file_pieces(path, strip_front=True))
    assert "".join(p for p, _ in pieces) == text and [e for _, e in pieces][-1] and len(pieces) == 3


@pytest.fixture
def huge_line_mix(tmp_path):
    texts = unique_docs(5, seed=3) + [long_line(2 * PIECE_CHARS + 777, seed=4)] + unique_docs(5, seed=5)
    src = write_jsonl(tmp_path / "docs.jsonl", texts)
    mix = load_mix(str(write_mix(tmp_path / "m.toml", [{"name": "docs", "weight": 1, "path": str(src)}],
                                 validation_share=0.0)))
    return texts, mix


@pytest.mark.slow
def test_a_huge_line_is_one_document_of_exactly_its_tokens(tmp_path, huge_line_mix, monkeypatch):
    texts, mix = huge_line_mix
    seen: list[int] = []
    real = data.tokenize.encode_documents

    def watching(tok, batch, ends=None):
        seen.extend(len(t) for t in batch)
        return real(tok, batch, ends)

    monkeypatch.setattr(data.tokenize, "encode_documents", watching)
    report = prepare_mix(mix, None, cache_dir=tmp_path / "cache", workers=1)
    tok = load_tokenizer("gpt2")
    docs = documents_of(stream(Path(report["docs"]["cache"]), "train"), tok.eos_id)
    assert len(docs) == len(texts)  # one EOS a document, however long
    assert tok.decode(list(docs[5])) == texts[5]  # the pieces' tokens decode to the very text
    assert max(seen) <= PIECE_CHARS  # the tokenizer never held more than a piece
    assert read_manifest(Path(report["docs"]["cache"]))["documents_read"] == len(texts)


@pytest.mark.slow
def test_a_stop_inside_a_long_document_resumes_without_a_token_twice(tmp_path, huge_line_mix, monkeypatch):
    texts, mix = huge_line_mix
    clean = prepare_mix(mix, None, cache_dir=tmp_path / "clean", workers=1)
    monkeypatch.setattr(data.tokenize, "BATCH_DOCS", 1)  # one piece a batch: stops fall inside the document
    monkeypatch.setattr(data.prepare, "COMMIT_EVERY_S", 0.0)
    monkeypatch.setattr(data.prepare, "PROGRESS_EVERY_S", 0.0)

    def stop_in_the_long_document(snapshot):
        if snapshot["sources"][0]["documents"] >= 6:
            raise KeyboardInterrupt

    counter = EncodeCounter(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        prepare_mix(mix, None, cache_dir=tmp_path / "cache", workers=1, progress=stop_in_the_long_document)
    folder = tmp_path / "cache" / Path(clean["docs"]["cache"]).relative_to(tmp_path / "clean")
    assert read_manifest(folder)["documents_read"] == 5  # committed only between documents
    assert counter.texts > 6  # it had tokenized pieces of the long one
    prepare_mix(mix, None, cache_dir=tmp_path / "cache", workers=1)
    assert np.array_equal(stream(folder, "train"), stream(Path(clean["docs"]["cache"]), "train"))


def test_text_in_another_encoding_is_refused_naming_the_share_until_the_source_says_its_encoding(tmp_path):
    from cli_helpers import sparknet

    text = "Café au lait, crème brûlée, déjà vu: à la carte. " * 400
    (tmp_path / "notes.txt").write_bytes(text.encode("latin-1"))
    source = {"name": "notes", "weight": 1, "path": str(tmp_path / "notes.txt")}
    mix = write_mix(tmp_path / "latin.toml", [source], tokenizer=str(Path(__file__).parents[1] / "profiles" /
                                                                     "mixes" / "demo" / "tokenizer"))
    refused = sparknet("prepare", "--mix", str(mix), check=False)
    assert refused.returncode == 2 and "% of the first bytes" in refused.stderr and "not UTF-8" in refused.stderr
    assert 'encoding = "latin-1"' in refused.stderr
    mix = write_mix(tmp_path / "latin.toml", [{**source, "encoding": "latin-1"}],
                    tokenizer=str(Path(__file__).parents[1] / "profiles" / "mixes" / "demo" / "tokenizer"))
    pieces = list(data.SourceReader(load_mix(str(mix)).sources[0], load_mix(str(mix))).pieces())
    assert "".join(p for p, _ in pieces) == text  # read as the text it is
    assert sparknet("prepare", "--mix", str(mix)).returncode == 0
    wrong = write_mix(tmp_path / "wrong.toml", [{**source, "encoding": "klingon"}])
    said = sparknet("prepare", "--mix", str(wrong), check=False)
    assert said.returncode == 2 and "sources.notes.encoding 'klingon'" in said.stderr
