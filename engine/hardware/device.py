"""The device a run trains on: which one, what it can do, and its published peak for MFU."""

from __future__ import annotations

import torch

from engine import SparkNetError
from engine.config.loading import Profile

# Dense bf16 tensor-core peaks by device name (published datasheet figures). A GPU
# missing here (the DGX Spark's GB10 has no published dense figure) uses the ceiling
# `sparknet doctor` measured (engine/config/ceilings.py), else run.peak_tflops, else mfu = null.
PEAK_BF16_TFLOPS = [
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0),
    ("GH200", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("A10G", 125.0),
    ("RTX 4090", 165.0),
    ("RTX 3090", 71.0),
]


def peak_flops(device: torch.device, override_tflops: float = 0.0) -> tuple[float | None, str | None]:
    """(the dense bf16 peak in FLOP/s that MFU divides by, where it comes from); (None, None) when nothing says."""
    if override_tflops > 0:
        return override_tflops * 1e12, "run.peak_tflops"
    if device.type != "cuda":
        return None, None
    name = torch.cuda.get_device_name(device)
    for key, tflops in PEAK_BF16_TFLOPS:
        if key in name:
            return tflops * 1e12, "datasheet"
    from engine.config.ceilings import measured_peak_flops

    measured = measured_peak_flops(name)
    return (measured, "measured by sparknet doctor") if measured else (None, None)


def pick_device(profile: Profile, local_rank: int) -> torch.device:
    want = profile.run.device
    if want == "cuda" or (want == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise SparkNetError("run.device is 'cuda' but no CUDA GPU is visible; set run.device = \"auto\" or \"cpu\"")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on `device`: a timer read after it holds the GPU's work, not only its launches."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
