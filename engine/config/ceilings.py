"""The device's measured ceilings, saved for MFU and time estimates, and the tokens/s they imply.

The GB10 has no published dense bf16 peak, so a run's MFU there would have
nothing to divide by; `sparknet doctor` measures a large bf16 matrix product
and a device copy (engine/cli/doctor.py) and saves both per device name in the
cache folder. No torch here: the panel's New run screen reads the saved figures
for its time estimate. The
trainer's MFU then uses, in order: run.peak_tflops, the datasheet figure of
engine/hardware/device.py, this measured ceiling (and says which).

The tokens/s a device implies for a profile is a projection from one measured
reference (an H200, docs/lab/performance.md): the step's time is split into the
part bound by matrix arithmetic (products and attention) and the part bound by
memory traffic, each scaled by this device's measured ceiling against the
reference's, and each fast path the device cannot run costs what the reference
measured for it.
"""

from __future__ import annotations

from pathlib import Path

from engine import SparkNetError
from engine.files import read_json, utc_now, write_json_atomic

# The reference, docs/lab/performance.md ("The fast paths, each forced off"): `sparknet doctor` (its two ceilings) and
# `sparknet bench --profile codelion-70m --steps 40` (the median of two runs) in one call on one NVIDIA H200
# (PyTorch 2.11.0+cu130, Triton 3.6.0). compute_share is the share of a codelion-70m step's CUDA kernel time in
# matrix products and attention (its profile in docs/lab/performance.md); each fast path's figure is the profile's
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
    from engine.config.paths import cache_root

    return cache_root() / "ceilings.json"


def save_ceilings(device_name: str, figures: dict) -> Path:
    path = ceilings_path()
    write_json_atomic(path, {**read_ceilings(), device_name: {**figures, "measured_at": utc_now()}})
    return path


def read_ceilings() -> dict:
    """What `sparknet doctor` measured on this machine; nothing where the cache folder cannot be one."""
    try:
        return read_json(ceilings_path()) or {}
    except SparkNetError:
        return {}


def measured_peak_flops(device_name: str) -> float | None:
    figure = (read_ceilings().get(device_name) or {}).get("matmul_tflops")
    return float(figure) * 1e12 if isinstance(figure, (int, float)) and figure > 0 else None


def projected_from_saved(flops_per_token: float, saved: dict) -> tuple[float, str] | None:
    """(projected tokens/s, device name) from the GPU `sparknet doctor` measured last on this machine, in `saved`
    (read_ceilings' figures); None when it measured none."""
    gpus = [(v.get("measured_at", ""), name, v) for name, v in saved.items()
            if name != "cpu" and isinstance(v, dict)]
    for _, name, v in sorted(gpus, key=lambda g: str(g[0]), reverse=True):
        tflops, gbs = v.get("matmul_tflops"), v.get("bandwidth_gbs")
        if isinstance(tflops, (int, float)) and isinstance(gbs, (int, float)) and tflops > 0 and gbs > 0:
            return projected_tokens_per_s(tflops, gbs, flops_per_token, v.get("fast_paths_off", [])), name
    return None
