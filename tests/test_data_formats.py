"""What a source may be and hold: local text, JSON, gzip, Parquet and dataset folders, a vocabulary too large
for uint16, and a source too small for its share, refused before anything starts unless it may repeat.
"""

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from data_helpers import documents_of, stream, unique_docs, write_jsonl, write_mix

import engine.data as data
from engine.config.loading import load_mix
from engine.data import DataError, MixLoader, prepare_mix, read_manifest
from engine.data.tokenizer import load_tokenizer


def test_small_source_refused_unless_it_may_repeat(tmp_path):
    big = write_jsonl(tmp_path / "big.jsonl", unique_docs(2000, seed=2))
    small = write_jsonl(tmp_path / "posts" / "posts.jsonl", unique_docs(12, seed=3))
    sources = [{"name": "big", "weight": 0.9, "path": str(big), "repeat": True},
               {"name": "my-posts", "weight": 0.1, "path": str(small.parent)}]
    mix = load_mix(str(write_mix(tmp_path / "m.toml", sources)))
    with pytest.raises(DataError) as e:
        prepare_mix(mix, 200_000, cache_dir=tmp_path / "cache", workers=1)
    msg = str(e.value)
    assert msg.startswith("source 'my-posts' has ") and "missing" in msg and "repeat = true" in msg
    assert "\n" not in msg

    sources[1]["repeat"] = True
    mix = load_mix(str(write_mix(tmp_path / "m.toml", sources)))
    report = prepare_mix(mix, 200_000, cache_dir=tmp_path / "cache", workers=1)
    assert report["my-posts"]["epochs_needed"] > 5 and report["my-posts"]["complete"]
    loader = MixLoader(mix, batch=8, context=64, seed=0, cache_dir=tmp_path / "cache", total_tokens=200_000)
    while sum(loader.tokens_by_source().values()) < 200_000:
        loader.next_batch()
    epochs = loader.epochs()
    assert epochs["my-posts"] > 5 and epochs["big"] < 1  # the small source repeats, the stream goes on
    share = loader.tokens_by_source()["my-posts"] / sum(loader.tokens_by_source().values())
    assert abs(share - 0.1) < 0.005


def test_loader_refuses_before_start_and_never_repeats_silently(tmp_path):
    src = write_jsonl(tmp_path / "a.jsonl", unique_docs(40, seed=4))
    other = write_jsonl(tmp_path / "b.jsonl", unique_docs(400, seed=5))
    mix = load_mix(str(write_mix(tmp_path / "m.toml", [{"name": "a", "weight": 0.5, "path": str(src)},
                                                       {"name": "b", "weight": 0.5, "path": str(other)}])))
    prepare_mix(mix, None, cache_dir=tmp_path / "cache", workers=1)
    with pytest.raises(DataError, match="source 'a' holds .* missing"):
        MixLoader(mix, batch=4, context=64, seed=0, cache_dir=tmp_path / "cache", total_tokens=10_000_000)
    loader = MixLoader(mix, batch=4, context=64, seed=0, cache_dir=tmp_path / "cache")
    with pytest.raises(DataError, match="source 'a' ran out .* may not repeat"):
        for _ in range(10_000):
            loader.next_batch()


def test_large_vocabulary_uses_uint32_shards(tmp_path):
    from tokenizers import Tokenizer as RustTokenizer
    from tokenizers import models, pre_tokenizers

    vocab = {f"w{i}": i for i in range(70_000)}
    vocab["<|endoftext|>"] = 70_000
    backend = RustTokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    (tmp_path / "tok").mkdir()
    backend.save(str(tmp_path / "tok" / "tokenizer.json"))
    rng = np.random.default_rng(0)
    texts = [" ".join(f"w{i}" for i in rng.integers(60_000, 70_000, size=50)) for _ in range(100)]
    src = write_jsonl(tmp_path / "d.jsonl", texts)
    mix = load_mix(str(write_mix(tmp_path / "m.toml", [{"name": "d", "weight": 1, "path": str(src)}],
                                 tokenizer=str(tmp_path / "tok"), validation_share=0.0)))
    report = prepare_mix(mix, None, cache_dir=tmp_path / "cache", workers=1)
    assert read_manifest(Path(report["d"]["cache"]))["dtype"] == "uint32"
    batch = MixLoader(mix, batch=4, context=32, seed=0, cache_dir=tmp_path / "cache").next_batch()
    assert batch.max() >= 65_536 and batch.max() <= 70_000


