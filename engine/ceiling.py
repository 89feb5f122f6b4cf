"""The device's measured ceilings, saved for MFU and time estimates, and the tokens/s they imply.

The GB10 has no published dense bf16 peak, so a run's MFU there would have
nothing to divide by; `sparknet doctor` measures a large bf16 matrix product
and a device copy and saves both per device name in the cache folder. The
trainer's MFU then uses, in order: run.peak_tflops, the datasheet figure of
engine/device.py, this measured ceiling (and says which).

The tokens/s a device implies for a profile is a projection from one measured
reference (an H200, docs/performance.md): the step's time is split into the
part bound by matrix arithmetic (products and attention) and the part bound by
memory traffic, each scaled by this device's measured ceiling against the
reference's, and each fast path the device cannot run costs what the reference
measured for it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from engine.rundir import utc_now

# The reference, docs/performance.md ("The fast paths, each forced off"): `sparknet doctor` (its two ceilings) and
# `sparknet bench --profile codelion-70m --steps 40` (the median of two runs) in one call on one NVIDIA H200
# (PyTorch 2.11.0+cu130, Triton 3.6.0). compute_share is the share of a codelion-70m step's CUDA kernel time in
# matrix products and attention (its profile in docs/performance.md); each fast path's figure is the profile's
# tokens/s with that path forced off, as a fraction of the tokens/s with every path on, from one call.
REFERENCE = {
    "device": "NVIDIA H200",
    "matmul_tflops": 789.3,
    "bandwidth_gbs": 4212.0,
    "tokens_per_s": 1_064_570.0,
    "flops_per_token": 456.9e6,
    "compute_share": 0.653,
    "without": {"compile": 0.769, "fused_loss": 0.871, "fp8_head": 0.924, "fused_gelu": 0.988,
                "bf16_residual": 0.951},
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_matmul_tflops(device: torch.device) -> float:
    """TFLOP/s of a large square matrix product: bf16 8192^3 on CUDA, fp32 1024^3 on the CPU."""
    cuda = device.type == "cuda"
    n, reps, dtype = (8192, 10, torch.bfloat16) if cuda else (1024, 5, torch.float32)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e12


def measure_bandwidth_gbs(device: torch.device) -> float:
    """GB/s of a device copy, counting the bytes read and the bytes written (1 GiB on CUDA, 256 MiB on the CPU)."""
    n_bytes = (1 << 30) if device.type == "cuda" else (1 << 28)
    src = torch.empty(n_bytes // 4, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    dst.copy_(src)
    _sync(device)
    reps = 10
    t0 = time.perf_counter()
    for _ in range(reps):
        dst.copy_(src)
    _sync(device)
    return 2 * n_bytes * reps / (time.perf_counter() - t0) / 1e9


def projected_tokens_per_s(matmul_tflops: float, bandwidth_gbs: float, flops_per_token: float,
                           off: list[str] = ()) -> float:
    """Tokens/s a device with these ceilings implies for a model of `flops_per_token`, with the fast paths in `off`
    running their reference path; a projection from REFERENCE, not a measurement."""
    ref = REFERENCE
    share = ref["compute_share"]
    slowdown = share * ref["matmul_tflops"] / matmul_tflops + (1 - share) * ref["bandwidth_gbs"] / bandwidth_gbs
    tps = ref["tokens_per_s"] * ref["flops_per_token"] / flops_per_token / slowdown
    for piece in off:
        tps *= ref["without"].get(piece, 1.0)
    return tps


def ceilings_path() -> Path:
    from engine.data import cache_root

    return cache_root() / "ceilings.json"


def save_ceilings(device_name: str, figures: dict) -> Path:
    path = ceilings_path()
    saved = read_ceilings()
    saved[device_name] = {**figures, "measured_at": utc_now()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(saved, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def read_ceilings() -> dict:
    try:
        data = json.loads(ceilings_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def measured_peak_flops(device_name: str) -> float | None:
    figure = (read_ceilings().get(device_name) or {}).get("matmul_tflops")
    return float(figure) * 1e12 if isinstance(figure, (int, float)) and figure > 0 else None
