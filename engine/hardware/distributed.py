"""What the trainer needs from torch.distributed, each a no-op for a single process.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; rank 0 writes the run directory.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def ranks() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) for one process."""
    env = os.environ
    return int(env.get("RANK", "0")), int(env.get("WORLD_SIZE", "1")), int(env.get("LOCAL_RANK", "0"))


def start(world: int, use_cuda: bool) -> None:
    if world > 1:
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")


def end() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: torch.nn.Module, world: int, local_rank: int, device: torch.device) -> torch.nn.Module:
    if world <= 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda" else None)


def barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def mean(t: torch.Tensor, world: int) -> torch.Tensor:
    if world <= 1:
        return t
    dist.all_reduce(t)
    return t / world


def any_rank(flag: bool, world: int, device: torch.device) -> bool:
    """True on every rank when it is true on any (a stop asked of one process stops them all)."""
    if world <= 1:
        return flag
    t = torch.tensor([1 if flag else 0], device=device if device.type == "cuda" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def gather(obj, world: int) -> list:
    """Every rank's `obj`, in rank order, on every rank."""
    if world <= 1:
        return [obj]
    out = [None] * world
    dist.all_gather_object(out, obj)
    return out
