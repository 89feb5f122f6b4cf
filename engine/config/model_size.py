"""Model arithmetic without torch: padded vocabulary, parameter counts and FLOPs per token, from a ModelConfig.
The panel shows these before a run exists."""

from __future__ import annotations

from engine.config.architectures import ARCHITECTURES
from engine.config.schema import ModelConfig


def padded_vocab(m: ModelConfig) -> int:
    k = m.pad_vocab_multiple
    return -(-m.vocab_size // k) * k


def model_parameter_count(m: ModelConfig) -> int:
    """Parameters of the network a ModelConfig names, computed without torch (the panel shows it before a run)."""
    return ARCHITECTURES[m.arch].parameter_count(m)


def flops_per_token(m: ModelConfig) -> int:
    """Training FLOPs per token, 6N + 12 L d T, N without position embeddings (BASELINES.md)."""
    n = model_parameter_count(m) - ARCHITECTURES[m.arch].lookup_parameters(m)
    return 6 * n + 12 * m.n_layer * m.n_embd * m.context
