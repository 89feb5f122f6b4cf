"""Model arithmetic without torch: padded vocabulary, parameter counts and FLOPs per token, from a ModelConfig.
The panel shows these before a run exists."""

from __future__ import annotations

import math

from engine.config.schema import ModelConfig


def padded_vocab(m: ModelConfig) -> int:
    k = m.pad_vocab_multiple
    return -(-m.vocab_size // k) * k


def model_parameter_count(m: ModelConfig) -> int:
    """Parameters of the GPT-2 shape, computed without torch (the panel shows it before a run)."""
    d, L, V, T = m.n_embd, m.n_layer, m.vocab_size, m.context
    if m.arch == "gpt2":
        bias = 1 if m.bias else 0
        per_layer = (
            2 * (d + d * bias)  # two LayerNorms
            + d * 3 * d + 3 * d * bias  # qkv
            + d * d + d * bias  # attention projection
            + d * 4 * d + 4 * d * bias  # mlp up
            + 4 * d * d + d * bias  # mlp down
        )
        total = V * d + T * d + L * per_layer + (d + d * bias)
        if not m.tie_embeddings:
            total += V * d
        return total
    return modern_parameter_count(m)


def modern_mlp_hidden(m: ModelConfig) -> int:
    """The SwiGLU width: model.mlp_hidden, or by default the parameter count of a 4x GELU MLP, rounded up to a
    multiple of 128."""
    return m.mlp_hidden or 128 * math.ceil(8 * m.n_embd / 3 / 128)


def modern_parameter_count(m: ModelConfig) -> int:
    d, h, hd = m.n_embd, modern_mlp_hidden(m), m.n_embd // m.n_head
    per_layer = 4 * d * d + 3 * d * h + 2 * d + 2 * hd  # attention, SwiGLU, two RMSNorms, QK-norms
    total = m.vocab_size * d + m.n_layer * per_layer + d
    return total + (0 if m.tie_embeddings else m.vocab_size * d)


def flops_per_token(m: ModelConfig) -> int:
    """Training FLOPs per token, 6N + 12 L d T, N without position embeddings (BASELINES.md)."""
    n = model_parameter_count(m)
    if m.arch == "gpt2":
        n -= m.context * m.n_embd
    return 6 * n + 12 * m.n_layer * m.n_embd * m.context
