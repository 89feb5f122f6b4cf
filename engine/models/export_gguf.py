"""GGUF out, for llama.cpp and Ollama: the Hugging Face export's weights under llama.cpp's tensor names, with the
tokenizer inside, written through the `gguf` package llama.cpp publishes.

GPT-2 (`gpt2`) and the modern model (`qwen3`) are both architectures llama.cpp
runs. The names come from gguf's own TensorNameMap, as llama.cpp's converter
takes them; GPT-2's Conv1D matrices are stored [in, out] by Hugging Face and
transposed here to the [out, in] llama.cpp reads.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from engine import SparkNetError

GGUF_TYPES = ("f16", "bf16", "q8_0")
ARCHES = {"gpt2": "GPT2", "qwen3": "QWEN3"}
GPT2_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def _arch(config: dict):
    import gguf

    name = ARCHES.get(config.get("model_type"))
    if name is None:
        raise SparkNetError(f"GGUF export: model type {config.get('model_type')!r} is not one llama.cpp runs here; "
                            f"use {' or '.join(ARCHES)}")
    return getattr(gguf.MODEL_ARCH, name)


def _write_hparams(writer, config: dict) -> None:
    if config["model_type"] == "gpt2":
        writer.add_context_length(config["n_positions"])
        writer.add_embedding_length(config["n_embd"])
        writer.add_block_count(config["n_layer"])
        writer.add_feed_forward_length(4 * config["n_embd"])
        writer.add_head_count(config["n_head"])
        writer.add_layer_norm_eps(config["layer_norm_epsilon"])
    else:
        writer.add_context_length(config["max_position_embeddings"])
        writer.add_embedding_length(config["hidden_size"])
        writer.add_block_count(config["num_hidden_layers"])
        writer.add_feed_forward_length(config["intermediate_size"])
        writer.add_head_count(config["num_attention_heads"])
        writer.add_head_count_kv(config["num_key_value_heads"])
        writer.add_key_length(config["head_dim"])
        writer.add_value_length(config["head_dim"])
        writer.add_rope_freq_base(config["rope_theta"])
        writer.add_layer_norm_rms_eps(config["rms_norm_eps"])


def _write_tokenizer(writer, tokenizer) -> None:
    import gguf

    data = json.loads(tokenizer.to_serialized()["json"])
    vocab = tokenizer._backend.get_vocab(with_added_tokens=True)
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    if [vocab[t] for t in tokens] != list(range(len(tokens))):
        raise SparkNetError("GGUF export: the tokenizer's ids are not contiguous from 0")
    specials = {a["content"] for a in data.get("added_tokens", []) if a.get("special")} | {tokenizer.eos_token}
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"].get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL if t in specials else gguf.TokenType.NORMAL for t in tokens])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tokenizer.eos_id)
    writer.add_eos_token_id(tokenizer.eos_id)
    writer.add_add_bos_token(False)


def _stored(name: str, tensor: torch.Tensor, gguf_type: str):
    """The array written for one tensor and its GGML type: vectors stay f32, matrices take the file's type."""
    import gguf

    data = tensor.float().numpy()
    if data.ndim < 2:
        return data.astype(np.float32), gguf.GGMLQuantizationType.F32
    if gguf_type == "f16":
        return data.astype(np.float16), gguf.GGMLQuantizationType.F16
    qtype = gguf.GGMLQuantizationType.BF16 if gguf_type == "bf16" else gguf.GGMLQuantizationType.Q8_0
    return gguf.quants.quantize(data, qtype), qtype


def export_gguf(hf_dir: Path, out_file: Path, tokenizer, gguf_type: str = "f16") -> Path:
    """hf_dir: a SparkNet Hugging Face export (config.json + model.safetensors); writes out_file atomically."""
    import gguf
    from safetensors.torch import load_file

    if gguf_type not in GGUF_TYPES:
        raise SparkNetError(f"--gguf-type {gguf_type}: use {', '.join(GGUF_TYPES)}")
    config = json.loads((Path(hf_dir) / "config.json").read_text())
    arch = _arch(config)
    state = load_file(str(Path(hf_dir) / "model.safetensors"))
    names = gguf.TensorNameMap(arch, config.get("n_layer") or config["num_hidden_layers"])
    if config["model_type"] == "gpt2" or config.get("tie_word_embeddings"):
        # llama.cpp reads the output layer from a tensor of its own
        state.setdefault("lm_head.weight", state.get("transformer.wte.weight", state.get("model.embed_tokens.weight")))
    out_file = Path(out_file)
    tmp = out_file.with_name(out_file.name + ".tmp")
    writer = gguf.GGUFWriter(str(tmp), gguf.MODEL_ARCH_NAMES[arch])
    writer.add_name(out_file.stem)
    writer.add_file_type({"f16": gguf.LlamaFileType.MOSTLY_F16, "bf16": gguf.LlamaFileType.MOSTLY_BF16,
                          "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[gguf_type])
    _write_hparams(writer, config)
    _write_tokenizer(writer, tokenizer)
    for name, tensor in state.items():
        if name.endswith((".attn.bias", ".attn.masked_bias")):
            continue  # GPT-2's causal-mask buffers, not weights
        new = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise SparkNetError(f"GGUF export: no llama.cpp name for tensor {name}")
        if config["model_type"] == "gpt2" and name.endswith(GPT2_CONV1D):
            tensor = tensor.t().contiguous()
        data, qtype = _stored(new, tensor, gguf_type)
        writer.add_tensor(new, data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(out_file)
    return out_file
