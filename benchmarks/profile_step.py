"""Where a training step's GPU time goes: the top CUDA kernels of a few steps of a profile.

usage: python benchmarks/profile_step.py PROFILE MIX [key=value ...]
"""

import sys
import tempfile
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from engine.config import load_mix, load_profile
from engine.rundir import create_run
from engine.train import Trainer


def main(argv: list[str]) -> int:
    prof, mix = load_profile(argv[0], argv[2:]), load_mix(argv[1])
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(create_run(prof, mix, [], Path(tmp) / "p"), resume=False)
        trainer.setup()
        for _ in range(4):  # compile and warm up
            trainer.train_step(prof.optim.lr)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as p:
            for _ in range(3):
                trainer.train_step(prof.optim.lr)
            torch.cuda.synchronize()
    events = [e for e in p.key_averages() if e.device_type.name == "CUDA"]
    total = sum(e.self_device_time_total for e in events)
    print(f"total CUDA time over 3 steps: {total / 1e3:.1f} ms")
    groups: dict[str, float] = {}
    for e in events:
        groups[kernel_group(e.key)] = groups.get(kernel_group(e.key), 0.0) + e.self_device_time_total
    for name, t in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"{t / total:6.1%} {t / 3e3:8.2f} ms/step  {name}")
    for e in sorted(events, key=lambda e: -e.self_device_time_total)[:40]:
        print(f"{e.self_device_time_total / total:6.1%} {e.self_device_time_total / 3e3:8.2f} ms/step  x{e.count // 3:<4d} "
              f"{e.key[:110]}")
    return 0


GROUPS = (
    ("matrix products", ("nvjet", "gemm", "cutlass", "sm90_xmma", "cublas")),
    ("attention", ("flash", "fmha", "cudnn", "attention")),
    ("loss kernel", ("_loss_and_grad",)),
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
