"""Where a training step's GPU time goes: first phase by phase (forward and backward, the gradient clip, each
optimizer, zero_grad, drawing the next batch; CUDA events over steps synchronised one by one, so a little slower
than the bench's) with the host's time to issue each phase beside it, then
the top CUDA kernels of a few steps of a profile, and how long the GPU sat idle between them (wall time of the
steps against the kernels' total, and the longest gaps with what the host was running meanwhile: where the
host is behind, the gap ends when it launches the next kernel), and whether the memory allocator still asks the
driver for memory in the steady state (each cudaMalloc or cudaFree can stall the host).

usage: python lab/profile_step.py PROFILE MIX [key=value ...]   (PROFILE_STEPS=N profiles N steps, default 3)
"""

import os
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from engine.cli.throughput import private_trainer
from engine.config.loading import load_mix, load_profile
from engine.train.trainer import Trainer

STEP_RANGE = "profiled step"


def main(argv: list[str]) -> int:
    steps = int(os.environ.get("PROFILE_STEPS", "3"))
    prof, mix = load_profile(argv[0], argv[2:]), load_mix(argv[1])
    with private_trainer(prof, mix) as trainer:
        for _ in range(4):  # compile and warm up
            trainer.train_step(1.0)
        torch.cuda.synchronize()
        print_phases(trainer, max(steps, 10))
        before = torch.cuda.memory_stats()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
            t0 = time.perf_counter()
            for i in range(steps):
                with record_function(f"{STEP_RANGE} {i}"):  # also a range on the GPU's timeline
                    trainer.train_step(1.0)
            torch.cuda.synchronize()
            wall_ms = (time.perf_counter() - t0) * 1e3
        print_driver_calls(before, torch.cuda.memory_stats(), steps)
    events = [e for e in p.key_averages() if is_kernel(e)]
    total = sum(e.self_device_time_total for e in events)
    launches = sum(e.count for e in events) // steps
    print(f"total CUDA time over {steps} steps: {total / 1e3:.1f} ms; wall time {wall_ms:.1f} ms; "
          f"{launches} kernels, copies and fills a step")
    print_gaps(p)
    groups: dict[str, float] = {}
    for e in events:
        groups[kernel_group(e.key)] = groups.get(kernel_group(e.key), 0.0) + e.self_device_time_total
    for name, t in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"{t / total:6.1%} {t / steps / 1e3:8.2f} ms/step  {name}")
    for e in sorted(events, key=lambda e: -e.self_device_time_total)[:40]:
        print(f"{e.self_device_time_total / total:6.1%} {e.self_device_time_total / steps / 1e3:8.2f} ms/step  "
              f"x{e.count // steps:<4d} "
              f"{e.key[:110]}")
    return 0


def is_kernel(event) -> bool:
    """A GPU kernel, copy or fill; not a range such as an optimizer's step, which the profiler also puts on the GPU's
    timeline (counted, it would add the step's time twice and hide the gaps inside it)."""
    return event.device_type.name == "CUDA" and not getattr(event, "is_user_annotation", False)


def phase_marks(trainer: Trainer, clock) -> list:
    """(phase, clock()) as each phase of one step has been issued (forward and backward, clip, each optimizer,
    zero_grad, the next batch), after a ("start", clock()) taken before the step."""
    marks = [("start", clock())]
    trainer.train_step(1.0, mark=lambda phase: marks.append((phase, clock())))
    return marks


def durations(marks: list, between) -> dict[str, float]:
    """Milliseconds of each phase: `between(a, b)` for consecutive marks."""
    return {phase: between(marks[i][1], t) for i, (phase, t) in enumerate(marks[1:])}


def cuda_event():
    event = torch.cuda.Event(enable_timing=True)
    event.record()
    return event


