"""One Muon step over modern-70m's hidden matrices: engine.optim.Muon (same-shaped matrices orthogonalised as one
batched stack) against torch.optim.Muon (one matrix at a time), same settings, on the GPU.

usage: python lab/bench_muon.py [PROFILE]
Prints the median wall time of a step of each, the GPU's kernel time per step (what a training step pays while
the host runs ahead: a step this small is issued more slowly than it runs, so its wall time is mostly the host's),
and their largest relative difference after one step from the same state (the same bf16 Newton-Schulz in the
same form: 0 on the H200, docs/lab/performance.md).
"""

import sys

import torch
import triton.testing
from profile_step import is_kernel
from torch.profiler import ProfilerActivity, profile

from engine.config.loading import load_profile
from engine.models.registry import build_model
from engine.train.optim import Muon


def main(argv: list[str]) -> int:
    profile = load_profile(argv[0] if argv else "modern-70m", [])
    torch.manual_seed(0)
    model = build_model(profile.model).cuda()
    matrices = model.matrix_parameters()
    for p in matrices:
        p.grad = torch.randn_like(p)
    o = profile.optim
    ours = Muon(matrices, lr=o.muon_lr, momentum=o.muon_momentum, weight_decay=0.0)
    theirs = torch.optim.Muon(matrices, lr=o.muon_lr, momentum=o.muon_momentum, weight_decay=0.0,
                              adjust_lr_fn="original")
    start = [p.detach().clone() for p in matrices]
    results = {}
    for name, opt in (("engine.optim.Muon (batched)", ours), ("torch.optim.Muon", theirs)):
        wall = triton.testing.do_bench(opt.step, warmup=10, rep=200, return_mode="median")
        results[name] = (wall, *kernel_time(opt.step))
    shapes = sorted({tuple(p.shape) for p in matrices})
    print(f"{len(matrices)} matrices, shapes {shapes}")
    for name, (wall, kernels, launches) in results.items():
        print(f"{name:30s} {wall:7.3f} ms a step, {kernels:7.3f} ms of kernels ({launches} launches)")
    after = []
    for opt in (ours, theirs):
        for p, p0 in zip(matrices, start):
            p.data.copy_(p0)
        opt.state.clear()
        opt.step()
        after.append([p.detach().clone() for p in matrices])
    diff = max(((a - b).norm() / (a - p0).norm()).item() for a, b, p0 in zip(*after, start))
    print(f"largest relative difference of one step's update: {diff:.2e}")
    return 0


def kernel_time(fn, steps: int = 20) -> tuple[float, int]:
    """Milliseconds of GPU kernels per call of fn, and the kernels launched per call."""
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            fn()
        torch.cuda.synchronize()
    kernels = [e for e in prof.key_averages() if is_kernel(e)]
    return sum(e.self_device_time_total for e in kernels) / steps / 1e3, sum(e.count for e in kernels) // steps


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
