"""The device a run trains on: which one, what it can do, and its published peak for MFU."""

from __future__ import annotations

import torch

from engine import SparkNetError
from engine.config import Profile

# Dense bf16 tensor-core peaks by device name (published datasheet figures). A GPU
# missing here (the DGX Spark's GB10 has no published dense figure) gets mfu = null
# unless run.peak_tflops is set.
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


def peak_flops(device: torch.device, override_tflops: float = 0.0) -> float | None:
    if override_tflops > 0:
        return override_tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, tflops in PEAK_BF16_TFLOPS:
        if key in name:
            return tflops * 1e12
    return None


def pick_device(profile: Profile, local_rank: int) -> torch.device:
    want = profile.run.device
    if want == "cuda" or (want == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise SparkNetError("run.device is 'cuda' but no CUDA GPU is visible; set run.device = \"auto\" or \"cpu\"")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def select_attention(backend: str, device: torch.device) -> None:
    """Restrict scaled_dot_product_attention to one backend (auto: PyTorch's own choice)."""
    if device.type != "cuda" or backend == "auto":
        return
    b = torch.backends.cuda
    b.enable_flash_sdp(backend == "flash")
    b.enable_mem_efficient_sdp(backend == "efficient")
    b.enable_math_sdp(backend == "math")
    if hasattr(b, "enable_cudnn_sdp"):
        b.enable_cudnn_sdp(backend == "cudnn")


def fp8_products_available(cuda_capability: tuple[int, int] | None) -> bool:
    """FP8 products run on CUDA GPUs of compute capability 8.9 or newer, and off CUDA (None) through PyTorch's own
    implementation of the same arithmetic."""
    return cuda_capability is None or tuple(cuda_capability) >= (8, 9)
