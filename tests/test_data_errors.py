"""The data mix's bad inputs: each gets one line naming the source and the fix, and nothing is written; the
shipped demo mix."""

import json
import time
from pathlib import Path

import pytest
from data_helpers import PROJECT, documents_of, stream, unique_docs, write_jsonl, write_mix

from engine import SparkNetError
from engine.cli.prepare import prepare_command
from engine.config.loading import ConfigError, load_mix
from engine.data import DataError, MixLoader, prepare_mix, validation_batches
from engine.data.demo_text import generate as generate_demo_text
from engine.data.tokenizer import load_tokenizer

# ---------------------------------------------------------------- bad input: one line, nothing written


def assert_one_line_and_nothing_written(excinfo, cache: Path, *needles: str):
    msg = str(excinfo.value)
    assert "\n" not in msg and isinstance(excinfo.value, SparkNetError)
    for needle in needles:
        assert needle in msg, msg
    assert not list(cache.glob("tokens/*/*/*.bin")) and not list(cache.glob("tokens/*/*/manifest.json"))


def test_missing_path(tmp_path):
    mix = load_mix(str(write_mix(tmp_path / "m.toml", [{"name": "posts", "weight": 1, "path": "no-such-folder"}])))
    with pytest.raises(DataError) as e:
        prepare_mix(mix, 1000, cache_dir=tmp_path / "cache")
    assert_one_line_and_nothing_written(e, tmp_path / "cache", "source 'posts'", "does not exist", "fix `path`")


def test_empty_folder(tmp_path):
    (tmp_path / "posts").mkdir()
    (tmp_path / "posts" / "data.csv").write_text("not,a,text,format\n")
    mix = load_mix(str(write_mix(tmp_path / "m.toml", [{"name": "posts", "weight": 1, "path": "posts"}])))
    with pytest.raises(DataError) as e:
        prepare_mix(mix, 1000, cache_dir=tmp_path / "cache")
    assert_one_line_and_nothing_written(e, tmp_path / "cache", "source 'posts'", "has no .txt, .md")


def test_file_that_is_not_utf8_is_read_with_a_count(tmp_path):
    (tmp_path / "posts").mkdir()
    (tmp_path / "posts" / "latin1.txt").write_bytes("caf\u00e9 cr\u00e8me, good".encode("latin-1"))
    (tmp_path / "posts" / "fine.md").write_text("All UTF-8: caf\u00e9.")
    mix = load_mix(str(write_mix(tmp_path / "m.toml", [{"name": "posts", "weight": 1, "path": "posts"}],
                                 validation_share=0.0)))
    report = prepare_mix(mix, None, cache_dir=tmp_path / "cache", workers=1)
    assert report["posts"]["undecodable_bytes"] == 2 and report["posts"]["documents"] == 2
    tok = load_tokenizer("gpt2")
    docs = [tok.decode(d) for d in documents_of(stream(Path(report["posts"]["cache"]), "train"), tok.eos_id)]
    assert docs == ["All UTF-8: caf\u00e9.", "caf crme, good"]
    out = []

    class Out:
        def write(self, s):
            out.append(s)

        def flush(self):
            pass

    assert prepare_command(str(tmp_path / "m.toml"), None, cache_dir=tmp_path / "cache", out=Out()) == 0
    assert "skipped 2 bytes that are not UTF-8" in "".join(out)


def test_malformed_jsonl_line_and_missing_field(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps({"text": t}) + "\n" for t in unique_docs(5)) + "{broken\n")
    mix = load_mix(str(write_mix(tmp_path / "m.toml", [{"name": "bad", "weight": 1, "path": str(bad)}])))
    with pytest.raises(DataError) as e:
        prepare_mix(mix, None, cache_dir=tmp_path / "cache", workers=1)
    assert_one_line_and_nothing_written(e, tmp_path / "cache", "source 'bad'", "line 6 is not valid JSON")
    nofield = write_jsonl(tmp_path / "nofield.jsonl", ["x"], field="content")
    mix = load_mix(str(write_mix(tmp_path / "m.toml", [{"name": "nf", "weight": 1, "path": str(nofield)}])))
    with pytest.raises(DataError) as e:
        prepare_mix(mix, None, cache_dir=tmp_path / "cache", workers=1)
    assert_one_line_and_nothing_written(e, tmp_path / "cache", "no field 'text' (fields: content)", "text_field")


def test_unknown_dataset_id(tmp_path):
    # HF_HUB_OFFLINE=1 (tests' default): datasets answers at once instead of retrying the network
    ok = write_jsonl(tmp_path / "ok.jsonl", unique_docs(5))
    mix = load_mix(str(write_mix(tmp_path / "m.toml", [
        {"name": "ok", "weight": 1, "path": str(ok)},
        {"name": "typo", "weight": 1, "hf": "no-such-user/no-such-dataset-0"}])))
    with pytest.raises(DataError) as e:
        prepare_mix(mix, 1000, cache_dir=tmp_path / "cache", workers=1)
    assert_one_line_and_nothing_written(e, tmp_path / "cache", "source 'typo'", "no-such-user/no-such-dataset-0",
                                        "could not be loaded", "check the id")


