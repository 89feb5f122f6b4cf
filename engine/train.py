"""The training process: one run directory in, checkpoints, metrics and a model out.

Started by `sparknet train` (in the foreground or detached) or `sparknet resume`,
directly for one process or through torchrun for several (rank 0 writes the
run directory). The loop never synchronises with the device except on log,
eval and checkpoint steps.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import signal
import sys
import time
import traceback
from contextlib import nullcontext
from pathlib import Path

import torch

from engine import SparkNetError
from engine.checkpoint import CheckpointError, load_checkpoint, move_aside, save_checkpoint
from engine.config import MixConfig, Profile, flops_per_token, mix_from_dict, profile_from_dict, read_toml
from engine.data import PrepareStopped
from engine.model import build_model
from engine.notify import Notifier
from engine.optim import build_optimizer
from engine.rundir import RunDir, iter_checkpoints, utc_now
from engine.watchdog import StallWatch

log = logging.getLogger("sparknet")

# Dense bf16 tensor-core peaks by device name (published datasheet figures). A GPU
# missing here (the DGX Spark's GB10 has no published dense figure) gets mfu = null
# unless run.peak_tflops is set.
PEAK_BF16_TFLOPS = [
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0),
    ("GH200", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("A10G", 125.0),
    ("RTX 4090", 165.0),
    ("RTX 3090", 71.0),
]


def peak_flops(device: torch.device, override_tflops: float = 0.0) -> float | None:
    if override_tflops > 0:
        return override_tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, tflops in PEAK_BF16_TFLOPS:
        if key in name:
            return tflops * 1e12
    return None


def lr_at(step: int, profile: Profile) -> float:
    """Linear warm-up to lr, then decay to min_lr at the last step."""
    o, total, warm = profile.optim, profile.steps, profile.warmup_steps
    if warm > 0 and step < warm:
        return o.lr * (step + 1) / warm
    if profile.schedule.decay == "constant" or total <= warm:
        return o.lr
    progress = min(1.0, (step - warm) / max(1, total - warm))
    if profile.schedule.decay == "linear":
        factor = 1.0 - progress
    else:
        factor = 0.5 * (1.0 + math.cos(math.pi * progress))
    return o.min_lr + factor * (o.lr - o.min_lr)


def load_run(run_dir: Path) -> tuple[Profile, MixConfig, dict]:
    data = read_toml(run_dir / "run.toml")
    where = str(run_dir / "run.toml")
    profile = profile_from_dict(data["profile"], where, name=data.get("profile_name", ""))
    mix_data = dict(data["mix"])
    mix_name = mix_data.pop("name", data.get("mix_name", ""))
    # paths in run.toml are already absolute
    mix = mix_from_dict(mix_data, where, run_dir, name=mix_name)
    return profile, mix, data


def pick_device(profile: Profile, local_rank: int) -> torch.device:
    want = profile.run.device
    if want == "cuda" or (want == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise SparkNetError("run.device is 'cuda' but no CUDA GPU is visible; set run.device = \"auto\" or \"cpu\"")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def select_attention(backend: str, device: torch.device) -> None:
    """Restrict scaled_dot_product_attention to one backend (auto: PyTorch's own choice)."""
    if device.type != "cuda" or backend == "auto":
        return
    b = torch.backends.cuda
    b.enable_flash_sdp(backend == "flash")
    b.enable_mem_efficient_sdp(backend == "efficient")
    b.enable_math_sdp(backend == "math")
    if hasattr(b, "enable_cudnn_sdp"):
        b.enable_cudnn_sdp(backend == "cudnn")


def fp8_products_available(cuda_capability: tuple[int, int] | None) -> bool:
    """FP8 products run on CUDA GPUs of compute capability 8.9 or newer, and off CUDA (None) through PyTorch's own
    implementation of the same arithmetic."""
    return cuda_capability is None or tuple(cuda_capability) >= (8, 9)


class BatchFeeder:
    """Moves batches to the GPU through a ring of pinned host buffers, so copies overlap compute.

    A buffer is refilled only after the copy that last read it has finished, which the
    CUDA event recorded after that copy tells without stalling the whole device.

    `prefetch` draws the next batch while the GPU is still busy, so the GPU does not wait for the
    loader after the loop synchronises with it; `consumed_state` is then the loader's position
    after the batches handed out, not after the one drawn ahead, which is what a checkpoint keeps.
    """

    RING = 4

    def __init__(self, loader, device: torch.device):
        self.loader = loader
        self.device = device
        self.host: list[torch.Tensor] = []
        self.events: list[torch.cuda.Event | None] = []
        self.slot = 0
        self.ahead: tuple[torch.Tensor, dict] | None = None  # a batch drawn early, and the position before it

    def next(self) -> torch.Tensor:
        if self.ahead is not None:
            batch, self.ahead = self.ahead[0], None
            return batch
        return self._draw()

    def prefetch(self) -> None:
        if self.ahead is None:
            before = self.loader.state_dict()
            self.ahead = (self._draw(), before)

    def consumed_state(self) -> dict:
        return self.ahead[1] if self.ahead is not None else self.loader.state_dict()

    def _draw(self) -> torch.Tensor:
        arr = self.loader.next_batch()
        if self.device.type != "cuda":
            return torch.from_numpy(arr)
        if not self.host:
            self.host = [torch.empty(arr.shape, dtype=torch.int64).pin_memory() for _ in range(self.RING)]
            self.events = [None] * self.RING
        i = self.slot
        self.slot = (i + 1) % self.RING
        if self.events[i] is not None:
            self.events[i].synchronize()
        self.host[i].copy_(torch.from_numpy(arr))
        batch = self.host[i].to(self.device, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self.events[i] = event
        return batch


class Trainer:
    def __init__(self, run_dir: Path, resume: bool):
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.rank = int(os.environ.get("RANK", "0"))
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.is_main = self.rank == 0
        self.rd = RunDir(self.run_dir)
        self.stop_signal = False
        self.step = 0
        self.tokens = 0
        self.sampler = None
        self.thermal = None
        self.notifier = None
        self.checkpointed_step = -1  # every rank knows it, so all of them skip a repeated checkpoint together

    # ------------------------------------------------------------ plumbing

    def status(self, **fields) -> None:
        if self.is_main:
            self.rd.update_status(**fields)

    def event(self, event_name: str, message: str = "", **extra) -> None:
        if self.is_main:
            self.rd.event(event_name, message, **extra)
            log.info("%s: %s", event_name, message)
            if self.notifier is not None:
                self.notifier.send(event_name, message)

    def _on_signal(self, signum, frame) -> None:
        if self.stop_signal and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C does not wait for the checkpoint
        self.stop_signal = True

    def stop_requested(self) -> bool:
        return self.stop_signal or self.rd.stop_requested()

    # ------------------------------------------------------------ setup

    def setup(self) -> None:
        from engine.data import MixLoader, prepare_mix

        self.profile, self.mix, self.run_data = load_run(self.run_dir)
        p = self.profile
        if self.world > 1:
            import torch.distributed as dist

            backend = "nccl" if torch.cuda.is_available() and p.run.device != "cpu" else "gloo"
            dist.init_process_group(backend=backend)
        self.device = pick_device(p, self.local_rank)
        torch.manual_seed(p.run.seed)
        self.use_bf16 = p.run.precision == "bf16" and self.device.type == "cuda"
        if p.run.precision == "bf16" and not self.use_bf16:
            self.event("warning", "precision bf16 falls back to fp32 on CPU")
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

        self.status(state="preparing", phase="preparing data")
        needed = p.steps * p.tokens_per_step
        if self.is_main:
            progress_path = self.run_dir / "prepare.json"
            report = prepare_mix(self.mix, needed, progress_path=progress_path, should_stop=self.stop_requested)
            for row in report.values():
                if row["repaired"]:
                    self.event("warning", row["repaired"])
        self._barrier()

        self.grad_accum = p.batch.grad_accum // self.world
        self.loader = MixLoader(self.mix, split="train", batch=p.batch.micro_batch, context=p.model.context,
                                seed=p.run.seed, rank=self.rank, world=self.world)

        self.feeder = BatchFeeder(self.loader, self.device)
        self.raw_model = self._build_model()
        select_attention(p.run.attention, self.device)
        self.optimizer = build_optimizer(self.raw_model, p, self.device)
        self.step = 0
        self.tokens = 0
        if self.resume:
            self._restore()
        model = self.raw_model
        if p.run.compile:
            model = torch.compile(model)
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            model = DDP(model, device_ids=[self.local_rank] if self.device.type == "cuda" else None)
        self.model = model
        self.flops_per_token = flops_per_token(p.model)
        self.peak = peak_flops(self.device, p.run.peak_tflops)
        self.wikitext_ids = None
        if p.run.wikitext_every and self.is_main:
            self.wikitext_ids = self._load_wikitext()

    def _build_model(self) -> torch.nn.Module:
        p = self.profile
        model = build_model(p.model).to(self.device)
        model.fused_loss = p.run.fused_loss
        model.residual_dtype = torch.bfloat16 if p.run.bf16_residual and self.use_bf16 else None
        model.fp8_head = p.run.fp8_head and self._fp8_available()
        for module in model.modules():
            if hasattr(module, "fused_gelu"):
                module.fused_gelu = p.run.fused_gelu
            if hasattr(module, "separate_qkv"):
                module.separate_qkv = p.run.separate_qkv
        return model

    def _fp8_available(self) -> bool:
        capability = torch.cuda.get_device_capability(self.device) if self.device.type == "cuda" else None
        if fp8_products_available(capability):
            return True
        self.event("warning", f"run.fp8_head is off: {torch.cuda.get_device_name(self.device)} has no FP8 tensor "
                              f"cores (compute capability 8.9 or newer); the output layer runs in bf16")
        return False

    def _barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def _restore(self) -> None:
        """Load the newest checkpoint that verifies and loads; each one that does not is moved aside."""
        failed_any = False
        for path in list(iter_checkpoints(self.run_dir)):
            try:
                state = load_checkpoint(path, self.raw_model, self.optimizer, self.device)
            except CheckpointError as e:
                failed_any = True
                dest = move_aside(path, str(e)) if self.is_main else path
                self.event("warning", f"checkpoint {path.name} skipped: {e}; moved to {dest}; falling back to "
                                      "the one before")
                continue
            self.step = state["step"]
            self.tokens = state["tokens"]
            self.loader.load_state_dict(state["loader"][str(self.rank)] if "loader" in state else {})
            self.elapsed_before = state.get("elapsed_s", 0.0)
            changed = [o for entry in self.run_data.get("resume_overrides", []) for o in entry.get("set", [])]
            self.event("resumed", f"resumed from {path.name} at step {self.step}" +
                       (f" with --set {' '.join(changed)}" if changed else ""), step=self.step)
            return
        if failed_any:
            # a checkpoint that failed half-way through loading may have left some of its weights behind
            self.raw_model = self._build_model()
            self.optimizer = build_optimizer(self.raw_model, self.profile, self.device)
        self.event("warning", "no usable checkpoint found; starting from step 0")

    def _load_wikitext(self):
        try:
            from engine.evaluate import load_wikitext_ids
            from engine.tokenizer import load_tokenizer

            ids, _ = load_wikitext_ids(load_tokenizer(self.mix.tokenizer), split="test")
            return ids
        except SparkNetError as e:
            self.event("warning", f"in-training WikiText-2 evaluation off: {e}")
            return None

    # ------------------------------------------------------------ the loop

    def next_batch(self):
        batch = self.feeder.next()
        return batch[:, :-1], batch[:, 1:]

    def autocast(self):
        if self.use_bf16:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return nullcontext()

    def train_step(self, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
        self.optimizer.set_lr_factor(lr / self.profile.optim.lr)
        loss_sum = torch.zeros((), device=self.device)
        for micro in range(self.grad_accum):
            x, y = self.next_batch()
            sync = micro == self.grad_accum - 1
            ctx = self.model.no_sync() if self.world > 1 and not sync else nullcontext()
            with ctx, self.autocast():
                loss = self.model(x, y)
            (loss / self.grad_accum).backward()
            loss_sum += loss.detach()
        clip = self.profile.optim.grad_clip
        if clip > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        else:
            grad_norm = torch.sqrt(sum((p.grad.float() ** 2).sum() for p in self.model.parameters()
                                       if p.grad is not None))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.feeder.prefetch()  # the next step's first batch, drawn while this step runs on the GPU
        return loss_sum / self.grad_accum, grad_norm

    @torch.no_grad()
    def validation_loss(self) -> float:
        from engine.data import validation_batches

        p = self.profile
        model = self.raw_model
        model.eval()
        total, count = 0.0, 0
        for arr in validation_batches(self.mix, p.run.eval_tokens, batch=p.batch.micro_batch,
                                      context=p.model.context):
            batch = torch.from_numpy(arr).to(self.device)
            with self.autocast():
                loss = model(batch[:, :-1], batch[:, 1:])
            total += loss.item() * batch.size(0)
            count += batch.size(0)
        model.train()
        return total / max(1, count)

    def wikitext_ppl(self) -> float | None:
        from engine.evaluate import capped_wikitext_eval

        p = self.profile
        result = capped_wikitext_eval(self.raw_model, self.wikitext_ids, p.run.wikitext_tokens, p.model.context,
                                      min(512, p.model.context), self.device,
                                      autocast_dtype=torch.bfloat16 if self.use_bf16 else None)
        return result["ppl"]

    def weights_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.raw_model.parameters())

    def checkpoint(self, reason: str) -> None:
        if not self.weights_finite():
            raise SparkNetError(f"weights became non-finite by step {self.step}; no checkpoint written; "
                                f"{self.divergence_advice()}")
        self.status(phase="checkpointing")
        self.checkpointed_step = self.step
        if self.is_main:
            loader_states = {str(self.rank): self.feeder.consumed_state()}
            if self.world > 1:
                import torch.distributed as dist

                gathered = [None] * self.world
                dist.all_gather_object(gathered, self.feeder.consumed_state())
                loader_states = {str(r): s for r, s in enumerate(gathered)}
            path = save_checkpoint(self.run_dir, self.step, self.raw_model, self.optimizer, {
                "tokens": self.tokens, "loader": loader_states, "tokenizer": self.mix.tokenizer,
                "elapsed_s": self.elapsed(), "saved_at": utc_now(), "reason": reason,
            }, keep=self.profile.run.keep_checkpoints, on_event=self.event)
            self.event("checkpoint", f"saved {path.name} ({reason})", step=self.step)
        elif self.world > 1:
            import torch.distributed as dist

            dist.all_gather_object([None] * self.world, self.feeder.consumed_state())
        self._barrier()

    def elapsed(self) -> float:
        return getattr(self, "elapsed_before", 0.0) + (time.monotonic() - self.t_start)

    def fail(self, message: str, kind: str = "failed") -> None:
        """The run ends as failed with one line; `kind` is the notification it sends (failed or loss_spike)."""
        try:
            self.status(state="failed", error=message, phase="")
        except OSError:  # a full disk may refuse even this; the line still reaches train.log
            pass
        log.info("error: %s", message)
        try:
            self.event("error", message, step=self.step)
        except OSError:
            pass
        if self.notifier is not None:
            self.notifier.send(kind, message)

    def divergence_advice(self) -> str:
        """Which checkpoint survives, and the exact command that continues from it with a lower rate."""
        newest = next(iter_checkpoints(self.run_dir), None)
        kept = (f"the checkpoint from step {int(newest.name.split('-')[1])} ({newest.name}) is kept" if newest else
                "no checkpoint was written yet, so a resume starts from step 0")
        lr = self.profile.optim.lr / 2
        return (f"{kept}: `sparknet resume {self.run_dir.name} --set optim.lr={lr:.3g}` continues with half the "
                f"learning rate (or check the data)")

    def run(self) -> int:
        p = self.profile
        self.t_start = time.monotonic()
        if self.is_main:
            self._start_telemetry()
        # the first step of a compiled model compiles it, which can take minutes on a small GPU
        self.status(state="running", phase="compiling" if p.run.compile else "training", step=self.step,
                    steps=p.steps, tokens=self.tokens, total_tokens=p.steps * p.tokens_per_step, error=None)
        self.event("started", f"training {p.steps} steps of {p.tokens_per_step} tokens on {self.device}",
                   step=self.step, device=str(self.device), world=self.world)
        self.model.train()
        t_log, tokens_log = time.monotonic(), self.tokens
        recent_losses: list[float] = []
        last_good_loss = None
        try:
            while self.step < p.steps:
                if self._check_stop():
                    return 0
                lr = lr_at(self.step, p)
                loss_t, gnorm_t = self.train_step(lr)
                self.step += 1
                self.tokens += p.tokens_per_step
                if self.rd.status().get("phase") == "compiling":
                    self.status(phase="training")
                last = self.step == p.steps
                log_now = self.step % p.run.log_every == 0 or last
                ck_now = self.step % p.run.checkpoint_every == 0 or last
                eval_now = self.step % p.run.eval_every == 0 or last
                wiki_now = self.wikitext_ids is not None and (self.step % p.run.wikitext_every == 0 or last)
                if not (log_now or ck_now or eval_now or wiki_now):
                    continue
                if self.world > 1:
                    import torch.distributed as dist

                    dist.all_reduce(loss_t)
                    loss_t = loss_t / self.world
                loss, gnorm = loss_t.item(), gnorm_t.item()  # the only host sync in the loop
                if not (math.isfinite(loss) and math.isfinite(gnorm)):
                    self.fail(f"loss became {loss} (grad norm {gnorm}) at step {self.step}; "
                              f"{self.divergence_advice()}")
                    return 1
                if (self.step > p.warmup_steps and len(recent_losses) >= 5
                        and loss > p.run.spike_factor * (sum(recent_losses) / len(recent_losses))):
                    self.fail(f"loss spiked to {loss:.3f} at step {self.step} (recent mean "
                              f"{sum(recent_losses) / len(recent_losses):.3f}); {self.divergence_advice()}, or "
                              f"raise run.spike_factor", kind="loss_spike")
                    return 1
                recent_losses = (recent_losses + [loss])[-20:]
                last_good_loss = loss
                now = time.monotonic()
                tps = (self.tokens - tokens_log) / max(1e-9, now - t_log)
                update_every_s = now - t_log
                t_log, tokens_log = now, self.tokens
                row = {"step": self.step, "tokens": self.tokens, "loss": round(loss, 5), "lr": lr,
                       "grad_norm": round(gnorm, 5), "tokens_per_s": round(tps, 1),
                       "mfu": round(tps * self.flops_per_token / self.peak, 4) if self.peak else None,
                       "elapsed_s": round(self.elapsed(), 2), "epochs": self.loader.epochs(self.feeder.consumed_state())}
                if self.device.type == "cuda":
                    row["gpu_mem_peak_b"] = torch.cuda.max_memory_allocated(self.device)
                if eval_now:
                    row["val_loss"] = round(self.validation_loss(), 5)
                if wiki_now:
                    ppl = self.wikitext_ppl()
                    row["wikitext_ppl"] = round(ppl, 3) if ppl is not None else None
                if self.is_main:
                    self.rd.metric(row)
                    log.info("step %d/%d loss %.4f lr %.2e gnorm %.3f %.0f tok/s%s", self.step, p.steps, loss, lr,
                             gnorm, tps, f" val {row['val_loss']:.4f}" if "val_loss" in row else "")
                remaining = (p.steps - self.step) * p.tokens_per_step
                fields = dict(step=self.step, tokens=self.tokens, loss=row["loss"], tokens_per_s=row["tokens_per_s"],
                              eta_s=round(remaining / tps, 1) if tps > 0 else None, mfu=row["mfu"],
                              update_every_s=round(update_every_s, 2), phase="training")
                if "val_loss" in row:
                    fields["val_loss"] = row["val_loss"]
                self.status(**fields)
                self._thermal_check()
                if ck_now and not last:
                    self.checkpoint("interval")
                    self.status(phase="training")
            self.checkpoint("final")
        except SparkNetError as e:
            self.fail(str(e))
            return 1
        finally:
            if self.sampler:
                self.sampler.stop()
        self.finish(last_good_loss)
        return 0

    def _check_stop(self) -> bool:
        if self.world > 1 and self.step % self.profile.run.log_every:
            return False  # agreeing across processes costs a sync: only on log steps
        stop = self.stop_requested()
        if self.world > 1:
            import torch.distributed as dist

            flag = torch.tensor([1 if stop else 0], device=self.device if self.device.type == "cuda" else "cpu")
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            stop = bool(flag.item())
        if not stop:
            return False
        self.status(state="stopping", phase="checkpointing")
        if self.checkpointed_step != self.step:  # else the interval checkpoint of this very step stands
            self.checkpoint("stop")
        if self.is_main:
            self.rd.clear_stop()
        self.status(state="stopped", phase="", eta_s=None, step=self.step, tokens=self.tokens)
        self.event("stopped", f"stopped at step {self.step}; `sparknet resume {self.run_dir.name}` continues",
                   step=self.step)
        return True

    def finish(self, loss: float | None) -> None:
        if not self.is_main:
            return
        from engine.export import export_hf

        self.status(phase="exporting model")
        tokenizer = None
        try:
            from engine.tokenizer import load_tokenizer

            tokenizer = load_tokenizer(self.mix.tokenizer)
        except SparkNetError as e:
            self.event("warning", f"tokenizer not saved with the model: {e}")
        # written aside and renamed: a model/ folder is always a whole final model
        staging = self.run_dir / ".model.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        export_hf(self.raw_model, staging, tokenizer)
        shutil.rmtree(self.run_dir / "model", ignore_errors=True)
        os.replace(staging, self.run_dir / "model")
        if self.profile.run.final_eval:
            self.status(phase="evaluating")
            try:
                from engine.evaluate import eval_command

                eval_command(str(self.run_dir), stride=None, device=str(self.device.type), wait_for_lock=True,
                             max_tokens=self.profile.run.final_eval_tokens or None)
                self.event("eval", "final evaluation written to eval.json")
            except SparkNetError as e:
                self.event("warning", f"final evaluation skipped: {e}")
        self.status(state="finished", phase="", eta_s=0, finished_at=utc_now())
        final = f"{loss:.4f}" if loss is not None else "unknown"
        self.event("finished", f"finished {self.step} steps, final loss {final}", step=self.step)

    # ------------------------------------------------------------ telemetry and thermals

    def _start_telemetry(self) -> None:
        try:
            from engine.telemetry import TelemetrySampler, ThermalWatch
        except ImportError:
            return
        torch_memory = None
        if self.device.type == "cuda":
            def torch_memory(index: int) -> int | None:
                return torch.cuda.memory_reserved(index) if index == self.device.index else None

        interval = float(os.environ.get("SPARKNET_TELEMETRY_INTERVAL", "5"))
        self.sampler = TelemetrySampler(self.rd.system, interval=interval, torch_memory=torch_memory)
        self.sampler.start()
        if self.sampler.nvml_error:
            log.info("GPU telemetry: %s", self.sampler.nvml_error)
        t = self.profile.thermal
        self.thermal = ThermalWatch(t.warn_c, t.pause_above_c, t.resume_below_c)

    def _thermal_check(self) -> None:
        if not (self.is_main and self.sampler and self.thermal):
            return
        row = self.sampler.latest()
        if row is None:
            return
        for ev in self.thermal.update(row):
            self.event(ev.pop("event"), ev.pop("message", ""), **ev)
        if self.thermal.should_pause:
            from engine.telemetry import wait_while_hot

            self.status(paused="thermal")
            wait_while_hot(self.thermal, self.sampler,
                           lambda ev: self.event(ev.pop("event"), ev.pop("message", ""), **ev),
                           self.stop_requested)
            self.status(paused=None)


def setup_logging(run_dir: Path, rank: int, log_to_file: bool) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout)]
    if log_to_file and rank == 0:  # detached runs already have stdout in train.log
        handlers.append(logging.FileHandler(run_dir / "train.log"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, handlers=handlers,
                        format="%(asctime)s %(message)s", datefmt="%H:%M:%S", force=True)


def run_training(run_dir: Path, resume: bool = False, log_to_file: bool = False, lock=None) -> int:
    """Entry of the training process. Returns the exit code. `lock` is the run's lock when the caller took it;
    otherwise the one handed down is adopted, or the lock is taken here (refused when another process owns it)."""
    from engine.runlock import LockHeld, lock_for_worker

    trainer = Trainer(run_dir, resume)
    if lock is None:
        try:
            lock = lock_for_worker(trainer.run_dir)
        except LockHeld as e:
            print(f"sparknet: error: {e}", file=sys.stderr)
            return 2
    setup_logging(run_dir, trainer.rank, log_to_file)
    signal.signal(signal.SIGTERM, trainer._on_signal)
    signal.signal(signal.SIGINT, trainer._on_signal)
    watch = None
    try:
        if trainer.is_main:
            trainer.rd.update_status(state="preparing", phase="preparing data", pid=os.getpid(),
                                     started_at=trainer.rd.status().get("started_at") or utc_now(), error=None,
                                     paused=None)
            trainer.notifier = Notifier.from_settings(trainer.run_dir.name, lambda m: trainer.event("warning", m))
            watch = StallWatch(trainer.rd, trainer.event)
            watch.start()
        trainer.setup()
        return trainer.run()
    except PrepareStopped:
        trainer.status(state="stopped", phase="", eta_s=None)
        trainer.event("stopped", f"stopped during data preparation; the tokens prepared so far are kept and "
                                 f"`sparknet resume {trainer.run_dir.name}` continues")
        return 0
    except SparkNetError as e:
        trainer.fail(str(e))  # one line, on the console and in train.log
        return 1
    except BaseException as e:
        message = failure_line(e, trainer)
        if message is None:  # a bug, not a user mistake: keep the traceback in train.log
            traceback.print_exc()
            message = f"{e.__class__.__name__}: {e}".splitlines()[0][:300]
        trainer.fail(message)
        return 130 if isinstance(e, KeyboardInterrupt) else 1
    finally:
        if watch is not None:
            watch.stop()
        if trainer.notifier is not None:
            trainer.notifier.close()
        if trainer.world > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
        if lock is not None:
            lock.release()


def failure_line(e: BaseException, trainer: Trainer) -> str | None:
    """One line for a failure the user can act on (disk full, out of memory, interrupted); None for a bug."""
    from engine.checkpoint import disk_full_message, is_disk_full

    if is_disk_full(e):
        return disk_full_message(Path(e.filename or trainer.run_dir), trainer.run_dir)
    if isinstance(e, torch.OutOfMemoryError):
        b = trainer.profile.batch
        fix = (f"--set batch.micro_batch={b.micro_batch // 2} --set batch.grad_accum={b.grad_accum * 2} keeps the "
               f"same tokens per step" if b.micro_batch > 1 else "a smaller model or context is needed")
        return f"out of GPU memory at batch.micro_batch={b.micro_batch}: {fix} (start a new run with it)"
    if isinstance(e, KeyboardInterrupt):
        newest = next(iter_checkpoints(trainer.run_dir), None)
        kept = f"the checkpoint from step {int(newest.name.split('-')[1])} is kept" if newest else "no checkpoint yet"
        return f"interrupted at step {trainer.step} before a checkpoint; {kept}; `sparknet resume` continues"
    return None
