"""Batches from the loader to the device, overlapped with compute."""

from __future__ import annotations

import time

import torch


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
        self.draw_s = 0.0  # host time spent drawing batches from the loader (the bench's data wait)

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
        t = time.perf_counter()
        arr = self.loader.next_batch()
        self.draw_s += time.perf_counter() - t
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
