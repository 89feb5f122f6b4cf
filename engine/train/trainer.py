"""The trainer: one run directory in, checkpoints, metrics and a model out.

Started through engine.worker by `sparknet train` (in the foreground or
detached) or `sparknet resume`, directly for one process or through torchrun
for several (rank 0 writes the run directory). The loop never synchronises
with the device except on log, eval and checkpoint steps.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from engine import SparkNetError
from engine.config.loading import flops_per_token
from engine.formatting import fmt_duration, fmt_steps
from engine.hardware import distributed
from engine.hardware.device import peak_flops, pick_device
from engine.hardware.memory_guard import MemoryGuard
from engine.hardware.watch import HardwareWatch
from engine.models.registry import build_model
from engine.runs.records import MetricRow, Phase
from engine.runs.rundir import RunWriter, load_run
from engine.runs.status import State
from engine.train.checkpointer import Checkpointer
from engine.train.feeder import BatchFeeder
from engine.train.finish import Finisher
from engine.train.guards import DivergenceGuard, divergence_advice
from engine.train.interrupt import interruptible
from engine.train.kernel_proof import settle_kernels
from engine.train.optim import build_optimizer
from engine.train.reporter import Reporter
from engine.train.schedule import lr_factor, tested_rate
from engine.train.validator import Validator

log = logging.getLogger("sparknet")

class Trainer:
    def __init__(self, run_dir: Path, resume: bool, from_scratch: bool = False, mix_source: str = ""):
        self.run_dir = Path(run_dir)
        self.mix_source = mix_source  # the mix file errors name, where the run's own copy is temporary (the bench)
        self.resume = resume
        self.from_scratch = from_scratch  # a resume whose checkpoints all fail may start over only when asked
        self.rank, self.world, self.local_rank = distributed.ranks()
        self.is_main = self.rank == 0
        self.rd = RunWriter(self.run_dir)
        self.stop_signal = 0  # the signal that asked for a stop (SIGINT, SIGTERM), 0 for none
        self.finished = False  # every step trained: a stop now only skips the final evaluation
        self.step = 0
        self.tokens = 0
        self.hardware: HardwareWatch | None = None  # rank 0's telemetry and thermal guard
        self.report = Reporter(self.rd, self.is_main)

    # ------------------------------------------------------------ plumbing

    def status(self, **fields) -> None:
        self.report.status(**fields)

    def event(self, event_name: str, message: str = "", **extra) -> None:
        self.report.event(event_name, message, **extra)

    def _on_signal(self, signum, frame) -> None:
        if self.stop_signal and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C does not wait for the checkpoint
        self.stop_signal = signum  # the process then exits 128 + signum, as an interrupted command does

    def stop_requested(self) -> bool:
        return bool(self.stop_signal) or self.rd.stop_requested()

    # ------------------------------------------------------------ setup

    def setup(self) -> None:
        self.profile, self.mix, self.run_data = load_run(self.run_dir)
        if self.mix_source:
            self.mix = dataclasses.replace(self.mix, source=self.mix_source)
        p = self.profile
        self.checkpointer = Checkpointer(self.run_dir, p.run.keep_checkpoints, self.report, self.world)
        distributed.start(self.world, use_cuda=torch.cuda.is_available() and p.run.device != "cpu")
        self.device = pick_device(p, self.local_rank)
        torch.manual_seed(p.run.seed)
        self.use_bf16 = p.run.precision == "bf16" and self.device.type == "cuda"
        if p.run.precision == "bf16" and not self.use_bf16:
            self.event("warning", "precision bf16 falls back to fp32 on CPU")
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

        needed = p.steps * p.tokens_per_step
        self._prepare_data(needed)
        self.status(phase=Phase.CHECKING_FAST_PATHS)
        proof = settle_kernels(p, self.device, self.use_bf16, self.world, self.event)
        self.kernels, self.kernels_proof_s = proof.choice, proof.seconds
        self.raw_model = self._build_model()
        self.optimizer = build_optimizer(self.raw_model, p, self.device)
        self.step = 0
        self.tokens = 0
        if self.resume:
            self._restore()
        self.event("data", self.loader.describe(needed))
        model = self.raw_model
        if self.kernels.compile:
            model = torch.compile(model)
        self.model = distributed.wrap(model, self.world, self.local_rank, self.device)
        self.flops_per_token = flops_per_token(p.model)
        self.peak, self.peak_source = peak_flops(self.device, p.run.peak_tflops)
        if p.run.wikitext_every and self.is_main:
            self.validator.load_wikitext(lambda message: self.event("warning", message))

    def _prepare_data(self, needed: int) -> None:
        """The cache holds the run's share of every source (rank 0 prepares it); the loader and validator read it."""
        from engine.data import MixLoader, prepare_mix, validation_lengths

        p = self.profile
        self.status(state=State.PREPARING, phase=Phase.PREPARING_DATA)
        if self.is_main:
            progress_path = self.run_dir / "prepare.json"
            report = prepare_mix(self.mix, needed, progress_path=progress_path, should_stop=self.stop_requested)
            for row in report.values():
                if row["repaired"]:
                    self.event("warning", row["repaired"])
        distributed.barrier(self.world)
        self.grad_accum = p.batch.grad_accum // self.world
        self.loader = MixLoader(self.mix, split="train", batch=p.batch.micro_batch, context=p.model.context,
                                seed=p.run.seed, rank=self.rank, world=self.world, total_tokens=needed)
        self.feeder = BatchFeeder(self.loader, self.device)
        # the held-out set is the one the validation splits give now, also after another run grows the cache
        lengths = validation_lengths(self.mix) if self.mix.validation_share > 0 else None
        self.validator = Validator(p, self.mix, self.device, self.use_bf16, lengths)

    def _build_model(self) -> torch.nn.Module:
        return build_model(self.profile.model, self.kernels).to(self.device)

    def _restore(self) -> None:
        """Continue from the newest checkpoint that verifies and loads."""
        found, skipped = self.checkpointer.restore(self.raw_model, self.optimizer, self.device)
        if found is None:
            if skipped and not self.from_scratch:
                raise SparkNetError(f"no checkpoint of run {self.run_dir.name} loads (each was moved aside, see the "
                                    f"warnings); `sparknet resume {self.run_dir.name} --from-scratch` trains it again "
                                    "from step 0")
            if skipped:
                # a checkpoint that failed half-way through loading may have left some of its weights behind
                self.raw_model = self._build_model()
                self.optimizer = build_optimizer(self.raw_model, self.profile, self.device)
            self.event("warning", "no usable checkpoint found; starting from step 0")
            return
        path, state = found
        self.step = state["step"]
        self.tokens = state["tokens"]
        self.loader.load_state_dict(state["loader"][str(self.rank)] if "loader" in state else {})
        self.validator.lengths = state.get("validation_lengths", self.validator.lengths)
        self.elapsed_before = state.get("elapsed_s", 0.0)
        changed = [o for entry in self.run_data.get("resume_overrides", []) for o in entry.get("set", [])]
        self.event("resumed", f"resumed from {path.name} at step {self.step}" +
                   (f" with --set {' '.join(changed)}" if changed else ""), step=self.step)

    # ------------------------------------------------------------ the loop

    def next_batch(self):
        batch = self.feeder.next()
        return batch[:, :-1], batch[:, 1:]

    def autocast(self):
        if self.use_bf16:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return nullcontext()

    def train_step(self, lr_factor: float, mark=None) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step at `lr_factor` times each group's base rate; `mark(phase)`, when given, is called as
        each phase's work has been issued (the phase timings of lab/profile_step.py)."""
        mark = mark or (lambda phase: None)
        self.optimizer.set_lr_factor(lr_factor)
        loss_sum = torch.zeros((), device=self.device)
        for micro in range(self.grad_accum):
            x, y = self.next_batch()
            sync = micro == self.grad_accum - 1
            ctx = self.model.no_sync() if self.world > 1 and not sync else nullcontext()
            with ctx, self.autocast():
                loss = self.model(x, y)
            (loss / self.grad_accum).backward()
            loss_sum += loss.detach()
        mark("forward and backward")
        clip = self.profile.optim.grad_clip
        if clip > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        else:
            grad_norm = torch.sqrt(sum((p.grad.float() ** 2).sum() for p in self.model.parameters()
                                       if p.grad is not None))
        mark("clip")
        self.optimizer.step(mark)
        self.optimizer.zero_grad(set_to_none=True)
        mark("zero_grad")
        self.feeder.prefetch()  # the next step's first batch, drawn while this step runs on the GPU
        mark("next batch")
        return loss_sum / self.grad_accum, grad_norm

    def weights_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.raw_model.parameters())

    def checkpoint(self, reason: str) -> None:
        if not self.weights_finite():
            raise SparkNetError(f"weights became non-finite by step {self.step}; no checkpoint written; "
                                f"{self.divergence_advice()}")
        self.checkpointer.save(self.step, self.raw_model, self.optimizer, self.feeder.consumed_state(), {
            "tokens": self.tokens, "validation_lengths": self.validator.lengths, "tokenizer": self.mix.tokenizer,
            "kernels": self.kernels.as_dict(), "elapsed_s": self.elapsed()}, reason)

    def elapsed(self) -> float:
        return getattr(self, "elapsed_before", 0.0) + (time.monotonic() - self.t_start)

    def fail(self, message: str, kind: str = "failed", diverged: bool = False) -> None:
        self.report.fail(message, self.step, kind, diverged)

    def divergence_advice(self) -> str:
        return divergence_advice(self.run_dir, self.profile.optim)

    def run(self) -> int:
        p = self.profile
        self._begin()
        self.t_log, self.tokens_log = time.monotonic(), self.tokens
        guard = DivergenceGuard(p.warmup_steps, p.run.spike_factor)
        compiling = self.kernels.compile
        last_good_loss = None
        try:
            while self.step < p.steps:
                if self._check_stop():
                    return 0
                factor = lr_factor(self.step, p)
                loss_t, gnorm_t = self._first_step(factor) if compiling else self.train_step(factor)
                compiling = False
                self.step += 1
                self.tokens += p.tokens_per_step
                due = self._due()
                if not any(due.values()):
                    continue
                loss_t = distributed.mean(loss_t, self.world)
                loss, gnorm = loss_t.item(), gnorm_t.item()  # the only host sync in the loop
                diverged = guard.check(self.step, loss, gnorm)
                if diverged:
                    if self._diverged(diverged, factor * tested_rate(p), loss, gnorm):
                        return 1
                    break  # the LR range test ends where the loss runs away
                last_good_loss = loss
                self._log_step(factor * tested_rate(p), loss, gnorm, evaluate=due["eval"], wikitext=due["wikitext"])
                if self.hardware is not None:
                    self.hardware.check()
                if due["checkpoint"] and self.step < p.steps:
                    self.checkpoint("interval")
                    self.status(phase=Phase.TRAINING)
            self.checkpoint("final")
        except SparkNetError as e:
            self.fail(str(e))
            return 1
        finally:
            self._end_watchers()
        self.finished = True
        Finisher(self.run_dir, p, self.mix.tokenizer, self.device, self.report,
                 self.stop_requested).finish(self.raw_model, self.step, last_good_loss)
        return 0

    def _diverged(self, diverged: tuple[str, str], lr: float, loss: float, gnorm: float) -> bool:
        """A run fails, saying how to carry on (True); the LR range test logs the step and ends (False)."""
        what, kind = diverged
        if self.profile.schedule.decay == "range":
            self._log_step(lr, loss, gnorm, evaluate=False, wikitext=False)
            self.event("range_end", f"{what}: the LR range test ends here", step=self.step)
            return False
        advice = self.divergence_advice() + (", or raise run.spike_factor" if kind == "loss_spike" else "")
        self.fail(f"{what}; {advice}", kind=kind, diverged=True)
        return True

    def _end_watchers(self) -> None:
        """The telemetry thread and the TensorBoard writer end with the loop, however it ends."""
        if self.hardware is not None:
            self.hardware.stop()
        if self.rd.tensorboard is not None:
            self.rd.tensorboard.close()
            self.rd.tensorboard = None

    def _begin(self) -> None:
        p = self.profile
        self.t_start = time.monotonic()
        self.memory_guard = MemoryGuard(p.run.memory_floor_gb)
        if self.is_main:
            if p.run.tensorboard:
                from engine.train.tensorboard_log import TensorBoardLog

                self.rd.tensorboard = TensorBoardLog(self.run_dir)
            self.hardware = HardwareWatch(self.rd, self.device, p.thermal, self.event, self.status,
                                          self.stop_requested)
            self.hardware.start()
        # the first step of a compiled model compiles it, which can take minutes on a small GPU
        self.status(state=State.RUNNING, phase=Phase.COMPILING if self.kernels.compile else Phase.TRAINING, step=self.step,
                    steps=p.steps, tokens=self.tokens, total_tokens=p.steps * p.tokens_per_step, error=None,
                    diverged=None, mfu_basis=self.peak_source, fast_paths=self.kernels.summary(),
                    memory_floor_b=self.memory_guard.floor_b)
        if self.device.type == "cuda":
            log.info("MFU against %s", f"{self.peak / 1e12:,.1f} TFLOP/s ({self.peak_source})" if self.peak else
                     "nothing: this GPU has no datasheet peak and no measured ceiling yet (run `sparknet doctor`)")
        self.event("started", f"training {fmt_steps(p.steps)} of {p.tokens_per_step} tokens on {self.device}",
                   step=self.step, device=str(self.device), world=self.world)
        self.model.train()

    def _first_step(self, factor: float):
        """The step that compiles the model, minutes on a small GPU: a stop ends the process there and then, the run
        marked stopped (one process; ranks would have to agree)."""
        with interruptible(self.stop_requested, exit_now=self._exit_while_compiling) if self.world == 1 else \
                nullcontext():
            out = self.train_step(factor)
        self.status(phase=Phase.TRAINING)
        # the compiling step is not a rate: speed and time left count from its end
        self.t_log, self.tokens_log = time.monotonic(), self.tokens + self.profile.tokens_per_step
        return out

    def _exit_while_compiling(self, signum: int) -> None:
        """No exception may unwind from here (see interruptible); nothing since the last checkpoint is lost."""
        self.stop_signal = signum
        self._stopped("while compiling the model; nothing since the last checkpoint was lost")
        self.report.close()
        logging.shutdown()
        os._exit(128 + signum if signum else 0)

    def _stopped(self, how: str) -> None:
        if self.stop_signal == signal.SIGHUP:
            how += " (its terminal closed: `sparknet train --detach` keeps a run going without one)"
        if self.is_main:
            self.rd.clear_stop()
        self.status(state=State.STOPPED, phase=Phase.NONE, eta_s=None, step=self.step, tokens=self.tokens)
        self.event("stopped", f"stopped at step {self.step} {how}; `sparknet resume {self.run_dir.name}` continues",
                   step=self.step)

    def _due(self) -> dict[str, bool]:
        """What this step owes: a log line, a checkpoint, an evaluation, a WikiText-2 score (all on the last)."""
        r, step = self.profile.run, self.step
        last = step == self.profile.steps
        return {"log": step % r.log_every == 0 or last, "checkpoint": step % r.checkpoint_every == 0 or last,
                "eval": step % r.eval_every == 0 or last,
                "wikitext": self.validator.wikitext_ids is not None and (step % r.wikitext_every == 0 or last)}

    def _log_step(self, lr: float, loss: float, gnorm: float, evaluate: bool, wikitext: bool) -> None:
        """One metrics row (with the held-out figures it is due) and the status readers see."""
        p = self.profile
        now = time.monotonic()
        interval = max(1e-9, now - self.t_log)
        measured = self.tokens - self.tokens_log  # none on a log step right after the compiling one
        tps = measured / interval if measured > 0 else None
        self.t_log, self.tokens_log = now, self.tokens
        held_out = self.held_out(evaluate, wikitext)
        row = MetricRow(step=self.step, tokens=self.tokens, loss=round(loss, 5), lr=lr, grad_norm=round(gnorm, 5),
                        tokens_per_s=round(tps, 1) if tps else None,
                        mfu=round(tps * self.flops_per_token / self.peak, 4) if self.peak and tps else None,
                        elapsed_s=round(self.elapsed(), 2), epochs=self.loader.epochs(self.feeder.consumed_state()),
                        gpu_mem_peak_b=torch.cuda.max_memory_allocated(self.device)
                        if self.device.type == "cuda" else None, **held_out)
        remaining = (p.steps - self.step) * p.tokens_per_step
        eta = remaining / tps if tps else None
        if self.is_main:
            self.rd.metric(row)
            log.info("step %d/%d loss %.4f lr %.2e gnorm %.3f %s tok/s%s elapsed %s eta %s", self.step, p.steps,
                     loss, lr, gnorm, f"{tps:.0f}" if tps else "N/A",
                     f" val {row.val_loss:.4f}" if row.val_loss is not None else "", fmt_duration(self.elapsed()),
                     fmt_duration(eta))
        self.status(step=self.step, tokens=self.tokens, loss=row.loss, tokens_per_s=row.tokens_per_s,
                    eta_s=round(eta, 1) if eta is not None else None, mfu=row.mfu, update_every_s=round(interval, 2),
                    phase=Phase.TRAINING, **({"val_loss": row.val_loss} if evaluate else {}))

    def held_out(self, evaluate: bool, wikitext: bool) -> dict:
        """The held-out figures a log step is due: validation loss, WikiText-2 perplexity."""
        figures = {}
        if evaluate:
            figures["val_loss"] = round(self.validator.loss(self.raw_model), 5)
        if wikitext:
            ppl = self.validator.wikitext_ppl(self.raw_model)
            figures["wikitext_ppl"] = round(ppl, 3) if ppl is not None else None
        return figures

    def _check_stop(self) -> bool:
        """A stop asked for, or memory running out (the run then ends failed); either way after a checkpoint."""
        if self.world > 1 and self.step % self.profile.run.log_every:
            return False  # agreeing across processes costs a sync: only on log steps
        self.rd.check_present()
        low = self.memory_guard.low()
        if not distributed.any_rank(self.stop_requested() or low is not None, self.world, self.device):
            return False
        self.status(state=State.STOPPING, phase=Phase.CHECKPOINTING)
        if self.checkpointer.saved_step != self.step:  # else the interval checkpoint of this very step stands
            self.checkpoint("memory" if low else "stop")
        if low:
            self.fail(f"{low}; the checkpoint from step {self.step} is kept; free memory (or lower run.memory_floor_gb),"
                      f" then `sparknet resume {self.run_dir.name}`")
        else:
            self._stopped("after a checkpoint")
        return True
