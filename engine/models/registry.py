"""The networks, by the architecture names of engine.config.architectures: how each is built and how its weights
and config map to and from its Hugging Face class. Adding an architecture: its model file, one entry here and one
there (its torch-free counts), and its tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

from engine.config.schema import ModelConfig
from engine.kernels.choice import REFERENCE, KernelChoice
from engine.models import gpt2, modern

StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Network:
    build: Callable[[ModelConfig, KernelChoice], nn.Module]
    to_hf_state: Callable[[nn.Module], StateDict]
    from_hf_state: Callable[[StateDict, ModelConfig], StateDict]
    hf_config: Callable[[ModelConfig, int | None], dict]


NETWORKS = {
    "gpt2": Network(gpt2.GPT, gpt2.gpt2_to_hf_state, gpt2.hf_to_gpt2_state, gpt2.gpt2_hf_config),
    "modern": Network(modern.ModernGPT, modern.modern_to_hf_state, modern.hf_to_modern_state, modern.modern_hf_config),
}


def build_model(cfg: ModelConfig, kernels: KernelChoice = REFERENCE) -> nn.Module:
    """The network a ModelConfig names, running the fast paths `kernels` chose; the reference path by default."""
    return NETWORKS[cfg.arch].build(cfg, kernels)
