"""Hugging Face format out (GPT2LMHeadModel) and engine models in (from checkpoints or HF folders)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from engine import SparkNetError
from engine.config import ModelConfig
from engine.model import GPT, build_model
from engine.model_parts import pad_vocab_rows

# Hugging Face's GPT-2 uses Conv1D layers whose weights are stored transposed
_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def gpt2_to_hf_state(model: GPT) -> dict[str, torch.Tensor]:
    out = {}
    for name, t in model.state_dict().items():
        if name in ("wte.weight", "lm_head.weight"):
            t = t[: model.vocab_size]  # drop the internal padding rows
        if name == "lm_head.weight":
            if model.cfg.tie_embeddings:
                continue
            out[name] = t.contiguous()
            continue
        if name.endswith(_CONV1D):
            t = t.t()
        out["transformer." + name] = t.contiguous()
    return out


def hf_to_gpt2_state(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    out = {}
    for name, t in state.items():
        if name.endswith(".attn.bias") or name.endswith(".attn.masked_bias"):
            continue  # causal-mask buffers of older transformers versions
        if name.startswith("transformer."):
            name = name[len("transformer."):]
        if name.endswith(_CONV1D):
            t = t.t()
        out[name] = t.contiguous()
    pad_vocab_rows(out, ("wte.weight", "lm_head.weight"), cfg)
    if "lm_head.weight" not in out:
        out["lm_head.weight"] = out["wte.weight"]
    return out


def gpt2_hf_config(cfg: ModelConfig) -> dict:
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.context,
        "n_ctx": cfg.context,
        "n_embd": cfg.n_embd,
        "n_layer": cfg.n_layer,
        "n_head": cfg.n_head,
        "n_inner": None,
        "activation_function": "gelu_new",
        "resid_pdrop": cfg.dropout,
        "embd_pdrop": cfg.dropout,
        "attn_pdrop": cfg.dropout,
        "layer_norm_epsilon": 1e-5,
        "initializer_range": 0.02,
        "tie_word_embeddings": cfg.tie_embeddings,
        "bos_token_id": 50256,
        "eos_token_id": 50256,
        "torch_dtype": "float32",
    }


def export_hf(model: torch.nn.Module, out_dir: Path, tokenizer=None) -> Path:
    """Write config.json + model.safetensors (+ tokenizer files) that transformers loads without custom code."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = getattr(model, "_orig_mod", model)
    cfg: ModelConfig = model.cfg
    if cfg.arch == "gpt2":
        if not cfg.bias:
            raise SparkNetError("export: GPT2LMHeadModel needs biases; this model was trained with model.bias = false")
        state, hf_cfg = gpt2_to_hf_state(model), gpt2_hf_config(cfg)
    else:
        from engine.model_modern import modern_hf_config, modern_to_hf_state

        state, hf_cfg = modern_to_hf_state(model), modern_hf_config(cfg)
    state = {k: v.detach().float().cpu().contiguous() for k, v in state.items()}
    save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
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
    cfg = ModelConfig(**json.loads(spec.read_text()))
    model = build_model(cfg)
    state = load_file(str(model_dir / "model.safetensors"))
    if cfg.arch == "gpt2":
        state = hf_to_gpt2_state(state, cfg)
    else:
        from engine.model_modern import hf_to_modern_state

        state = hf_to_modern_state(state, cfg)
    model.load_state_dict(state)
    return model
