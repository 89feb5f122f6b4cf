"""What launching a training step's kernels one by one costs: the engine's step as `sparknet train` runs it, against
the same work captured once as a CUDA graph and replayed, first forward, loss and backward alone (the clip and the
optimizers launched as usual), then the whole step at a fixed learning rate. The graphed steps train on one
batch over and over: a measure of launch overhead, not a training path. CUDA only.

usage: python lab/graph_step.py PROFILE MIX [key=value ...]
"""

import sys
import time

import torch

from engine.cli.throughput import private_trainer
from engine.config.loading import load_mix, load_profile

STEPS = 30


def ms_per_call(fn, n: int = STEPS) -> float:
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / n * 1e3


def captured(work, warmups: int = 3) -> torch.cuda.CUDAGraph:
    """`work` run a few times on a side stream (the libraries set up their per-stream state), then captured."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmups):
            work()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        work()
    return graph


def main(argv: list[str]) -> int:
    if not torch.cuda.is_available():
        print("graph_step.py: CUDA graphs need a CUDA device", file=sys.stderr)
        return 2
    prof, mix = load_profile(argv[0], argv[2:]), load_mix(argv[1])
    with private_trainer(prof, mix) as trainer:
        for _ in range(5):  # compile and warm up
            trainer.train_step(1.0)
        print(f"step, kernels launched one by one: {ms_per_call(lambda: trainer.train_step(1.0)):.2f} ms")
        model, optimizer = trainer.model, trainer.optimizer
        params = [p for p in model.parameters() if p.requires_grad]
        x, y = (t.clone() for t in trainer.next_batch())

        def forward_backward():
            optimizer.zero_grad(set_to_none=True)  # the captured backward writes new gradients, it adds to none
            with trainer.autocast():
                loss = model(x, y)
            loss.backward()

        graph = captured(forward_backward)
        grads = [p.grad for p in params]  # the graph's own memory: every replay writes them there

        def graphed_then_launched():
            graph.replay()
            for p, g in zip(params, grads):
                p.grad = g
            torch.nn.utils.clip_grad_norm_(params, prof.optim.grad_clip)
            optimizer.step()

        print(f"forward and backward graphed, clip and optimizers launched: {ms_per_call(graphed_then_launched):.2f} ms")
        print(f"forward and backward graphed, alone: {ms_per_call(graph.replay):.2f} ms")
        for group in optimizer.param_groups:
            if "capturable" in group:
                group["capturable"] = True  # AdamW's step count stays on the device

        def whole_step():
            forward_backward()
            torch.nn.utils.clip_grad_norm_(params, prof.optim.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        whole = captured(whole_step)
        print(f"whole step graphed: {ms_per_call(whole.replay):.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
