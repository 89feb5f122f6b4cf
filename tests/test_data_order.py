"""A run's tokens, and its held-out windows, depend on its profile, mix and seed alone, never on what earlier
preparations left in the cache; and a run samples the whole of a local source, not its first documents."""

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from data_helpers import unique_docs, write_jsonl, write_mix

from engine.config.loading import load_mix
from engine.data import (
    MixLoader,
    prepare_mix,
    read_manifest,
    target_train_tokens,
    validation_batches,
    validation_lengths,
)

RUN_TOKENS = 20_000  # far below each source: a run's preparation needs only part of it
CONTEXT = 64


def first_batches(mix, cache: Path, n: int = 30) -> np.ndarray:
    loader = MixLoader(mix, batch=8, context=CONTEXT, seed=1337, cache_dir=cache, total_tokens=RUN_TOKENS)
    return np.stack([loader.next_batch() for _ in range(n)])


def test_a_run_samples_a_local_source_whole_whatever_was_prepared_before(tmp_path):
    texts = [f"Topic {i // 200}. " + t for i, t in enumerate(unique_docs(1_000, seed=3))]  # in topic order
    src = write_jsonl(tmp_path / "sorted.jsonl", texts)
    mix = load_mix(str(write_mix(tmp_path / "m.toml", [{"name": "sorted", "weight": 1, "path": str(src)}],
                                 validation_share=0.0)))
    report = prepare_mix(mix, RUN_TOKENS, cache_dir=tmp_path / "run-only", workers=1)
    assert report["sorted"]["complete"] and report["sorted"]["train_tokens"] > 5 * RUN_TOKENS
    prepare_mix(mix, None, cache_dir=tmp_path / "whole-first", workers=1)  # `sparknet prepare`, then the run
    prepare_mix(mix, RUN_TOKENS, cache_dir=tmp_path / "whole-first", workers=1)
    batches = first_batches(mix, tmp_path / "run-only")
    loader = MixLoader(mix, batch=8, context=CONTEXT, seed=1337, cache_dir=tmp_path / "run-only",
                       total_tokens=RUN_TOKENS)
    assert loader.describe(RUN_TOKENS).startswith(f"sorted {report['sorted']['train_tokens']:,} tokens (whole), 0.")
    assert np.array_equal(batches, first_batches(mix, tmp_path / "whole-first"))
    # the windows are spread over the whole file: the run's 20,000 tokens reach its last topic
    from engine.data.tokenizer import load_tokenizer

    seen = load_tokenizer("gpt2").decode(batches.reshape(-1).tolist())
    assert "Topic 4." in seen and "Topic 0." in seen


def hub_mix(tmp_path: Path, validation_share: float):
    """A mix of one source read through the hub's loader (a local dataset folder), as a streamed dataset is."""
    folder = tmp_path / "my-dataset"
    folder.mkdir()
    with gzip.open(folder / "part-0.jsonl.gz", "wt") as f:
        f.writelines(json.dumps({"text": t}) + "\n" for t in unique_docs(6_000, seed=4))
    return load_mix(str(write_mix(tmp_path / "m.toml", [{"name": "hub", "weight": 1, "hf": "./my-dataset",
                                                         "split": "train"}], validation_share=validation_share)))


