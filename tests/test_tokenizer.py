"""Tokenizer resolution: local folders, SPARKNET_TOKENIZER, the Hugging Face cache, export, clear failures."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine import SparkNetError
from engine.data.tokenizer import Tokenizer, load_tokenizer

PROJECT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT.parent / "shared" / "data"
HF_DIR = SHARED_DATA / "gpt2-tokenizer" / "hf"
WIKI_VALID = SHARED_DATA / "wikitext-2-raw" / "wiki.valid.raw"


@pytest.fixture(scope="module")
def gpt2() -> Tokenizer:
    return load_tokenizer(str(HF_DIR))


def test_local_folder_matches_published_ids(gpt2):
    assert gpt2.encode("Hello world") == [15496, 995]
    assert gpt2.eos_id == 50256
    assert gpt2.n_vocab == 50257
    assert gpt2.token_dtype == "uint16"
    text = WIKI_VALID.read_text(encoding="utf-8")[:50_000]
    ids = gpt2.encode(text)
    assert gpt2.decode(ids) == text
    assert gpt2.encode_batch(["Hello world", "", text[:500]]) == [[15496, 995], [], gpt2.encode(text[:500])]


def test_endoftext_inside_text_is_ordinary_text(gpt2):
    ids = gpt2.encode("a <|endoftext|> b")
    assert gpt2.eos_id not in ids
    assert gpt2.decode(ids) == "a <|endoftext|> b"
    assert all(gpt2.eos_id not in doc for doc in gpt2.encode_batch(["<|endoftext|>", "x<|endoftext|>y"]))


def test_gpt2_name_resolves_through_sparknet_tokenizer(monkeypatch, gpt2):
    monkeypatch.setenv("SPARKNET_TOKENIZER", str(HF_DIR))
    tok = load_tokenizer("gpt2")
    assert tok.name == "gpt2"
    assert tok.fingerprint == gpt2.fingerprint
    assert tok.encode("Hello world") == [15496, 995]


def test_vocab_and_merges_folder_gives_the_same_tokenizer(tmp_path, gpt2):
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(HF_DIR / name, tmp_path / name)
    tok = load_tokenizer(str(tmp_path))
    text = WIKI_VALID.read_text(encoding="utf-8")[:20_000]
    assert tok.encode(text) == gpt2.encode(text)
    assert tok.eos_id == 50256
    assert tok.fingerprint == gpt2.fingerprint


def test_fingerprint_differs_for_another_vocabulary(tmp_path, gpt2):
    from tokenizers import Tokenizer as RustTokenizer
    from tokenizers import models, pre_tokenizers

    vocab = {f"w{i}": i for i in range(70_000)}
    vocab["<|endoftext|>"] = 70_000
    backend = RustTokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.save(str(tmp_path / "tokenizer.json"))
    tok = load_tokenizer(str(tmp_path))
    assert tok.fingerprint != gpt2.fingerprint
    assert tok.n_vocab == 70_001
    assert tok.token_dtype == "uint32"  # ids above 65535 do not fit uint16
    assert tok.encode("w69999 w1") == [69_999, 1]


@pytest.mark.slow
def test_save_writes_a_folder_transformers_loads(tmp_path, gpt2):
    from transformers import AutoTokenizer

    gpt2.save(tmp_path / "model")
    hf = AutoTokenizer.from_pretrained(str(tmp_path / "model"))
    text = WIKI_VALID.read_text(encoding="utf-8")[:5_000]
    assert hf("Hello world")["input_ids"] == [15496, 995]
    assert hf.eos_token_id == 50256
    assert hf(text)["input_ids"] == gpt2.encode(text)
    assert load_tokenizer(str(tmp_path / "model")).fingerprint == gpt2.fingerprint


def test_missing_or_unreadable_folder_is_one_clear_line(tmp_path):
    with pytest.raises(SparkNetError) as e:
        load_tokenizer(str(tmp_path / "nope"))
    assert "does not exist" in str(e.value) and "\n" not in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SparkNetError, match="neither tokenizer.json nor vocab.json"):
        load_tokenizer(str(tmp_path / "empty"))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "tokenizer.json").write_text("{not json")
    with pytest.raises(SparkNetError, match="cannot read its files") as e:
        load_tokenizer(str(tmp_path / "broken"))
    assert "\n" not in str(e.value)


_FALLBACK_SCRIPT = """
import json, sys
from engine import SparkNetError
from engine.data.tokenizer import load_tokenizer
try:
    tok = load_tokenizer("gpt2")
    print(json.dumps({"origin": tok.origin, "ids": tok.encode("Hello world"), "eos": tok.eos_id,
                      "fingerprint": tok.fingerprint, "text": tok.encode(sys.argv[1])}))
except SparkNetError as e:
    print(json.dumps({"error": str(e)}))
"""


def _run_fallback(env_updates: dict, text: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "SPARKNET_TOKENIZER"}
    env.update(env_updates)
    env["PYTHONPATH"] = str(PROJECT)
    out = subprocess.run([sys.executable, "-c", _FALLBACK_SCRIPT, text], env=env, capture_output=True,
                         text=True, timeout=180, cwd=PROJECT)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _hf_cache_with_gpt2(hf_home: Path) -> None:
    """The layout the Hugging Face hub client leaves after downloading gpt2's tokenizer files."""
    repo = hf_home / "hub" / "models--gpt2"
    commit = "0" * 40
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name in ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json"):
        if (HF_DIR / name).is_file():
            shutil.copy(HF_DIR / name, snapshot / name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)


@pytest.mark.slow
def test_gpt2_resolves_from_the_hugging_face_cache_offline_then_fails_clearly(tmp_path, gpt2):
    # A fresh process with no SPARKNET_TOKENIZER and no network: the hub client's own cache serves the files.
    _hf_cache_with_gpt2(tmp_path / "hf-home")
    text = WIKI_VALID.read_text(encoding="utf-8")[:3_000]
    got = _run_fallback({"HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_OFFLINE": "1"}, text)
    assert got["origin"] == "hub:gpt2"
    assert got["ids"] == [15496, 995] and got["eos"] == 50256
    assert got["text"] == gpt2.encode(text)
    assert got["fingerprint"] == gpt2.fingerprint  # shares the token cache with a local folder of the same files

    failed = _run_fallback({"HF_HOME": str(tmp_path / "empty-home"), "HF_HUB_OFFLINE": "1"}, "x")
    assert failed["error"].startswith("tokenizer 'gpt2' could not be loaded (no network and no cached copy)")
    assert "SPARKNET_TOKENIZER=DIR" in failed["error"] and "\n" not in failed["error"]
