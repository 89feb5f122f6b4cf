"""Hugging Face format out and engine models in (from checkpoints or HF folders); each model's own file holds
its weight mapping and config, engine.models.registry names them."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from engine import SparkNetError, one_line
from engine.config.loading import ModelConfig
from engine.files import follow_umask
from engine.models.registry import NETWORKS, build_model


def export_hf(model: torch.nn.Module, out_dir: Path, tokenizer=None) -> Path:
    """Write config.json + model.safetensors (+ tokenizer files) that transformers loads without custom code."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = getattr(model, "_orig_mod", model)
    cfg: ModelConfig = model.cfg
    eos_id = tokenizer.eos_id if tokenizer is not None else None  # GPT-2's is 50256; the demo tokenizer's is 0
    network = NETWORKS[cfg.arch]
    state, hf_cfg = network.to_hf_state(model), network.hf_config(cfg, eos_id)
    state = {k: v.detach().float().cpu().contiguous() for k, v in state.items()}
    save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    follow_umask(out_dir / "model.safetensors")
    (out_dir / "config.json").write_text(json.dumps(hf_cfg, indent=2) + "\n")
    (out_dir / "sparknet_model.json").write_text(json.dumps(cfg.__dict__, indent=2) + "\n")
    if tokenizer is not None:
        tokenizer.save(out_dir)
    return out_dir


def load_engine_model(model_dir: Path) -> torch.nn.Module:
    """An engine model from an exported folder (sparknet_model.json + model.safetensors)."""
    from safetensors.torch import load_file

    model_dir = Path(model_dir)
    spec = model_dir / "sparknet_model.json"
    if not spec.exists():
        raise SparkNetError(f"{model_dir}: no sparknet_model.json; not a SparkNet export")
    try:
        cfg = ModelConfig(**json.loads(spec.read_text()))
        model = build_model(cfg)
        model.load_state_dict(NETWORKS[cfg.arch].from_hf_state(load_file(str(model_dir / "model.safetensors")), cfg))
    except (OSError, SparkNetError):
        raise
    except Exception as e:  # a truncated or foreign weights file, an edited sparknet_model.json
        raise SparkNetError(f"{model_dir}: the model cannot be loaded from it ({one_line(e, 160)}); export the "
                            "model again or name another folder") from None
    return model
