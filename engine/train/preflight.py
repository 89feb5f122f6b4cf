"""What can be checked about a run before its directory exists, so a mistake never leaves a half-made run.

`sparknet train` runs exactly these checks before it creates the run, and `--check` (which the panel's New run
screen calls) runs them alone. Each failure is one line naming the user's own file (the profile or the mix, not
the run's copy) and the fix. Torch is imported only to ask whether a CUDA GPU is there and what it has free.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

from engine import SparkNetError
from engine.config.loading import MixConfig, Profile
from engine.config.paths import nearest_existing, writable_folder
from engine.formatting import fmt_bytes


def check_run(profile: Profile, mix: MixConfig) -> str:
    """Every check before a run exists; what a ready run will use, and what it will do first, in one line."""
    notes = check_run_inputs(profile, mix)
    return "; ".join([check_memory(profile), *notes])


def check_run_inputs(profile: Profile, mix: MixConfig) -> list[str]:
    """The tokenizer loads and fits the model; every source exists and opens, or its prepared cache verifies and
    holds the source's share; hub sources are reachable or cached. Returns what the run will repair first."""
    from engine.config.paths import cache_root
    from engine.data import SourceReader, cache_damage, read_manifest, source_cache_dir
    from engine.data.hub import hub_offline
    from engine.data.prepare import check_enough, holds, required_train_tokens, source_target
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
    root, notes, tokens = cache_root(), [], profile.steps * profile.tokens_per_step
    for src in mix.sources:
        reader = SourceReader(src, mix)  # a missing path or an empty folder fails here
        share = mix.shares[src.name]
        folder = source_cache_dir(root, tok, reader)
        manifest = read_manifest(folder)
        if holds(manifest, source_target(reader.kind == "path", share, tokens)):
            damage = cache_damage(folder, manifest)
            if damage is None:
                check_enough(reader, manifest, required_train_tokens(share, tokens), share, tokens)
                continue  # tokenized and intact: the run never reads the source again
            notes.append(f"source '{src.name}': its cached tokens are damaged ({damage}); the run tokenizes it again")
        writable_folder(root, "SPARKNET_CACHE")  # the run tokenizes this source into the cache
        if reader.kind == "hf" and not hub_offline():
            reader.check_hub()  # reachable; the first documents are read when preparation starts
        else:
            reader.check()  # reads its first documents: a local file, or the hub's cached copy when offline
    check_free_space(root, "the token cache", 0)
    return notes + check_wikitext(profile)


def check_wikitext(profile: Profile) -> list[str]:
    """The run scores WikiText-2 as it trains only where the text can be had; otherwise it trains without (a
    warning event), and the ready line says so first."""
    if not profile.run.wikitext_every:
        return []
    from engine.evaluate.wikitext import wikitext_rows  # torch comes with it: only where the run asks for it

    try:
        wikitext_rows("test")
    except SparkNetError as e:
        return [f"in-training WikiText-2 evaluation off: {e}"]
    return []


def check_surroundings() -> list[str]:
    """What a run kept in the logs folder needs besides its inputs: a folder it can write, alerts that can go out
    and a telemetry interval that is one. Returns where alerts will go, as a note for the ready line."""
    from engine.hardware.telemetry import sample_interval_s
    from engine.runs.rundir import logs_dir
    from engine.train.notify import check_settings

    writable_folder(logs_dir(), "SPARKNET_LOGS")
    sample_interval_s()
    alerts = check_settings()
    return [alerts] if alerts else []


def check_free_space(folder: Path, what: str, need_b: int, floor_b: int = 64 << 20) -> None:
    """Refuse to start when the disk holding `folder` has less than need_b + floor_b bytes free."""
    probe = nearest_existing(folder)
    free = shutil.disk_usage(probe).free
    if free < need_b + floor_b:
        need = f"; {what} needs about {math.ceil(need_b / 1e6):,} MB" if need_b else ""
        raise SparkNetError(f"disk full: {free / 1e6:,.0f} MB free on the disk holding {probe}{need}, and "
                            f"{floor_b / 1e6:,.0f} MB are kept free besides; free some space, then try again")


def free_memory(profile: Profile) -> tuple[str, int, int]:
    """(the device the run will use, the bytes it has free, the floor kept free). A CPU, or a GPU that shares the
    system's memory (a DGX Spark), has what the kernel calls available, less the run's memory floor."""
    from engine.hardware.memory_guard import available_memory_b

    floor = int(profile.run.memory_floor_gb * (1 << 30))
    if profile.run.device != "cpu":
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            if not getattr(props, "is_integrated", False):
                return f"GPU {props.name}", int(torch.cuda.mem_get_info(0)[0]), 0
            return f"GPU {props.name} (memory shared with the system)", available_memory_b() or 0, floor
        if profile.run.device == "cuda":
            raise SparkNetError(f"{profile.source}: run.device = \"cuda\" but PyTorch sees no CUDA GPU on this "
                                "machine; set run.device = \"auto\" or \"cpu\" (`sparknet doctor` says why)")
    return "CPU", available_memory_b() or 0, floor


def check_memory(profile: Profile) -> str:
    """Refuse a run whose estimated peak memory is more than the device has free, naming a micro-batch that
    fits at the same tokens a step; what the run will use otherwise."""
    from engine.config.memory import estimate_memory, largest_fitting_micro_batch

    device, free_b, floor_b = free_memory(profile)
    need = estimate_memory(profile)
    usable = free_b - floor_b
    said = f"about {fmt_bytes(need.total_b)} of memory, {fmt_bytes(free_b)} free on the {device}"
    if need.total_b <= usable or free_b == 0:  # 0: the machine would not say; the memory guard still watches
        return said
    floor = f" less the {fmt_bytes(floor_b)} floor kept free (run.memory_floor_gb)" if floor_b else ""
    b = profile.batch
    fits = largest_fitting_micro_batch(profile, usable)
    fix = (f"set batch.micro_batch = {fits} and batch.grad_accum = {b.micro_batch * b.grad_accum // fits} (the "
           "same tokens a step)" if fits else "even a micro-batch of 1 does not fit: choose a smaller model")
    raise SparkNetError(f"{profile.source}: the run needs {said}{floor} (weights and optimizer "
                        f"{fmt_bytes(need.state_b)}, activations {fmt_bytes(need.activations_b)}, logits {fmt_bytes(need.logits_b)} "
                        f"at batch.micro_batch = {b.micro_batch}); {fix}")
