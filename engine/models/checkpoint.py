"""Checkpoints: written under a temporary name and renamed when complete; verified by checksum on load.

A checkpoint folder checkpoints/step-XXXXXXXX/ holds
  model.safetensors  the engine model's weights (engine naming)
  trainer.pt         optimizer state and RNG states (tensors and plain containers only)
  state.json         step, tokens, data-loader position, model config, tokenizer, checksums
Loading never unpickles arbitrary objects: safetensors and torch.load(weights_only=True).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from engine import SparkNetError
from engine.config.loading import ModelConfig
from engine.files import follow_umask
from engine.models.registry import build_model
from engine.runs.rundir import iter_checkpoints, newest_checkpoint_step


class CheckpointError(SparkNetError):
    pass


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    model = getattr(model, "module", model)  # DistributedDataParallel
    return getattr(model, "_orig_mod", model)  # torch.compile


def model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Weights without tied duplicates (safetensors refuses shared storage)."""
    state = _unwrap(model).state_dict()
    out, seen = {}, {}
    for name, t in state.items():
        key = (t.data_ptr(), t.shape)
        if key in seen:
            continue
        seen[key] = name
        out[name] = t.detach().contiguous().cpu()
    return out


def save_checkpoint(run_dir: Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    state: dict[str, Any], keep: int, on_event=None) -> Path:
    """Write checkpoints/step-N through a temporary folder, then prune to the newest `keep` verified ones.

    A full disk removes the temporary folder and raises one line naming what is intact. on_event(name,
    message) hears of checkpoints moved aside as corrupt.
    """
    ck_root = Path(run_dir) / "checkpoints"
    ck_root.mkdir(exist_ok=True)  # never the run folder itself: a deleted run stays deleted
    final = ck_root / f"step-{step:08d}"
    tmp = ck_root / f".tmp-step-{step:08d}"
    try:
        _write_checkpoint(tmp, model, optimizer, dict(state, step=step, model_config=_unwrap(model).cfg.__dict__))
    except Exception as e:
        # torch.save reports a full disk as a RuntimeError of its zip writer, so the free space decides too
        full = is_disk_full(e) or shutil.disk_usage(ck_root).free < (1 << 20)
        shutil.rmtree(tmp, ignore_errors=True)
        if full:
            raise DiskFull(disk_full_message(tmp, run_dir)) from None
        raise
    # a step saved again (a resume after a memory stop) swaps folders: the good one is renamed aside, never deleted,
    # until its replacement has its name; a crash between the two renames is undone by recover_interrupted_saves
    old = ck_root / f".old-step-{step:08d}"
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    _fsync(ck_root)
    shutil.rmtree(old, ignore_errors=True)
    prune_checkpoints(run_dir, keep, newest_known_good=final, on_event=on_event)
    return final


def recover_interrupted_saves(run_dir: Path) -> None:
    """Undo what a crash in the middle of save_checkpoint left. A temporary folder that was written whole (its
    checksums verify) becomes the step it was saving, when that step has no folder: the crash came between its
    last fsync and its rename. Else a good checkpoint renamed aside takes its name back. What is left goes."""
    ck_root = Path(run_dir) / "checkpoints"
    if not ck_root.is_dir():
        return
    for tmp in sorted(ck_root.glob(".tmp-step-*")):
        final = ck_root / tmp.name[len(".tmp-"):]
        if not final.exists() and _is_complete(tmp):
            os.replace(tmp, final)
    for old in sorted(ck_root.glob(".old-step-*")):
        final = ck_root / old.name[len(".old-"):]
        if not final.exists():
            os.replace(old, final)
    for left in [*ck_root.glob(".tmp-step-*"), *ck_root.glob(".old-step-*")]:
        shutil.rmtree(left, ignore_errors=True)
    _fsync(ck_root)


def _is_complete(folder: Path) -> bool:
    """Whether a checkpoint folder holds both files, each matching the checksum its state.json records."""
    try:
        return set(verify_checkpoint(folder).get("sha256", {})) == {"model.safetensors", "trainer.pt"}
    except CheckpointError:
        return False


