"""`sparknet bench`: steady-state training throughput of a profile, optionally against transformers' Trainer.

Both trainers see the same tokens: the bench draws its batches from the profile's
mix (or --mix) through the engine's own loader. Figures come only from real runs.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from engine import SparkNetError
from engine.config.loading import Profile, flops_per_token, load_profile, load_run_inputs, model_parameter_count
from engine.config.paths import writable_folder
from engine.files import write_text_atomic
from engine.hardware.device import synchronize
from engine.kernels.choice import PIECES, TITLES
from engine.runs.rundir import create_run

# full fp32 logits of 120 x 1024 tokens need over 70 GiB: the Trainer and the logits-based evaluation take at most
# this many sequences at once
MAX_LOGITS_BATCH = 24


def is_boundary(done: int, warmup: int, interval: int, steps: int) -> bool:
    """Whether the device is synchronised after `done` steps: the end of warm-up, of each interval, and of the run."""
    return done == warmup or done == steps or (done > warmup and (done - warmup) % interval == 0)


def _intervals(times: list[float], tokens_per_step: int, warmup: int, interval: int) -> list[float]:
    """tokens/s over consecutive intervals of `interval` steps after `warmup` steps."""
    rates = []
    for start in range(warmup, len(times) - interval + 1, interval):
        dt = times[start + interval - 1] - (times[start - 1] if start > 0 else 0.0)
        rates.append(interval * tokens_per_step / dt)
    return rates


def json_out_target(name: str | None) -> Path | None:
    """The file --json-out names, checked before the bench trains: minutes of training must not end in a path
    that cannot be written."""
    if not name:
        return None
    path = Path(name).expanduser()
    if path.is_dir():
        raise SparkNetError(f"--json-out {name} is a folder; give a file in it, such as {path / 'bench.json'}")
    if not path.parent.is_dir():
        raise SparkNetError(f"--json-out {name}: the folder {path.parent} does not exist; make it, or give another file")
    return writable_folder(path.parent, f"--json-out {name}", "give a file in a folder you can write") / path.name


def write_json_out(path: Path | None, line: str) -> None:
    if path is not None:
        write_text_atomic(path, line + "\n", make_folder=False)


@contextlib.contextmanager
def private_trainer(profile: Profile, mix):
    """A Trainer of the profile, set up in a temporary run folder nobody else can see, to run in this process
    (the bench, and the scripts in lab/ that time a step). It is refused as `sparknet train` would refuse the same
    run, before anything is made: the checks name the user's files, not the temporary run's."""
    from engine.train.preflight import check_run
    from engine.train.trainer import Trainer

    check_run(profile, mix)
    with tempfile.TemporaryDirectory(prefix="sparknet-bench-") as tmp:
        lock = create_run(profile, mix, [], Path(tmp) / "bench")
        lock.release()  # no other process will run it
        trainer = Trainer(lock.run_dir, resume=False, mix_source=mix.source)  # not the copy that will vanish
        trainer.setup()
        yield trainer


def bench_sparknet(profile: Profile, mix, steps: int, warmup: int, interval: int, evaluate: bool = False) -> dict:
    from engine.train.schedule import lr_factor

    with private_trainer(profile, mix) as trainer:
        device = trainer.device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        trainer.model.train()
        times, losses = [], []
        data_after_warmup = 0.0
        synchronize(device)
        t0 = time.perf_counter()
        for step in range(steps):
            if step == warmup:
                data_after_warmup = trainer.feeder.draw_s
            loss, _ = trainer.train_step(lr_factor(step, profile))
            if is_boundary(step + 1, warmup, interval, steps):
                synchronize(device)  # interval boundaries only
                losses.append((step + 1, loss.item()))
            times.append(time.perf_counter() - t0)
        synchronize(device)
        rates = _intervals(times, profile.tokens_per_step, warmup, interval)
        steady_time = times[-1] - (times[warmup - 1] if warmup > 0 else 0.0)
        out = {
            "tokens_per_s": statistics.median(rates) if rates else None,
            "tokens_per_s_intervals": [round(r, 1) for r in rates],
            "data_wait_share": (trainer.feeder.draw_s - data_after_warmup) / steady_time if steady_time > 0 else None,
            "final_loss": losses[-1][1] if losses else None,
            **_trainer_facts(trainer),
        }
        if evaluate:
            out.update(evaluate_model(trainer.raw_model, profile, mix, device))
        return out


def _trainer_facts(trainer) -> dict:
    """The device, its peak and the fast paths a timed trainer ran with."""
    device = trainer.device
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "peak_memory_b": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
        "peak_flops": trainer.peak,
        "peak_source": trainer.peak_source,
        "compile": trainer.kernels.compile,
        "kernels": trainer.kernels.as_dict(),
        "kernels_proof_s": round(trainer.kernels_proof_s, 2),
        "precision": "bf16" if trainer.use_bf16 else "fp32",
    }


@torch.no_grad()
def evaluate_model(model: torch.nn.Module, profile: Profile, mix, device: torch.device,
                   batch_size: int | None = None) -> dict:
    """Held-out loss on the mix's validation tokens and WikiText-2 perplexity (standard protocol; the test split,
    capped at run.final_eval_tokens when the profile sets it)."""
    from engine.data.tokenizer import load_tokenizer
    from engine.evaluate import capped_wikitext_eval, load_wikitext_ids
    from engine.train.validator import held_out_loss

    model.eval()
    dtype = torch.bfloat16 if device.type == "cuda" and profile.run.precision == "bf16" else None

    def loss_of(windows: torch.Tensor) -> torch.Tensor:  # from logits: the Trainer's model returns no loss
        with torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext():
            out = model(windows[:, :-1])
            logits = (out.logits if hasattr(out, "logits") else out)[..., :profile.model.vocab_size]
            return torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.size(-1)),
                                                     windows[:, 1:].reshape(-1))

    val_loss = held_out_loss(loss_of, mix, profile.run.eval_tokens, batch_size or min(profile.batch.micro_batch,
                             MAX_LOGITS_BATCH), profile.model.context, device)
    cap = profile.run.final_eval_tokens  # the same cap as the final evaluation of a run (0: the whole split)
    ids, n_bytes = load_wikitext_ids(load_tokenizer(mix.tokenizer), split="test", max_ids=cap + 1 if cap else None)
    wiki = capped_wikitext_eval(model, ids, cap or len(ids), profile.model.context, None, device,
                                autocast_dtype=dtype, n_bytes=n_bytes)
    model.train()
    return {"val_loss": val_loss, "wikitext_loss": wiki["loss"], "wikitext_ppl": wiki["ppl"],
            "wikitext_bits_per_byte": wiki.get("bits_per_byte")}


def baseline_micro_batch(profile: Profile, requested: int | None) -> int:
    """The Trainer's micro-batch: the requested one, or the largest that divides the step and is at most 24."""
    sequences = profile.batch.micro_batch * profile.batch.grad_accum
    if requested is not None:
        if requested <= 0 or sequences % requested:
            raise SparkNetError(f"--baseline-micro-batch must divide the {sequences} sequences of a step "
                                f"(micro_batch x grad_accum), got {requested}")
        return requested
    return max(d for d in range(1, min(sequences, MAX_LOGITS_BATCH) + 1) if sequences % d == 0)


