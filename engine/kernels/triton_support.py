"""Triton where the installed torch has it, and whether a tensor's kernels run on it.

Triton ships with CUDA builds of torch; CPU builds may not have it. The engine's own
kernels (engine/kernels/output_layer.py, gelu.py, qk_rope.py) then run the same arithmetic as torch
operations, and the kernels layer (engine/kernels/choice.py) reports why Triton is off.
"""

from __future__ import annotations

import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the installed torch
    triton = tl = None

__all__ = ["triton", "tl", "use_triton"]


def use_triton(t: torch.Tensor) -> bool:
    """Triton runs the kernel on CUDA tensors (or anywhere when TRITON_INTERPRET=1, as the tests do on CPU)."""
    return triton is not None and (t.is_cuda or os.environ.get("TRITON_INTERPRET") == "1")
