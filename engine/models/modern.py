"""A modern small GPT in one readable file, laid out as Hugging Face's Qwen3 so it exports without custom code.

Differences from GPT-2 (engine/models/gpt2.py): rotary position embeddings instead of
learned ones, RMSNorm instead of LayerNorm, RMSNorm on queries and keys per head
(QK-norm), a SwiGLU MLP, and no biases anywhere. The network is trained with
Muon on its hidden matrices (engine/train/optim.py). With model.embed_norm the token
embedding is RMS-normalised (no gain) before the first block; since that depends
on the token alone, the export's input embedding is the normalised table and its
output head the raw one (an untied Qwen3). Where the kernels choose it, QK-norm
and the rotary embedding run as one op (engine/kernels/qk_rope.py), the same function.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.config.architectures import modern_mlp_hidden as mlp_hidden
from engine.config.loading import ModelConfig, padded_vocab
from engine.kernels.choice import REFERENCE, KernelChoice
from engine.kernels.qk_rope import apply_rotary, qk_norm_rope
from engine.models.parts import check_length, num_parameters, output, pad_vocab_rows

ROPE_THETA = 10000.0
NORM_EPS = 1e-6


def rotary_tables(context: int, head_dim: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / (ROPE_THETA ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim))
    t = torch.arange(context, dtype=torch.float32, device=device)
    freqs = torch.outer(t, inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)  # the "rotate half" layout of Hugging Face's Llama/Qwen
    return emb.cos(), emb.sin()


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, fused_qk_rope: bool = False):
        super().__init__()
        self.fused_qk_rope = fused_qk_rope
        self.n_head = cfg.n_head
        self.head_dim = cfg.n_embd // cfg.n_head
        d = cfg.n_embd
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.o_proj = nn.Linear(d, d, bias=False)
        self.q_norm = nn.RMSNorm(self.head_dim, eps=NORM_EPS)
        self.k_norm = nn.RMSNorm(self.head_dim, eps=NORM_EPS)
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        shape = (B, T, self.n_head, self.head_dim)
        q, k = self.q_proj(x).view(shape), self.k_proj(x).view(shape)
        if self.fused_qk_rope:
            q = qk_norm_rope(q, self.q_norm.weight, cos, sin, NORM_EPS).transpose(1, 2)
            k = qk_norm_rope(k, self.k_norm.weight, cos, sin, NORM_EPS).transpose(1, 2)
        else:
            q = apply_rotary(self.q_norm(q).transpose(1, 2), cos, sin)
            k = apply_rotary(self.k_norm(k).transpose(1, 2), cos, sin)
        v = self.v_proj(x).view(shape).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, C))


class SwiGLU(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        h = mlp_hidden(cfg)
        self.gate_proj = nn.Linear(cfg.n_embd, h, bias=False)
        self.up_proj = nn.Linear(cfg.n_embd, h, bias=False)
        self.down_proj = nn.Linear(h, cfg.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class ModernBlock(nn.Module):
    def __init__(self, cfg: ModelConfig, fused_qk_rope: bool = False):
        super().__init__()
        self.input_layernorm = nn.RMSNorm(cfg.n_embd, eps=NORM_EPS)
        self.self_attn = Attention(cfg, fused_qk_rope)
        self.post_attention_layernorm = nn.RMSNorm(cfg.n_embd, eps=NORM_EPS)
        self.mlp = SwiGLU(cfg)

    def forward(self, x, cos, sin):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class ModernGPT(nn.Module):
    def __init__(self, cfg: ModelConfig, kernels: KernelChoice = REFERENCE):
        super().__init__()
        self.cfg = cfg
        self.kernels = kernels  # its MLP is SwiGLU: the fused GELU does not apply
        self.fused_loss, self.fp8_head = kernels.fused_loss, kernels.fp8_head
        self.residual_dtype = torch.bfloat16 if kernels.bf16_residual else None
        self.vocab_size = cfg.vocab_size
        self.padded_vocab = padded_vocab(cfg)
        self.embed_tokens = nn.Embedding(self.padded_vocab, cfg.n_embd)
        self.layers = nn.ModuleList(ModernBlock(cfg, kernels.fused_qk_rope) for _ in range(cfg.n_layer))
        self.norm = nn.RMSNorm(cfg.n_embd, eps=NORM_EPS)
        self.lm_head = nn.Linear(cfg.n_embd, self.padded_vocab, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        cos, sin = rotary_tables(cfg.context, cfg.n_embd // cfg.n_head)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02
                if name.endswith(("o_proj.weight", "down_proj.weight")):
                    std = 0.0 if cfg.zero_init_proj else 0.02 / math.sqrt(2 * cfg.n_layer)
                nn.init.normal_(p, mean=0.0, std=std)

    def num_parameters(self) -> int:
        return num_parameters(self)

    def hidden(self, idx: torch.Tensor) -> torch.Tensor:
        T = check_length(idx, self.cfg.context)
        x = self.embed_tokens(idx)
        if self.cfg.embed_norm:
            x = F.rms_norm(x, (x.size(-1),), eps=NORM_EPS)
        if self.residual_dtype is not None:
            x = x.to(self.residual_dtype)  # every layer's output then adds in this type too
        cos, sin = self.rope_cos[:T].to(x.dtype), self.rope_sin[:T].to(x.dtype)
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.norm(x)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        return output(self, self.hidden(idx), targets)

    def matrix_parameters(self) -> list[nn.Parameter]:
        """Hidden 2-D weights (the ones Muon orthogonalises); embeddings and norms are left to AdamW."""
        return [p for layer in self.layers for p in layer.parameters() if p.dim() == 2]

    def optimizer_groups(self, weight_decay: float) -> list[dict]:
        matrices = {id(p) for p in self.matrix_parameters()}
        decay = [p for p in self.parameters() if p.dim() >= 2 and id(p) not in matrices]
        no_decay = [p for p in self.parameters() if p.dim() < 2]
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def modern_hf_config(cfg: ModelConfig, eos_id: int | None) -> dict:
    return {
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.n_embd,
        "intermediate_size": mlp_hidden(cfg),
        "num_hidden_layers": cfg.n_layer,
        "num_attention_heads": cfg.n_head,
        "num_key_value_heads": cfg.n_head,
        "head_dim": cfg.n_embd // cfg.n_head,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.context,
        "rms_norm_eps": NORM_EPS,
        "rope_theta": ROPE_THETA,
        "rope_parameters": {"rope_type": "default", "rope_theta": ROPE_THETA},
        "attention_bias": False,
        "attention_dropout": cfg.dropout,
        # a normalised input table and the raw output head are two matrices
        "tie_word_embeddings": cfg.tie_embeddings and not cfg.embed_norm,
        "use_sliding_window": False,
        "bos_token_id": eos_id,
        "eos_token_id": eos_id,
        "torch_dtype": "float32",
    }


def modern_to_hf_state(model: ModernGPT) -> dict[str, torch.Tensor]:
    out = {}
    cfg = model.cfg
    for name, t in model.state_dict().items():
        if name in ("embed_tokens.weight", "lm_head.weight"):
            t = t[: model.vocab_size]
        if name == "lm_head.weight":
            if not cfg.tie_embeddings or cfg.embed_norm:
                out[name] = t
        elif name == "embed_tokens.weight" and cfg.embed_norm:
            out["model." + name] = F.rms_norm(t.float(), (t.size(-1),), eps=NORM_EPS)
        else:
            out["model." + name] = t
    return out


def hf_to_modern_state(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    out = {(k[len("model."):] if k.startswith("model.") else k): v for k, v in state.items()}
    pad_vocab_rows(out, ("embed_tokens.weight", "lm_head.weight"), cfg)
    if "lm_head.weight" not in out:
        out["lm_head.weight"] = out["embed_tokens.weight"]
    elif cfg.embed_norm and cfg.tie_embeddings:
        out["embed_tokens.weight"] = out["lm_head.weight"]  # the raw table; the model normalises it itself
    return out