@pytest.mark.slow
def test_a_hub_source_gives_a_run_its_own_share_whatever_more_the_cache_holds(tmp_path):
    mix = hub_mix(tmp_path, validation_share=0.0)
    small = prepare_mix(mix, RUN_TOKENS, cache_dir=tmp_path / "run-only", workers=1)["hub"]
    assert not small["complete"]
    prepare_mix(mix, 20 * RUN_TOKENS, cache_dir=tmp_path / "bigger-first", workers=1)  # an earlier, longer run
    bigger = prepare_mix(mix, RUN_TOKENS, cache_dir=tmp_path / "bigger-first", workers=1)["hub"]
    assert bigger["train_tokens"] > 2 * small["train_tokens"]
    assert np.array_equal(first_batches(mix, tmp_path / "run-only"), first_batches(mix, tmp_path / "bigger-first"))
    quota = target_train_tokens(1.0, RUN_TOKENS)
    loader = MixLoader(mix, batch=8, context=CONTEXT, seed=1337, cache_dir=tmp_path / "bigger-first",
                       total_tokens=RUN_TOKENS)
    assert loader.lengths == [quota] and read_manifest(Path(bigger["cache"]))["tokens"]["train"] > quota
    # the run's events say it: its part of the source, and how many passes the run makes over that part
    passes = RUN_TOKENS / ((quota - CONTEXT) // CONTEXT * CONTEXT)
    assert loader.describe(RUN_TOKENS) == f"hub {quota:,} tokens (its first ones), {passes:.3g} passes"


@pytest.mark.slow
def test_a_hub_sources_validation_windows_stay_when_its_cache_grows(tmp_path):
    """A run's held-out loss is measured on the same windows before and after another run extends the cache
    (a resumed run's curve stays on one set), and a smaller cache gives the first of a larger one's windows."""
    mix = hub_mix(tmp_path, validation_share=0.05)
    cache = tmp_path / "cache"

    def windows(tokens: int) -> np.ndarray:
        return np.concatenate(list(validation_batches(mix, tokens, batch=8, context=CONTEXT, cache_dir=cache)))

    prepare_mix(mix, RUN_TOKENS, cache_dir=cache, workers=1)
    held_out = windows(8 * CONTEXT)
    few = windows(256 * CONTEXT)  # more than this cache's validation split holds
    assert len(held_out) == 8 and 8 < len(few) < 256
    sizes = validation_lengths(mix, cache_dir=cache)
    prepare_mix(mix, 20 * RUN_TOKENS, cache_dir=cache, workers=1)  # a longer run on the same source
    assert np.array_equal(windows(8 * CONTEXT), held_out)
    more = windows(256 * CONTEXT)
    assert len(more) == 256 and np.array_equal(more[:len(few)], few)
    # viewed at its earlier size (as a run that started then does), the split gives the earlier windows
    pinned = np.concatenate(list(validation_batches(mix, 256 * CONTEXT, batch=8, context=CONTEXT, cache_dir=cache,
                                                    lengths=sizes)))
    assert np.array_equal(pinned, few)


@pytest.mark.long
@pytest.mark.slow
def test_a_resumed_run_keeps_its_held_out_windows_after_another_run_grows_the_cache(tmp_path, monkeypatch):
    """The run's checkpoint keeps the sizes of the validation splits it started with: resumed after a longer
    run extended the cache, it measures the same windows (the cache now holds more of them)."""
    from engine.config.loading import load_profile
    from engine.data import validation_lengths
    from engine.runs.rundir import create_run
    from engine.train.trainer import Trainer

    monkeypatch.setenv("SPARKNET_CACHE", str(tmp_path / "cache"))
    mix = hub_mix(tmp_path, validation_share=0.05)
    # the mix names its folder relative to itself; the run's copy of the mix lives elsewhere
    assert mix.sources[0].hf == str(tmp_path.resolve() / "my-dataset")
    overrides = ["model.vocab_size=50257", "run.tokens=4096", "run.eval_tokens=32768", "run.wikitext_every=0",
                 "run.final_eval=false"]
    run_dir = create_run(load_profile("tiny-cpu", overrides), mix, overrides, tmp_path / "run").run_dir
    trainer = Trainer(run_dir, resume=False)
    trainer.setup()
    assert trainer.run() == 0
    started_with, loss = trainer.validator.lengths, trainer.validator.loss(trainer.raw_model)
    prepare_mix(mix, 20 * RUN_TOKENS, workers=1)  # a longer run on the same source
    assert validation_lengths(mix)["hub"] > started_with["hub"]
    resumed = Trainer(run_dir, resume=True)
    resumed.setup()
    assert resumed.validator.lengths == started_with
    assert resumed.validator.loss(resumed.raw_model) == loss

    def window_count(lengths):
        return sum(len(b) for b in validation_batches(mix, 32768, batch=8, context=128, lengths=lengths))

    assert window_count(started_with) < window_count(None)  # unpinned, the grown split would give more
