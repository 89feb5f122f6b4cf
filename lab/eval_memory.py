"""The memory a run's first in-training evaluation takes against its steady training step: the device's used memory
(what the driver reports, all processes), the allocator's peak and reserved bytes, and the process's resident
memory with its children (the compiler's workers), each sampled every 20 ms. On a machine whose memory is unified
(the DGX Spark) the device's and the host's figures come out of the same memory.

The trainer trains as `sparknet train` does; after a few steady steps it evaluates as the run does at an
evaluation step (the held-out loss and, where the run has WikiText-2, the capped perplexity), then trains on.

usage: python lab/eval_memory.py PROFILE MIX [key=value ...]
"""

import sys
import threading
import time

import psutil
import torch

from engine.cli.throughput import private_trainer
from engine.config.loading import load_mix, load_profile
from engine.hardware.memory_guard import GIB


class Sampler:
    """The highest of each figure since the last `take()`, sampled on a thread."""

    def __init__(self, every_s: float = 0.02):
        self.every_s, self.peaks, self._stop = every_s, {}, threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> dict:
        me = psutil.Process()
        rss = me.memory_info().rss + sum(c.memory_info().rss for c in me.children(recursive=True)
                                         if c.is_running())
        free, total = torch.cuda.mem_get_info()
        return {"device_used": total - free, "host_rss": rss, "reserved": torch.cuda.memory_reserved()}

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                sample = self._sample()
            except psutil.Error:
                continue  # a compiler worker that ended while it was read
            with self._lock:
                for key, value in sample.items():
                    self.peaks[key] = max(self.peaks.get(key, 0), value)

    def take(self) -> dict:
        torch.cuda.synchronize()
        time.sleep(2 * self.every_s)
        with self._lock:
            peaks, self.peaks = self.peaks, {}
        peaks["allocated_peak"] = torch.cuda.max_memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        return peaks

    def stop(self) -> None:
        self._stop.set()


def row(name: str, peaks: dict, seconds: float) -> str:
    cells = "  ".join(f"{peaks[k] / GIB:8.2f}" for k in ("device_used", "reserved", "allocated_peak", "host_rss"))
    return f"{name:<34} {cells}  {seconds:7.2f}"


def main(argv: list[str]) -> int:
    prof, mix = load_profile(argv[0], argv[2:]), load_mix(argv[1])
    print(f"{'GiB (peak in the phase)':<34} {'device':>8}  {'reserved':>8}  {'alloc':>8}  {'host RSS':>8}  seconds")
    with private_trainer(prof, mix) as trainer:
        sampler = Sampler()
        sampler.take()
        phases = [("first step (compiles)", 1), ("steady steps", 10), ("first evaluation", 0),
                  ("steps after it", 10), ("second evaluation", 0)]
        for name, steps in phases:
            t = time.perf_counter()
            for _ in range(steps):
                trainer.train_step(1.0)
            if not steps:  # the evaluation a run makes at an evaluation step, by the same call
                trainer.held_out(evaluate=True, wikitext=trainer.validator.wikitext_ids is not None)
            print(row(name, sampler.take(), time.perf_counter() - t), flush=True)
        sampler.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