def _hf_gpt2(m):
    """transformers' GPT2LMHeadModel of the profile's shape, attention through sdpa."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=m.vocab_size, n_positions=m.context, n_embd=m.n_embd, n_layer=m.n_layer,
                        n_head=m.n_head, resid_pdrop=m.dropout, embd_pdrop=m.dropout, attn_pdrop=m.dropout,
                        tie_word_embeddings=m.tie_embeddings)
    return GPT2LMHeadModel._from_config(config, attn_implementation="sdpa")


def _timer(times: list[float], losses: list[float], device: torch.device, warmup: int, interval: int, steps: int):
    """A Trainer callback that appends each step's end time to `times` and each logged loss to `losses`."""
    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if not times and state.global_step == 0:
                synchronize(device)
                self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            if is_boundary(state.global_step, warmup, interval, steps):
                synchronize(device)
            times.append(time.perf_counter() - self.t0)

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                losses.append(logs["loss"])

    return Timer()


def bench_hf_trainer(profile: Profile, mix, steps: int, warmup: int, interval: int, evaluate: bool = False,
                     micro_batch: int | None = None) -> dict:
    """transformers Trainer + GPT2LMHeadModel (sdpa, bf16, fused AdamW, eager) on the same tokens.

    The step holds the same sequences as the profile's, split into micro-batches the Trainer fits in memory."""
    import transformers
    from transformers import Trainer, TrainingArguments

    from engine.data import MixLoader, prepare_mix

    p = profile
    cuda = torch.cuda.is_available() and p.run.device != "cpu"
    device = torch.device("cuda" if cuda else "cpu")
    micro = micro_batch or baseline_micro_batch(p, None)
    accum = p.batch.micro_batch * p.batch.grad_accum // micro
    prepare_mix(mix, steps * p.tokens_per_step)
    # the loader's draws are numbered globally, so any split of a step yields the same sequences in order
    loader = MixLoader(mix, split="train", batch=micro, context=p.model.context, seed=p.run.seed,
                       total_tokens=steps * p.tokens_per_step)
    windows = _Windows([loader.next_batch() for _ in range(steps * accum)], micro)
    model = _hf_gpt2(p.model)
    times: list[float] = []
    losses: list[float] = []
    with tempfile.TemporaryDirectory(prefix="sparknet-hf-") as out_dir:
        args = TrainingArguments(output_dir=out_dir, **_trainer_settings(p, micro, accum, steps, interval, cuda))
        trainer = Trainer(model=model, args=args, train_dataset=windows)
        trainer.add_callback(_timer(times, losses, device, warmup, interval, steps))
        with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the bench's JSON line
            trainer.train()
    rates = _intervals(times, p.tokens_per_step, warmup, interval)
    out = {"trainer": f"transformers {transformers.__version__} Trainer + GPT2LMHeadModel (sdpa, eager)",
           "micro_batch": micro, "grad_accum": accum,
           "tokens_per_s": statistics.median(rates) if rates else None,
           "tokens_per_s_intervals": [round(r, 1) for r in rates],
           "final_loss": losses[-1] if losses else None}
    if evaluate:
        out.update(evaluate_model(model.to(device), p, mix, device, batch_size=micro))
    return out


