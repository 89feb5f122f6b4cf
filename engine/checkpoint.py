"""Checkpoints: written under a temporary name and renamed when complete; verified by checksum on load.

A checkpoint folder checkpoints/step-XXXXXXXX/ holds
  model.safetensors  the engine model's weights (engine naming)
  trainer.pt         optimizer state and RNG states (tensors and plain containers only)
  state.json         step, tokens, data-loader position, model config, tokenizer, checksums
Loading never unpickles arbitrary objects: safetensors and torch.load(weights_only=True).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from engine import SparkNetError
from engine.config import ModelConfig
from engine.model import build_model
from engine.rundir import iter_checkpoints


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
                    state: dict[str, Any], keep: int) -> Path:
    from safetensors.torch import save_file

    ck_root = Path(run_dir) / "checkpoints"
    ck_root.mkdir(parents=True, exist_ok=True)
    final = ck_root / f"step-{step:08d}"
    tmp = ck_root / f".tmp-step-{step:08d}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file(model_state(model), str(tmp / "model.safetensors"))
    trainer = {"optimizer": optimizer.state_dict(), "rng_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        trainer["rng_cuda"] = torch.cuda.get_rng_state_all()
    torch.save(trainer, tmp / "trainer.pt")
    state = dict(state, step=step, model_config=_unwrap(model).cfg.__dict__)
    state["sha256"] = {name: _sha256(tmp / name) for name in ("model.safetensors", "trainer.pt")}
    with open(tmp / "state.json", "w") as f:
        json.dump(state, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list(iter_checkpoints(run_dir))[keep:]:
        shutil.rmtree(old, ignore_errors=True)
    return final


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
                    device: torch.device) -> dict:
    from safetensors.torch import load_file

    state = verify_checkpoint(path)
    weights = load_file(str(path / "model.safetensors"), device=str(device))
    target = _unwrap(model)
    missing, unexpected = target.load_state_dict(weights, strict=False)
    # tied weights are stored once; anything else missing is an error
    if unexpected or any(not _is_tied(target, m) for m in missing):
        raise CheckpointError(f"{path.name}: weights do not match the model (missing {missing}, unexpected {unexpected})")
    if optimizer is not None:
        trainer = torch.load(path / "trainer.pt", map_location=device, weights_only=True)
        optimizer.load_state_dict(trainer["optimizer"])
        torch.set_rng_state(trainer["rng_cpu"].cpu())
        if "rng_cuda" in trainer and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([t.cpu() for t in trainer["rng_cuda"]])
    return state


def _is_tied(model: torch.nn.Module, name: str) -> bool:
    return name == "lm_head.weight" and getattr(model.cfg, "tie_embeddings", False)


def newest_good_checkpoint(run_dir: Path, on_skip=None) -> tuple[Path, dict] | None:
    """The newest checkpoint that verifies; on_skip(path, error) is told about each one passed over."""
    for path in iter_checkpoints(run_dir):
        try:
            return path, verify_checkpoint(path)
        except CheckpointError as e:
            if on_skip:
                on_skip(path, e)
    return None


def load_latest_model(run_dir: Path) -> tuple[torch.nn.Module, str]:
    """(model on CPU in eval mode, tokenizer spec) from the newest good checkpoint of a run."""
    found = newest_good_checkpoint(run_dir)
    if found is None:
        raise SparkNetError(f"{run_dir}: no complete checkpoint to load")
    path, state = found
    cfg = ModelConfig(**state["model_config"])
    model = build_model(cfg)
    load_checkpoint(path, model, None, torch.device("cpu"))
    return model.eval(), state.get("tokenizer", "gpt2")
