"""Whether a profile can run: every value in range and every combination possible, each failure one line that names
the profile, the key and the fix."""

from __future__ import annotations

from engine.config.architectures import ARCHITECTURES
from engine.config.errors import ConfigError
from engine.config.schema import Profile
from engine.formatting import fmt_steps


def _head_count_hint(width: int) -> str:
    """Head counts that divide the width, nearest the usual 64-wide heads first."""
    divisors = sorted((h for h in range(1, min(width, 64) + 1) if width % h == 0), key=lambda h: abs(width / h - 64))
    return f"head counts that divide {width}: {', '.join(str(h) for h in sorted(divisors[:4]))}" if width > 0 else \
        "set model.n_embd first"


def validate_profile(p: Profile) -> None:
    w = p.source
    m, b, r, t, d = p.model, p.batch, p.run, p.thermal, p.dist

    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise ConfigError(f"{w}: {msg}")

    need(m.arch in ARCHITECTURES, f"model.arch must be one of {', '.join(ARCHITECTURES)}, got {m.arch!r}")
    for key in ("n_layer", "n_embd", "n_head", "context", "vocab_size"):
        need(getattr(m, key) > 0, f"model.{key} must be a positive integer, got {getattr(m, key)}")
    need(m.n_embd % m.n_head == 0,
         f"model.n_head ({m.n_head}) must divide model.n_embd ({m.n_embd}); {_head_count_hint(m.n_embd)}")
    if m.arch == "modern":
        need((m.n_embd // m.n_head) % 2 == 0, "model.n_embd / model.n_head must be even for rotary embeddings")
    need(m.arch == "modern" or not (m.embed_norm or m.zero_init_proj or m.mlp_hidden),
         "model.embed_norm, model.zero_init_proj and model.mlp_hidden need model.arch = 'modern'")
    need(m.mlp_hidden >= 0, f"model.mlp_hidden must be >= 0 (0 = the default width), got {m.mlp_hidden}")
    need(m.pad_vocab_multiple >= 1,
         f"model.pad_vocab_multiple must be >= 1 (1 = no padding), got {m.pad_vocab_multiple}")
    need(0.0 <= m.dropout < 1.0, f"model.dropout must be in [0, 1), got {m.dropout}")
    _validate_optim(p, need)
    _validate_batch_and_run(p, need)
    need(t.warn_c > 0, f"thermal.warn_c must be > 0, got {t.warn_c}")
    if t.pause_above_c > 0:
        need(0 < t.resume_below_c < t.pause_above_c,
             f"thermal.resume_below_c ({t.resume_below_c}) must be above 0 and below thermal.pause_above_c "
             f"({t.pause_above_c})")
    need(b.grad_accum % p.processes == 0,
         f"batch.grad_accum ({b.grad_accum}) must be divisible by the {p.processes} processes so the effective "
         f"batch stays {p.tokens_per_step} tokens; pick a grad_accum that is a multiple of {p.processes}")
    need(r.final_eval_tokens >= 0, f"run.final_eval_tokens must be >= 0 (0 = whole split), got {r.final_eval_tokens}")
    need(r.peak_tflops >= 0, f"run.peak_tflops must be >= 0 (0 = from the device table), got {r.peak_tflops}")
    need(r.memory_floor_gb >= 0, f"run.memory_floor_gb must be >= 0 (0 = no memory guard), got {r.memory_floor_gb}")
    need(d.nproc_per_node >= 1, f"dist.nproc_per_node must be >= 1, got {d.nproc_per_node}")
    need(d.nnodes >= 1, f"dist.nnodes must be >= 1, got {d.nnodes}")
    need(0 <= d.node_rank < d.nnodes, f"dist.node_rank must be in [0, nnodes), got {d.node_rank}")
    need(0 < d.master_port < 65536, f"dist.master_port must be a port number, got {d.master_port}")


def _validate_optim(p: Profile, need) -> None:
    m, o, s = p.model, p.optim, p.schedule
    need(o.name in ("adamw", "muon"), f"optim.name must be 'adamw' or 'muon', got {o.name!r}")
    need(o.name != "muon" or m.arch == "modern", "optim.name = 'muon' needs model.arch = 'modern'")
    need(o.muon_lr > 0, f"optim.muon_lr must be > 0, got {o.muon_lr}")
    need(0 <= o.muon_momentum < 1, f"optim.muon_momentum must be in [0, 1), got {o.muon_momentum}")
    need(o.lr > 0, f"optim.lr must be > 0, got {o.lr}")
    need(o.min_lr >= 0, f"optim.min_lr must be >= 0, got {o.min_lr}")
    need(o.min_lr <= o.lr, f"optim.min_lr ({o.min_lr}) must not exceed optim.lr ({o.lr}); lower min_lr or raise lr")
    need(len(o.betas) == 2 and all(0.0 <= x < 1.0 for x in o.betas),
         f"optim.betas must be two numbers in [0, 1), got {o.betas}")
    need(o.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {o.weight_decay}")
    need(o.eps > 0, f"optim.eps must be > 0, got {o.eps}")
    need(o.grad_clip >= 0, f"optim.grad_clip must be >= 0 (0 = no clipping), got {o.grad_clip}")
    need(s.warmup >= 0, f"schedule.warmup must be >= 0 (a fraction < 1 or a step count), got {s.warmup}")
    need(s.warmup < 1 or float(s.warmup).is_integer(),
         f"schedule.warmup >= 1 counts steps and must be whole, got {s.warmup}")
    need(s.decay in ("cosine", "linear", "constant", "warmdown", "range"),
         f"schedule.decay must be cosine, linear, constant, warmdown or range, got {s.decay!r}")
    need(0 < s.range_from < s.range_to, f"schedule.range_from ({s.range_from}) must be above 0 and below "
         f"schedule.range_to ({s.range_to})")
    need(s.range_group in ("all", "adamw", "muon"), f"schedule.range_group must be all, adamw or muon, got "
         f"{s.range_group!r}")
    need(s.range_group != "muon" or p.optim.name == "muon", "schedule.range_group = \"muon\" needs optim.name = "
         "\"muon\"; use adamw or all")
    need(0 < s.warmdown <= 1, f"schedule.warmdown must be a fraction of the steps in (0, 1], got {s.warmdown}")


def _validate_batch_and_run(p: Profile, need) -> None:
    b, r = p.batch, p.run
    need(b.micro_batch > 0, f"batch.micro_batch must be a positive integer, got {b.micro_batch}")
    need(b.grad_accum > 0, f"batch.grad_accum must be a positive integer, got {b.grad_accum}")
    need(r.tokens > 0, f"run.tokens must be a positive integer, got {r.tokens}")
    need(r.precision in ("bf16", "fp32"), f"run.precision must be 'bf16' or 'fp32', got {r.precision!r}")
    need(r.device in ("auto", "cuda", "cpu"), f"run.device must be auto, cuda or cpu, got {r.device!r}")
    for key in ("log_every", "eval_every", "checkpoint_every", "keep_checkpoints", "eval_tokens"):
        need(getattr(r, key) > 0, f"run.{key} must be a positive integer, got {getattr(r, key)}")
    need(r.wikitext_every >= 0, f"run.wikitext_every must be >= 0 (0 = off), got {r.wikitext_every}")
    need(r.wikitext_tokens > 0, f"run.wikitext_tokens must be positive, got {r.wikitext_tokens}")
    need(r.spike_factor > 1, f"run.spike_factor must be > 1, got {r.spike_factor}")
    need(p.warmup_steps <= p.steps,
         f"schedule.warmup ({fmt_steps(p.warmup_steps)}) is longer than the run ({fmt_steps(p.steps)}); lower it")