class _Windows(torch.utils.data.Dataset):
    """The loader's batches, one sequence an item, in the Trainer's format."""

    def __init__(self, rows: list, micro: int):
        self.rows, self.micro = rows, micro

    def __len__(self):
        return len(self.rows) * self.micro

    def __getitem__(self, i):
        ids = torch.from_numpy(self.rows[i // self.micro][i % self.micro][:-1].copy())
        return {"input_ids": ids, "labels": ids}  # GPT2LMHeadModel shifts labels itself


def _trainer_settings(p: Profile, micro: int, accum: int, steps: int, interval: int, cuda: bool) -> dict:
    """The profile's recipe in TrainingArguments' words."""
    return dict(
        per_device_train_batch_size=micro, gradient_accumulation_steps=accum, max_steps=steps,
        learning_rate=p.optim.lr, weight_decay=p.optim.weight_decay, adam_beta1=p.optim.betas[0],
        adam_beta2=p.optim.betas[1], adam_epsilon=p.optim.eps, max_grad_norm=p.optim.grad_clip,
        lr_scheduler_type="cosine", warmup_steps=min(p.warmup_steps, steps), bf16=cuda and p.run.precision == "bf16",
        optim="adamw_torch_fused" if cuda else "adamw_torch", logging_steps=interval, report_to=[],
        save_strategy="no", dataloader_num_workers=0, seed=p.run.seed, use_cpu=not cuda, disable_tqdm=True,
    )


def bench_command(args) -> int:
    from rich.console import Console

    steps = args.steps
    if steps < 2:
        raise SparkNetError(f"--steps must be at least 2, got {steps}")
    # the bench's run is its steps: the schedule (warm-up, decay) spans them, for both trainers
    probe = load_profile(args.profile, list(args.overrides))
    profile, mix = load_run_inputs(args.profile, args.mix, list(args.overrides),
                                   settings=[f"run.tokens={steps * probe.tokens_per_step}"])
    warmup = args.warmup_steps if args.warmup_steps is not None else max(1, min(10, steps // 3))
    if not 0 < warmup < steps:
        raise SparkNetError(f"--warmup-steps must be between 1 and {steps - 1}, got {warmup}")
    interval = max(1, min(10, (steps - warmup) // 3 or 1))
    baseline_micro = baseline_micro_batch(profile, args.baseline_micro_batch) if args.baseline else None
    # the bench's schedule: the same lr for every step, no decay, so steps are comparable
    result = {"profile": profile.name, "mix": mix.name, "steps": steps, "warmup_steps": warmup,
              "interval_steps": interval, "tokens_per_step": profile.tokens_per_step,
              "parameters": model_parameter_count(profile.model), "flops_per_token": flops_per_token(profile.model)}
    result.update(bench_sparknet(profile, mix, steps, warmup, interval, args.eval))
    tps = result["tokens_per_s"]
    result["achieved_tflops"] = round(tps * result["flops_per_token"] / 1e12, 3) if tps else None
    result["mfu"] = round(tps * result["flops_per_token"] / result["peak_flops"], 4) if tps and result["peak_flops"] else None
    if args.baseline == "hf-trainer":
        base = bench_hf_trainer(profile, mix, steps, warmup, interval, args.eval, baseline_micro)
        result["baseline"] = base
        if base["tokens_per_s"] and tps:
            result["speedup_vs_baseline"] = round(tps / base["tokens_per_s"], 3)
    line = json.dumps(result)
    print(line)
    write_json_out(args.json_out, line)
    Console(file=sys.stderr).print(result_table(result, profile.name, args.eval))
    return 0


def result_table(result: dict, profile_name: str, evaluate: bool):
    """The bench's figures as a table, SparkNet beside the Trainer when it ran."""
    from rich.table import Table

    table = Table(title=f"sparknet bench: {profile_name} on {result['device']}", box=None)
    table.add_column("figure")
    table.add_column("SparkNet", justify="right")
    if "baseline" in result:
        table.add_column("HF Trainer", justify="right")

    def fmt(v, spec="{:,.0f}"):
        return "—" if v is None else spec.format(v)

    base = result.get("baseline", {})
    rows = [
        ("tokens/s (median)", fmt(result["tokens_per_s"]), fmt(base.get("tokens_per_s"))),
        ("MFU", fmt(result["mfu"], "{:.1%}"),
         fmt(base["tokens_per_s"] * result["flops_per_token"] / result["peak_flops"], "{:.1%}")
         if base.get("tokens_per_s") and result["peak_flops"] else "—"),
        ("achieved TFLOP/s", fmt(result["achieved_tflops"], "{:.1f}"), ""),
        ("peak GPU memory", fmt(result["peak_memory_b"] / 2**30, "{:.1f} GiB") if result["peak_memory_b"] else "—", ""),
        ("data wait / step time", fmt(result["data_wait_share"], "{:.1%}"), ""),
        ("final loss", fmt(result["final_loss"], "{:.4f}"), fmt(base.get("final_loss"), "{:.4f}")),
    ]
    if evaluate:
        rows += [("validation loss", fmt(result["val_loss"], "{:.4f}"), fmt(base.get("val_loss"), "{:.4f}")),
                 ("WikiText-2 perplexity", fmt(result["wikitext_ppl"], "{:.2f}"), fmt(base.get("wikitext_ppl"), "{:.2f}")),
                 ("WikiText-2 bits/byte", fmt(result["wikitext_bits_per_byte"], "{:.4f}"),
                  fmt(base.get("wikitext_bits_per_byte"), "{:.4f}"))]
    kernels = result.get("kernels") or {}
    on = [TITLES[p] for p in PIECES if kernels.get(p)]
    rows.append(("fast paths", ", ".join(on) or "none (the reference path)", ""))
    if "speedup_vs_baseline" in result:
        rows.append(("speed-up vs Trainer", f"{result['speedup_vs_baseline']:.2f}x", ""))
    for r in rows:
        table.add_row(*(r if "baseline" in result else r[:2]))
    return table
