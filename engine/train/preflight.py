"""What can be checked about a run before its directory exists, so a mistake never leaves a half-made run.

Each failure is one line naming the user's own file (the profile or the mix, not the run's copy) and the
fix. No torch here: `sparknet train --check`, which the panel's New run screen calls, runs only this.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

from engine import SparkNetError
from engine.config.loading import MixConfig, Profile


def check_run_inputs(profile: Profile, mix: MixConfig) -> None:
    """The tokenizer loads and fits the model, every source exists and opens, hub sources are reachable."""
    from engine.config.paths import cache_root
    from engine.data import SourceReader, read_manifest, source_cache_dir
    from engine.data.prepare import holds, source_target
    from engine.data.tokenizer import load_tokenizer

    where = mix.source or f"mix {mix.name}"
    try:
        tok = load_tokenizer(mix.tokenizer)
    except SparkNetError as e:
        raise SparkNetError(f"{where}: tokenizer '{mix.tokenizer}' does not load: {e}") from None
    if profile.model.vocab_size < tok.n_vocab:
        raise SparkNetError(f"{profile.source}: model.vocab_size ({profile.model.vocab_size:,}) is smaller than "
                            f"the vocabulary of the tokenizer of {where} ({tok.n_vocab:,} tokens); set "
                            f"model.vocab_size = {tok.n_vocab}")
    root = cache_root()
    shares = mix.shares
    for src in mix.sources:
        reader = SourceReader(src, mix)  # a missing path or an empty folder fails here
        manifest = read_manifest(source_cache_dir(root, tok, reader))
        need = source_target(reader.kind == "path", shares[src.name], profile.steps * profile.tokens_per_step)
        if holds(manifest, need):
            continue  # already tokenized: the run never reads it again
        if reader.kind == "hf":
            reader.check_hub()
        else:
            reader.check()  # opens the first file and reads its first document
    check_free_space(root, "the token cache", 0)


def check_free_space(folder: Path, what: str, need_b: int, floor_b: int = 64 << 20) -> None:
    """Refuse to start when the disk holding `folder` has less than need_b + floor_b bytes free."""
    probe = Path(folder)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < need_b + floor_b:
        need = f"; {what} needs about {math.ceil(need_b / 1e6):,} MB" if need_b else ""
        raise SparkNetError(f"disk full: {free / 1e6:,.0f} MB free on the disk holding {probe}{need}; "
                            "free some space, then try again")
