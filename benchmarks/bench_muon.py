"""One Muon step over modern-70m's hidden matrices: engine.optim.Muon (same-shaped matrices orthogonalised as one
batched stack) against torch.optim.Muon (one matrix at a time), same settings, on the GPU.

usage: python benchmarks/bench_muon.py [PROFILE]
Prints the median time of a step of each and their largest relative difference after one step from the same
state (the same bf16 Newton-Schulz in the same form: 0 on the H200, docs/performance.md).
"""

import sys

import torch
import triton.testing

from engine.config import load_profile
from engine.model import build_model
from engine.optim import Muon


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
        results[name] = triton.testing.do_bench(opt.step, warmup=10, rep=200, return_mode="median")
    shapes = sorted({tuple(p.shape) for p in matrices})
    print(f"{len(matrices)} matrices, shapes {shapes}")
    for name, ms in results.items():
        print(f"{name:30s} {ms:7.3f} ms a step")
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


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