def test_hub_source_without_network(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: no network
    mix = load_mix(str(write_mix(tmp_path / "m.toml", [{"name": "fineweb-edu", "weight": 1,
                                                       "hf": "codelion/fineweb-edu-1B"}])))
    start = time.time()
    with pytest.raises(DataError) as e:
        prepare_mix(mix, 1000, cache_dir=tmp_path / "cache")
    assert time.time() - start < 15
    assert_one_line_and_nothing_written(e, tmp_path / "cache", "source 'fineweb-edu'", "cannot reach the Hugging Face hub",
                                        "HF_HUB_OFFLINE=1", "path =")


def test_tokenizer_that_cannot_be_loaded(tmp_path):
    src = write_jsonl(tmp_path / "ok.jsonl", unique_docs(5))
    mix = load_mix(str(write_mix(tmp_path / "m.toml", [{"name": "ok", "weight": 1, "path": str(src)}],
                                 tokenizer="./no-tokenizer-here")))
    with pytest.raises(SparkNetError) as e:
        prepare_mix(mix, 1000, cache_dir=tmp_path / "cache")
    assert_one_line_and_nothing_written(e, tmp_path / "cache", "tokenizer folder", "does not exist")


@pytest.mark.parametrize("weight, needle", [
    ("0", "weight must be a number > 0"),
    ("-0.3", "weight must be a number > 0"),
    ('"lots"', "weight must be a number"),
    ("true", "weight must be a number"),
])
def test_bad_weights(tmp_path, weight, needle):
    (tmp_path / "m.toml").write_text(f'[[sources]]\nname = "a"\nweight = {weight}\npath = "."\n')
    with pytest.raises(ConfigError) as e:
        load_mix(str(tmp_path / "m.toml"))
    assert needle in str(e.value) and "sources.a.weight" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("text, needle", [
    ('validaton_share = 0.1\n[[sources]]\nname = "a"\nweight = 1\npath = "."\n',
     "unknown key 'validaton_share' (did you mean 'validation_share'?)"),
    ('[[sources]]\nname = "a"\nweight = 1\npath = "."\nrepeats = true\n',
     "unknown key 'sources.a.repeats' (did you mean 'repeat'?)"),
])
def test_unknown_keys(tmp_path, text, needle):
    (tmp_path / "m.toml").write_text(text)
    with pytest.raises(ConfigError) as e:
        load_mix(str(tmp_path / "m.toml"))
    assert needle in str(e.value) and str(tmp_path / "m.toml") in str(e.value)


def test_prepare_command_reports_errors_in_one_line(tmp_path):
    from cli_helpers import sparknet

    done = sparknet("prepare", "--mix", str(tmp_path / "missing.toml"), check=False)
    err = done.stderr.strip()
    assert done.returncode == 2  # the user's input: exit 2, as every verb
    assert err.startswith("sparknet prepare: error: ") and "file not found" in err and "\n" not in err


# ---------------------------------------------------------------- the demo mix


def test_demo_mix_prepares_offline_from_shipped_text(tmp_path, capsys):
    mix = load_mix("demo")
    for src in mix.sources:
        assert Path(src.path).resolve().is_relative_to(PROJECT / "profiles" / "mixes" / "demo")
        assert src.repeat
    assert prepare_command("demo", 300_000, cache_dir=tmp_path / "cache") == 0
    out = capsys.readouterr().out
    for name in ("stories", "towns", "worksheets"):
        assert name in out
    loader = MixLoader(mix, batch=8, context=128, seed=1337, cache_dir=tmp_path / "cache", total_tokens=300_000)
    assert loader.next_batch().shape == (8, 129)
    assert sum(b.shape[0] for b in validation_batches(mix, 16_384, batch=8, context=128,
                                                      cache_dir=tmp_path / "cache")) >= 60


def test_shipped_demo_text_and_tokenizer_are_the_generators_output(tmp_path):
    from engine.data.demo_text import DEMO_VOCAB, TOKENIZER_FILE, documents, train_demo_tokenizer
    from engine.data.tokenizer import load_tokenizer

    shipped = PROJECT / "profiles" / "mixes" / "demo"
    generated = generate_demo_text()
    on_disk = {str(p.relative_to(shipped)): p.read_text(encoding="utf-8")
               for p in shipped.rglob("*") if p.is_file() and str(p.relative_to(shipped)) != TOKENIZER_FILE}
    assert on_disk == generated
    assert 200_000 < sum(len(t) for t in generated.values()) < 1_000_000
    # the shipped tokenizer is the one trained on that text: same vocabulary and merges
    retrained = tmp_path / "retrained"
    retrained.mkdir()
    (retrained / "tokenizer.json").write_text(train_demo_tokenizer(documents(generated)))
    tok = load_tokenizer(str(shipped / "tokenizer"))
    assert tok.fingerprint == load_tokenizer(str(retrained)).fingerprint
    assert tok.n_vocab == DEMO_VOCAB and tok.eos_id == 0
    story = documents(generated)[0]
    assert tok.decode(tok.encode(story)) == story and len(tok.encode(story)) < len(story.encode()) / 3


def test_no_shipped_mix_points_outside_the_project():
    for toml in (PROJECT / "profiles" / "mixes").glob("*.toml"):
        mix = load_mix(str(toml))
        for src in mix.sources:
            if src.path:
                assert Path(src.path).resolve().is_relative_to(PROJECT), (toml, src.path)
