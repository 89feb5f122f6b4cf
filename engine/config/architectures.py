"""The architectures a profile can name, with what is known of each before torch loads: its parameter count, the
parameters a token's FLOPs leave out, and the fast pieces of its own it can use. The networks themselves are
registered under the same names in engine.models.registry."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from engine.config.schema import ModelConfig


def gpt2_parameter_count(m: ModelConfig) -> int:
    d, L, V, T = m.n_embd, m.n_layer, m.vocab_size, m.context
    bias = 1 if m.bias else 0
    per_layer = (
        2 * (d + d * bias)  # two LayerNorms
        + d * 3 * d + 3 * d * bias  # qkv
        + d * d + d * bias  # attention projection
        + d * 4 * d + 4 * d * bias  # mlp up
        + 4 * d * d + d * bias  # mlp down
    )
    total = V * d + T * d + L * per_layer + (d + d * bias)
    return total + (0 if m.tie_embeddings else V * d)


def modern_mlp_hidden(m: ModelConfig) -> int:
    """The SwiGLU width: model.mlp_hidden, or by default the parameter count of a 4x GELU MLP, rounded up to a
    multiple of 128."""
    return m.mlp_hidden or 128 * math.ceil(8 * m.n_embd / 3 / 128)


def modern_parameter_count(m: ModelConfig) -> int:
    d, h, hd = m.n_embd, modern_mlp_hidden(m), m.n_embd // m.n_head
    per_layer = 4 * d * d + 3 * d * h + 2 * d + 2 * hd  # attention, SwiGLU, two RMSNorms, QK-norms
    total = m.vocab_size * d + m.n_layer * per_layer + d
    return total + (0 if m.tie_embeddings else m.vocab_size * d)


@dataclass(frozen=True)
class Architecture:
    name: str
    description: str
    parameter_count: Callable[[ModelConfig], int]
    # parameters that cost no arithmetic per token (learned position embeddings are a lookup)
    lookup_parameters: Callable[[ModelConfig], int]
    # the fast pieces that exist for this architecture alone, beside the ones every model uses
    own_kernels: frozenset[str]


ARCHITECTURES = {
    "gpt2": Architecture("gpt2", "GPT-2: learned positions, LayerNorm, GELU MLP (GPT2LMHeadModel)",
                         gpt2_parameter_count, lambda m: m.context * m.n_embd, frozenset({"fused_gelu"})),
    "modern": Architecture("modern", "rotary positions, RMSNorm, QK-norm, SwiGLU MLP (Qwen3ForCausalLM)",
                           modern_parameter_count, lambda m: 0, frozenset({"fused_qk_rope"})),
}
