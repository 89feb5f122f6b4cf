"""Session-wide settings: local data from ../shared/data, a private token cache, private run logs."""

import os
import sys
from pathlib import Path

import numpy as np
import pytest

PROJECT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT.parent / "shared" / "data"
TOKENIZER_DIR = SHARED_DATA / "gpt2-tokenizer" / "hf"
WIKITEXT_DIR = SHARED_DATA / "wikitext-2-raw"
CORPORA_DIR = SHARED_DATA / "corpora"

if str(PROJECT) not in sys.path:
    sys.path.insert(0, str(PROJECT))


def pytest_configure(config):
    if not TOKENIZER_DIR.is_dir():
        raise pytest.UsageError(f"test data not found at {SHARED_DATA}: the tests need ../shared/data beside the "
                                "project")
    os.environ["SPARKNET_TOKENIZER"] = str(TOKENIZER_DIR)
    os.environ["SPARKNET_WIKITEXT"] = str(WIKITEXT_DIR)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Test files run in parallel workers, each starting tiny CPU runs: with one thread per process they
    # share the cores instead of fighting over them (a fight that made the suite half again slower).
    os.environ["OMP_NUM_THREADS"] = "1"
    cache = Path(config.rootpath) / ".pytest_cache" / "sparknet-token-cache"
    cache.mkdir(parents=True, exist_ok=True)
    os.environ["SPARKNET_CACHE"] = str(cache)


def pytest_collection_modifyitems(config, items):
    """The files of `long` tests first, then those of other `slow` ones, most such tests first: with `--dist
    loadfile` each file goes to one worker, and a long file handed out last keeps the others waiting at the end."""
    weight: dict[Path, tuple[int, int]] = {}
    for item in items:
        long, slow = weight.get(item.path, (0, 0))
        weight[item.path] = (long + bool(item.get_closest_marker("long")), slow + bool(item.get_closest_marker("slow")))
    first_seen = {path: i for i, path in enumerate(weight)}
    items.sort(key=lambda item: (*(-n for n in weight[item.path]), first_seen[item.path]))


@pytest.fixture
def logs(tmp_path, monkeypatch):
    """A private logs/ folder for runs started by the test."""
    d = tmp_path / "logs"
    d.mkdir()
    monkeypatch.setenv("SPARKNET_LOGS", str(d))
    return d


# The first documents of each stand-in corpus, about 450k, 300k and 235k tokens: a 600k-token run at 50/30/20 needs
# 300k, 180k and 120k (and 65,536 spare each); tokenizing the whole corpora (29M tokens) would take minutes.
STANDIN_CHARS = {"textbooks": 2_100_000, "web": 1_300_000, "educational": 1_000_000}


def _write_slice(name: str, dest: Path) -> None:
    import fcntl
    import gzip
    import json

    with open(dest.with_suffix(".lock"), "w") as lock:  # one writer across the test workers: a slice written
        fcntl.flock(lock, fcntl.LOCK_EX)                 # twice would get a new mtime and a new cache key
        if dest.exists():
            return
        part = dest.with_suffix(".part")
        chars = 0
        with gzip.open(CORPORA_DIR / f"{name}.jsonl.gz", "rt") as src, gzip.open(part, "wt") as out:
            for line in src:
                out.write(line)
                chars += len(json.loads(line)["text"])
                if chars >= STANDIN_CHARS[name]:
                    break
        part.replace(dest)


@pytest.fixture(scope="session")
def standin_corpora(pytestconfig) -> dict[str, Path]:
    """Slices of the three stand-in corpora, kept beside the token cache so that every worker shares them."""
    d = Path(pytestconfig.rootpath) / ".pytest_cache" / "standin-slices"
    d.mkdir(parents=True, exist_ok=True)
    # the size in the name: a slice of another size, from an earlier checkout, is another file
    paths = {name: d / f"{name}-{chars}.jsonl.gz" for name, chars in STANDIN_CHARS.items()}
    for name, path in paths.items():
        _write_slice(name, path)
    return paths


@pytest.fixture(scope="session")
def corpora_mix(tmp_path_factory, standin_corpora) -> Path:
    """A 50/30/20 mix of the three stand-in corpora, written as a mix file with absolute paths."""
    d = tmp_path_factory.mktemp("mixes")
    path = d / "standin.toml"
    path.write_text(
        'description = "stand-in corpora 50/30/20"\n'
        'tokenizer = "gpt2"\nvalidation_share = 0.005\nseed = 42\n'
        f'[[sources]]\nname = "textbooks"\nweight = 0.5\npath = "{standin_corpora["textbooks"]}"\n'
        f'[[sources]]\nname = "web"\nweight = 0.3\npath = "{standin_corpora["web"]}"\n'
        f'[[sources]]\nname = "educational"\nweight = 0.2\npath = "{standin_corpora["educational"]}"\n'
    )
    return path


# the GPT-2 tokenizer and WikiText-2 test split, for the evaluation tests
@pytest.fixture(scope="session")
def tok():
    from engine.data.tokenizer import load_tokenizer

    return load_tokenizer(str(TOKENIZER_DIR))


@pytest.fixture(scope="session")
def test_rows():
    from engine.evaluate import wikitext_rows

    rows, _ = wikitext_rows("test", WIKITEXT_DIR)
    return rows


@pytest.fixture(scope="session")
def test_ids(tok, test_rows):
    from engine.evaluate import standard_text

    # the first 40 rows are plenty for tiny models and keep every test in seconds
    return np.asarray(tok.encode(standard_text(test_rows[:40])), dtype=np.int64)