def test_local_formats_front_matter_gzip_json_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "post.md").write_text("---\ntitle: Hello\ntags: [a, b]\n---\n# Post\n\nBody of the post.\n")
    with gzip.open(folder / "notes.txt.gz", "wt") as f:
        f.write("Plain notes, gzipped.")
    (folder / "list.json").write_text(json.dumps([{"body": "first json"}, {"body": "second json"}]))
    (folder / "lines.jsonl").write_text(json.dumps({"body": "a json line"}) + "\n\n")
    pq.write_table(pa.table({"body": ["parquet row one", "parquet row two"]}), folder / "rows.parquet")
    (folder / ".hidden.txt").write_text("never read")
    (folder / "table.csv").write_text("ignored,format\n")
    mix = load_mix(str(write_mix(tmp_path / "m.toml", [{"name": "mine", "weight": 1, "path": "mine",
                                                       "text_field": "body"}], validation_share=0.0)))
    report = prepare_mix(mix, None, cache_dir=tmp_path / "cache", workers=1)
    tok = load_tokenizer("gpt2")
    docs = [tok.decode(d) for d in documents_of(stream(Path(report["mine"]["cache"]), "train"), tok.eos_id)]
    assert docs == ["a json line", "first json", "second json", "Plain notes, gzipped.",
                    "# Post\n\nBody of the post.\n", "parquet row one", "parquet row two"]


def test_local_dataset_folder_goes_through_datasets(tmp_path):
    texts = unique_docs(120, seed=9)
    folder = tmp_path / "my-dataset"
    folder.mkdir()
    with gzip.open(folder / "part-0.jsonl.gz", "wt") as f:
        f.writelines(json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(texts))
    mix = load_mix(str(write_mix(tmp_path / "m.toml", [
        {"name": "via-datasets", "weight": 0.5, "hf": "./my-dataset", "split": "train"},
        {"name": "via-path", "weight": 0.5, "path": "my-dataset"},
    ], validation_share=0.05)))
    report = prepare_mix(mix, None, cache_dir=tmp_path / "cache", workers=1)
    hf_folder, path_folder = Path(report["via-datasets"]["cache"]), Path(report["via-path"]["cache"])
    assert read_manifest(hf_folder)["source"]["kind"] == "hf" and report["via-datasets"]["complete"]
    for split in ("train", "val"):
        assert np.array_equal(stream(hf_folder, split), stream(path_folder, split))


def test_preparation_and_the_loader_refuse_at_the_same_token(tmp_path):
    src = write_jsonl(tmp_path / "docs.jsonl", unique_docs(3000, seed=11))
    mix = load_mix(str(write_mix(tmp_path / "m.toml", [{"name": "docs", "weight": 1, "path": str(src)}],
                                 validation_share=0.0)))
    have = prepare_mix(mix, None, cache_dir=tmp_path / "cache", workers=1)["docs"]["train_tokens"]
    most = have - data.WINDOW_MARGIN_TOKENS  # the longest run this source holds: one formula says so for both
    assert most > 0
    prepare_mix(mix, most, cache_dir=tmp_path / "cache", workers=1)
    MixLoader(mix, batch=4, context=64, seed=0, cache_dir=tmp_path / "cache", total_tokens=most)
    with pytest.raises(DataError, match="1 missing"):
        prepare_mix(mix, most + 1, cache_dir=tmp_path / "cache", workers=1)
    with pytest.raises(DataError, match=r"\(1 missing\)"):
        MixLoader(mix, batch=4, context=64, seed=0, cache_dir=tmp_path / "cache", total_tokens=most + 1)
