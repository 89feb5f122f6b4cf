"""GPT-2 in one readable file (after nanoGPT's model.py).

Weight names and layouts follow Hugging Face's GPT2LMHeadModel closely enough
that export is a rename plus a transpose of the Conv1D weights.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from engine import SparkNetError
from engine.config.loading import ModelConfig, padded_vocab
from engine.kernels.choice import REFERENCE, KernelChoice
from engine.kernels.gelu import gelu_bias
from engine.models.parts import check_length, num_parameters, output, pad_vocab_rows


class CausalSelfAttention(nn.Module):
    """Causal self-attention, with query, key and value from three products.

    The three products take slices of the one c_attn weight, so the attention's backward returns each
    gradient in the layout its own product reads; one product's split would copy them into one tensor.
    Two exact rewrites then spare two of the three passes that sum bias gradients over every token:
    - the key bias adds the same q . b_k to every score of a query, which softmax ignores: it has no
      effect on the output and its gradient is exactly zero, so the key product leaves it out;
    - attention weights sum to one, so the value bias reaches the output unchanged and joins the output
      projection's bias as W_proj b_v. With attention dropout the weights no longer sum to one, so
      training with dropout keeps b_v in the value product.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.n_embd = cfg.n_embd
        self.dropout = cfg.dropout
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        dropout = self.dropout if self.training else 0.0
        proj_bias = self.c_proj.bias
        w_q, w_k, w_v = self.c_attn.weight.split(C)
        b_q, _, b_v = self.c_attn.bias.split(C) if self.c_attn.bias is not None else (None, None, None)
        q, k = F.linear(x, w_q, b_q), F.linear(x, w_k)
        if b_v is not None and dropout == 0.0:
            v = F.linear(x, w_v)
            proj_bias = proj_bias + self.c_proj.weight @ b_v
        else:
            v = F.linear(x, w_v, b_v)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(F.linear(y, self.c_proj.weight, proj_bias))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig, fused_gelu: bool):
        super().__init__()
        self.fused_gelu = fused_gelu
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # GPT-2 uses the tanh approximation of GELU ("gelu_new" in transformers)
        if self.fused_gelu and self.c_fc.bias is not None:
            # the bias joins GELU rather than the product, so backward sums its gradient in the same pass
            h = gelu_bias(F.linear(x, self.c_fc.weight), self.c_fc.bias)
        else:
            h = F.gelu(self.c_fc(x), approximate="tanh")
        return self.dropout(self.c_proj(h))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, kernels: KernelChoice):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias, eps=1e-5)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias, eps=1e-5)
        self.mlp = MLP(cfg, kernels.fused_gelu)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig, kernels: KernelChoice = REFERENCE):
        super().__init__()
        self.cfg = cfg
        self.kernels = kernels
        self.fused_loss, self.fp8_head = kernels.fused_loss, kernels.fp8_head
        self.residual_dtype = torch.bfloat16 if kernels.bf16_residual else None
        self.vocab_size = cfg.vocab_size
        self.padded_vocab = padded_vocab(cfg)
        self.wte = nn.Embedding(self.padded_vocab, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.context, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.h = nn.ModuleList(Block(cfg, kernels) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=cfg.bias, eps=1e-5)
        self.lm_head = nn.Linear(cfg.n_embd, self.padded_vocab, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        self.apply(self._init_weights)
        # GPT-2 scales the residual projections by 1/sqrt(2 * n_layer)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_parameters(self) -> int:
        """Parameters of the true-vocabulary model (padding rows excluded; tied weights once)."""
        return num_parameters(self)

    def hidden(self, idx: torch.Tensor) -> torch.Tensor:
        T = check_length(idx, self.cfg.context)
        pos = torch.arange(T, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        if self.residual_dtype is not None:
            x = x.to(self.residual_dtype)  # every block's output then adds in this type too
        for block in self.h:
            x = block(x)
        return self.ln_f(x)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        """Logits (B, T, V) without targets; the mean cross-entropy loss with them."""
        return output(self, self.hidden(idx), targets)

    def optimizer_groups(self, weight_decay: float) -> list[dict]:
        """Decay matrices (2-D weights incl. embeddings); never biases or norm gains."""
        decay, no_decay = [], []
        for p in self.parameters():
            if not p.requires_grad:
                continue
            (decay if p.dim() >= 2 else no_decay).append(p)
        return [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]


# ---------------------------------------------------------------- Hugging Face GPT2LMHeadModel

# Hugging Face's GPT-2 uses Conv1D layers whose weights are stored transposed
_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def gpt2_to_hf_state(model: GPT) -> dict[str, torch.Tensor]:
    if not model.cfg.bias:
        raise SparkNetError("export: GPT2LMHeadModel needs biases; this model was trained with model.bias = false")
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


def gpt2_hf_config(cfg: ModelConfig, eos_id: int | None) -> dict:
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
        "bos_token_id": eos_id,
        "eos_token_id": eos_id,
        "torch_dtype": "float32",
    }