def _fsync(path: Path) -> None:
    """Flush a file's data, or a folder's entries, to the disk before anything relies on them."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_checkpoint(tmp: Path, model, optimizer, state: dict) -> None:
    from safetensors.torch import save_file

    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file(model_state(model), str(tmp / "model.safetensors"))
    follow_umask(tmp / "model.safetensors")
    trainer = {"optimizer": optimizer.state_dict(), "rng_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        trainer["rng_cuda"] = torch.cuda.get_rng_state_all()
    torch.save(trainer, tmp / "trainer.pt")
    state["sha256"] = {name: _sha256(tmp / name) for name in ("model.safetensors", "trainer.pt")}
    with open(tmp / "state.json", "w") as f:
        json.dump(state, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    for name in ("model.safetensors", "trainer.pt"):
        _fsync(tmp / name)
    _fsync(tmp)


class DiskFull(SparkNetError):
    pass


def is_disk_full(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)


def disk_full_message(path: Path, run_dir: Path) -> str:
    free = shutil.disk_usage(Path(run_dir)).free
    step = newest_checkpoint_step(run_dir)
    kept = f"the checkpoint from step {step} is intact" if step is not None else "no earlier checkpoint exists"
    return (f"disk full writing {path}; {free / 1e6:,.0f} MB free; {kept}; free some space, then "
            f"`sparknet resume {Path(run_dir).name}`")


def move_aside(path: Path, reason: str) -> Path:
    """A checkpoint that fails verification goes to checkpoints/corrupt/, never deleted and never counted."""
    corrupt = path.parent / "corrupt"
    corrupt.mkdir(exist_ok=True)
    dest = corrupt / path.name
    n = 2
    while dest.exists():
        dest, n = corrupt / f"{path.name}-{n}", n + 1
    os.replace(path, dest)
    (dest / "CORRUPT.txt").write_text(reason + "\n")
    return dest


def prune_checkpoints(run_dir: Path, keep: int, newest_known_good: Path | None = None, on_event=None) -> None:
    """Keep the newest `keep` checkpoints that verify and delete older good ones; every one that fails verification
    is moved aside instead, never deleted."""
    kept = 0
    for path in list(iter_checkpoints(run_dir)):
        if path != newest_known_good:
            try:
                verify_checkpoint(path)
            except CheckpointError as e:
                dest = move_aside(path, str(e))
                if on_event:
                    on_event("warning", f"checkpoint {path.name} failed verification ({e}); moved to {dest}")
                continue
        if kept >= keep:
            shutil.rmtree(path, ignore_errors=True)
            continue
        kept += 1


def verify_checkpoint(path: Path) -> dict:
    """state.json of a complete, unmodified checkpoint; CheckpointError otherwise."""
    try:
        state = json.loads((path / "state.json").read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path.name}: state.json unreadable ({e.__class__.__name__})") from None
    for name, digest in state.get("sha256", {}).items():
        f = path / name
        if not f.exists():
            raise CheckpointError(f"{path.name}: {name} is missing")
        if _sha256(f) != digest:
            raise CheckpointError(f"{path.name}: {name} is truncated or corrupt (checksum mismatch)")
    return state


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
                    device: torch.device, verified: dict | None = None) -> dict:
    """Load a checkpoint, verifying it first unless `verified` is the state.json verify_checkpoint just returned.
    Anything wrong with its files, however they were made, is a CheckpointError."""
    from safetensors.torch import load_file

    state = verified if verified is not None else verify_checkpoint(path)
    target = _unwrap(model)
    try:
        weights = load_file(str(path / "model.safetensors"), device=str(device))
        missing, unexpected = target.load_state_dict(weights, strict=False)
    except Exception as e:  # safetensors and torch raise several types for a bad file
        raise CheckpointError(f"{path.name}: model.safetensors does not load ({_first_line(e)})") from None
    # tied weights are stored once; anything else missing is an error
    if unexpected or any(not _is_tied(target, m) for m in missing):
        raise CheckpointError(f"{path.name}: weights do not match the model (missing {missing}, "
                              f"unexpected {unexpected})")
    if optimizer is not None:
        try:
            trainer = torch.load(path / "trainer.pt", map_location=device, weights_only=True)
            optimizer.load_state_dict(trainer["optimizer"])
            torch.set_rng_state(trainer["rng_cpu"].cpu())
        except Exception as e:  # a refused pickle, a wrong structure: the checkpoint is unusable, not the run
            raise CheckpointError(f"{path.name}: trainer.pt does not load as optimizer state "
                                  f"({e.__class__.__name__})") from None
        if "rng_cuda" in trainer and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([t.cpu() for t in trainer["rng_cuda"]])
    return state


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{e.__class__.__name__}: {text[0][:200]}" if text else e.__class__.__name__


def _is_tied(model: torch.nn.Module, name: str) -> bool:
    return name == "lm_head.weight" and getattr(model.cfg, "tie_embeddings", False)


def load_newest(run_dir: Path, load, on_skip) -> tuple[Path, object] | None:
    """(path, load(path)) for the newest checkpoint that `load` accepts, newest first; on_skip(path, error) is told of
    each newer one that raised CheckpointError. None when no checkpoint loads."""
    for path in list(iter_checkpoints(run_dir)):
        try:
            return path, load(path)
        except CheckpointError as e:
            on_skip(path, e)
    return None


def load_latest_model(run_dir: Path, report=None) -> tuple[torch.nn.Module, str, int]:
    """(model on CPU in eval mode, tokenizer spec, step) from the newest good checkpoint of a run.

    report(line) is told which checkpoint was used and each newer one skipped, and why.
    """
    skipped = []

    def load(path: Path) -> tuple[torch.nn.Module, dict]:
        state = verify_checkpoint(path)
        model = build_model(ModelConfig(**state["model_config"]))
        load_checkpoint(path, model, None, torch.device("cpu"), verified=state)
        return model, state

    found = load_newest(run_dir, load, lambda path, e: skipped.append(f"warning: skipped checkpoint {path.name}: {e}"))
    if found is not None:
        path, (model, state) = found
        if report:
            for line in skipped:
                report(line)
            report(f"using checkpoint {path.name} (step {state['step']})")
        return model.eval(), state.get("tokenizer", "gpt2"), state["step"]
    raise SparkNetError(f"{run_dir}: no complete checkpoint to load" + (f" ({len(skipped)} failed verification)"
                                                                        if skipped else ""))
