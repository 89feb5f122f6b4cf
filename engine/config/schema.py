"""The shapes of profiles and mixes: typed dataclasses with their defaults, and the keys each table may hold.
No I/O and no validation here (engine.config reads and checks them)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

# ---------------------------------------------------------------- profiles


@dataclass
class ModelConfig:
    arch: str = "gpt2"  # gpt2 | modern
    n_layer: int = 12
    n_embd: int = 512
    n_head: int = 8
    context: int = 1024
    vocab_size: int = 50257
    dropout: float = 0.0
    tie_embeddings: bool = True
    bias: bool = True
    # modern only: the token embedding RMS-normalised (no gain) before the first block; it depends on the token
    # alone, so an export carries the normalised table as its input embedding and the raw one as its output head
    embed_norm: bool = False
    zero_init_proj: bool = False  # modern only: attention and MLP output projections start at zero
    mlp_hidden: int = 0  # modern only: the SwiGLU width; 0 = the width with a 4x GELU MLP's parameter count
    # the embedding and output matrices are padded internally to a multiple of this
    # (fast matrix shapes); parameter counts, FLOPs and exports use the true vocab_size
    pad_vocab_multiple: int = 64


@dataclass
class OptimConfig:
    name: str = "adamw"  # adamw | muon (Muon for hidden matrices, AdamW for embeddings and norms)
    lr: float = 5e-4
    min_lr: float = 5e-5
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    weight_decay: float = 0.1
    eps: float = 1e-8
    grad_clip: float = 1.0
    fused: bool = True
    muon_lr: float = 0.02
    muon_momentum: float = 0.95


@dataclass
class ScheduleConfig:
    warmup: float = 0.02  # < 1: fraction of steps; >= 1: steps
    decay: str = "cosine"  # cosine | linear | constant | warmdown (constant, then linear over the last `warmdown`)
    # | range: the LR range test (`sparknet lr-find`), the rate rising exponentially from range_from to range_to
    # times its base over the run, no warm-up; the run ends where the loss runs away
    warmdown: float = 0.3  # decay = "warmdown": the fraction of steps, at the end, that decays linearly to min_lr
    range_from: float = 1e-3
    range_to: float = 100.0
    range_group: str = "all"  # all | adamw | muon: the optimizer groups whose rate rises; the others hold theirs


@dataclass
class BatchConfig:
    micro_batch: int = 24
    grad_accum: int = 5


@dataclass
class RunConfig:
    tokens: int = 1_000_000_000
    precision: str = "bf16"  # bf16 | fp32
    compile: bool = True  # a fast path too (engine/kernels/choice.py)
    log_every: int = 10
    eval_every: int = 250
    eval_tokens: int = 262_144
    wikitext_every: int = 0  # 0 = off; in-training WikiText-2 perplexity every N steps
    wikitext_tokens: int = 50_000
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    seed: int = 1337
    device: str = "auto"  # auto | cuda | cpu
    spike_factor: float = 3.0  # loss above factor x recent mean (after warm-up) stops the run
    final_eval: bool = True
    final_eval_tokens: int = 0  # 0 = the whole WikiText-2 test split
    peak_tflops: float = 0.0  # 0 = from the device table; set it for GPUs without a published figure
    tensorboard: bool = False  # TensorBoard event files in RUN/tensorboard as well (`tensorboard --logdir logs`)
    memory_floor_gb: float = 3.0  # checkpoint and stop when the machine's available memory falls below it; 0 = off
    # the fast paths (engine/kernels/choice.py): each runs where the device can and proves itself at start; false
    # forces the reference PyTorch path, which computes the same function
    fused_loss: bool = True  # output layer and loss in one pass over the logits (engine/kernels/output_layer.py)
    fp8_head: bool = True  # within the one-pass loss, the output layer's three products in FP8
    fused_gelu: bool = True  # GPT-2's MLP: GELU takes the bias and sums its gradient (engine/kernels/gelu.py)
    fused_qk_rope: bool = True  # the modern attention: QK-norm and rotary as one op (engine/kernels/qk_rope.py)
    bf16_residual: bool = True  # under bf16 precision, carry the residual stream in bf16 rather than fp32


@dataclass
class ThermalConfig:
    warn_c: float = 85.0
    pause_above_c: float = 0.0  # 0 = no thermal guard
    resume_below_c: float = 0.0


@dataclass
class DistConfig:
    nproc_per_node: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500


@dataclass
class Profile:
    name: str = ""
    source: str = ""  # where it came from, for messages
    description: str = ""
    mix: str = ""
    measured: str = ""  # what a sweep measured of this recipe (its sweep, rank and figure), when saved from one
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    run: RunConfig = field(default_factory=RunConfig)
    thermal: ThermalConfig = field(default_factory=ThermalConfig)
    dist: DistConfig = field(default_factory=DistConfig)

    @property
    def processes(self) -> int:
        return self.dist.nproc_per_node * self.dist.nnodes

    @property
    def tokens_per_step(self) -> int:
        # the effective batch is the profile's whatever the process count: each process
        # accumulates grad_accum / processes micro-batches
        return self.batch.micro_batch * self.batch.grad_accum * self.model.context

    @property
    def steps(self) -> int:
        return max(1, math.ceil(self.run.tokens / self.tokens_per_step))

    @property
    def warmup_steps(self) -> int:
        w = self.schedule.warmup
        return int(w * self.steps) if w < 1 else int(w)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("name")
        d.pop("source")
        return d


PROFILE_SECTIONS = {
    "model": ModelConfig,
    "optim": OptimConfig,
    "schedule": ScheduleConfig,
    "batch": BatchConfig,
    "run": RunConfig,
    "thermal": ThermalConfig,
    "dist": DistConfig,
}
PROFILE_TOP_KEYS = {"description": str, "mix": str, "measured": str}


# ---------------------------------------------------------------- mixes


@dataclass
class SourceConfig:
    name: str = ""
    weight: float = 0.0
    hf: str = ""
    config: str = ""
    split: str = "train"
    text_field: str = "text"
    streaming: bool = True
    path: str = ""
    repeat: bool = False
    encoding: str = "utf-8"  # of a local file's bytes; anything Python's codecs know (latin-1, cp1252, utf-16)


@dataclass
class MixConfig:
    name: str = ""
    source: str = ""
    description: str = ""
    tokenizer: str = "gpt2"
    validation_share: float = 0.005
    seed: int = 42
    sources: list[SourceConfig] = field(default_factory=list)

    @property
    def shares(self) -> dict[str, float]:
        total = sum(s.weight for s in self.sources)
        return {s.name: s.weight / total for s in self.sources}

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("source")
        return d


MIX_TOP_KEYS = {"description": str, "tokenizer": str, "validation_share": float, "seed": int}