def print_phases(trainer: Trainer, steps: int) -> None:
    """The GPU's time per phase (CUDA events, each step synchronised), then the host's: how long issuing each
    phase takes, three steps from a synchronised start. Where the host needs as long as the GPU, it sets the pace."""
    gpu: dict[str, float] = {}
    t0 = time.perf_counter()
    for _ in range(steps):
        marks = phase_marks(trainer, cuda_event)
        torch.cuda.synchronize()
        for phase, ms in durations(marks, lambda a, b: a.elapsed_time(b)).items():
            gpu[phase] = gpu.get(phase, 0.0) + ms / steps
    wall_ms = (time.perf_counter() - t0) * 1e3 / steps
    print(f"synced step {wall_ms:.2f} ms on the GPU: " + ", ".join(f"{n} {ms:.2f} ms" for n, ms in gpu.items()))
    host: dict[str, float] = {}
    t0 = time.perf_counter()
    for _ in range(3):  # within three steps the feeder's ring of four buffers never makes the host wait
        for phase, ms in durations(phase_marks(trainer, time.perf_counter), lambda a, b: (b - a) * 1e3).items():
            host[phase] = host.get(phase, 0.0) + ms / 3
    issued_ms = (time.perf_counter() - t0) * 1e3 / 3
    torch.cuda.synchronize()
    done_ms = (time.perf_counter() - t0) * 1e3 / 3
    print(f"host: a step issued in {issued_ms:.2f} ms, done in {done_ms:.2f} ms (3 steps from a sync): "
          + ", ".join(f"{n} {ms:.2f} ms" for n, ms in host.items()))


def print_gaps(p) -> None:
    kernels = sorted((e for e in p.events() if is_kernel(e)), key=lambda e: e.time_range.start)
    if not kernels:
        return
    gaps, end, before = [], kernels[0].time_range.end, kernels[0].name
    for e in kernels[1:]:
        if e.time_range.start > end:
            gaps.append((e.time_range.start - end, before, e.name, e.time_range.start))
        if e.time_range.end > end:
            end, before = e.time_range.end, e.name
    span = (end - kernels[0].time_range.start) / 1e3
    idle = sum(g[0] for g in gaps) / 1e3
    print(f"first kernel to last: {span:.1f} ms, GPU idle between kernels {idle:.1f} ms ({idle / span:.1%})")
    print_idle_per_step(p, gaps)
    host = [e for e in p.events() if e.device_type.name == "CPU"]
    for g, a, b, at in sorted(gaps, reverse=True)[:8]:
        print(f"  gap {g / 1e3:7.3f} ms  after {a[:60]}  before {b[:60]}")
        print(f"      host meanwhile: {host_during(host, at - g / 2) or 'nothing recorded'}")


def print_idle_per_step(p, gaps: list) -> None:
    """The GPU's idle time in each profiled step (the gaps ending inside the step's range on the GPU's timeline):
    the first step starts from a sync, so the host has not yet built the lead it keeps in a run."""
    ranges = sorted((e for e in p.events() if e.device_type.name == "CUDA" and e.name.startswith(STEP_RANGE)),
                    key=lambda e: e.time_range.start)
    if not ranges:
        return
    idle = [sum(g for g, _, _, at in gaps if r.time_range.start <= at <= r.time_range.end) / 1e3 for r in ranges]
    print("GPU idle in each profiled step: " + ", ".join(f"{ms:.2f} ms" for ms in idle)
          + " (the first starts from a sync)")


def host_during(host_events, at: float) -> str:
    """The innermost host operations running at time `at` (microseconds), shortest first."""
    running = sorted((e for e in host_events if e.time_range.start <= at <= e.time_range.end),
                     key=lambda e: e.time_range.end - e.time_range.start)
    names = []
    for e in running:
        if e.name not in names:
            names.append(e.name)
    return " < ".join(n[:50] for n in names[:4])


def print_driver_calls(before: dict, after: dict, steps: int) -> None:
    keys = ("num_device_alloc", "num_device_free", "num_alloc_retries")
    calls = {k: after.get(k, 0) - before.get(k, 0) for k in keys}
    print(f"memory allocator over {steps} steps: {calls['num_device_alloc']} cudaMalloc, "
          f"{calls['num_device_free']} cudaFree, {calls['num_alloc_retries']} retries after freeing the cache")


GROUPS = (
    ("matrix products", ("nvjet", "gemm", "cutlass", "sm90_xmma", "cublas")),
    ("attention", ("flash", "fmha", "cudnn", "attention")),
    ("loss kernels", ("_loss_and_grad", "_transpose_kernel")),
    ("GELU kernels", ("_gelu_",)),
    ("optimizer", ("multi_tensor", "adam", "foreach")),
    ("embedding and scatter", ("embedding", "index", "scatter")),
    ("compiled elementwise, norm and reduction kernels", ("triton_",)),
    ("copies and fills", ("memcpy", "memset", "copy", "fill")),
)


def kernel_group(name: str) -> str:
    low = name.lower()
    for group, keys in GROUPS:
        if any(k in low for k in keys):
            return group
    return "other"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
