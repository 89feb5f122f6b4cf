"""Shared memory and registers of each of the engine's Triton kernels at the configurations it launches, on one GPU,
against what one block of this device may use.

usage: python lab/kernel_resources.py

A configuration that asks for more shared memory than a block may have fails with OutOfResources (the DGX Spark's
GB10 allows 101,376 bytes per block; an H100 or H200 232,448): the start-up proof would turn that piece off.
"""

from __future__ import annotations

import torch

from engine.kernels import gelu, qk_rope
from engine.kernels import output_layer as losses


def launch_all(device: torch.device) -> dict:
    rows, cols, vocab = 256, 50_304, 50_257
    logits = torch.randn(rows, cols, device=device, dtype=torch.bfloat16)
    targets = torch.randint(0, vocab, (rows,), device=device)
    out = {}
    f32 = lambda n: torch.empty(n, device=device, dtype=torch.float32)  # noqa: E731
    scale = torch.ones(1, device=device)
    out["one-pass loss"] = losses._loss_and_grad_kernel[(rows,)](
        logits, logits.stride(0), targets, f32(rows), f32(rows), scale, logits, N_COLUMNS=cols, VOCAB=vocab,
        WRITE_GRAD=True, BLOCK=losses.BLOCK_COLUMNS, num_warps=losses.KERNEL_WARPS)
    grad = torch.empty(rows, cols, device=device, dtype=torch.float8_e5m2)
    out["FP8 one-pass loss"] = losses._loss_and_grad_kernel[(rows,)](
        logits, logits.stride(0), targets, f32(rows), f32(rows), scale, grad, N_COLUMNS=cols, VOCAB=vocab,
        WRITE_GRAD=True, BLOCK=losses.PAIR_BLOCK_COLUMNS, num_warps=losses.PAIR_KERNEL_WARPS)
    grad_t = torch.empty(cols, rows, device=device, dtype=torch.float8_e5m2)
    tile_r, tile_c = losses.TRANSPOSE_TILE_R, losses.TRANSPOSE_TILE_C
    out["FP8 transpose"] = losses._transpose_kernel[(rows // tile_r, cols // tile_c + 1)](
        grad, grad_t, rows, cols, TILE_R=tile_r, TILE_C=tile_c, num_warps=losses.TRANSPOSE_WARPS)
    h = torch.randn(rows * 16, 2048, device=device, dtype=torch.bfloat16)
    bias = torch.zeros(2048, device=device, dtype=torch.bfloat16)
    out["GELU forward"] = gelu._gelu_forward_kernel[(h.numel() // gelu.FORWARD_BLOCK,)](
        h, bias, torch.empty_like(h), h.numel(), N_COLS=2048, BLOCK=gelu.FORWARD_BLOCK, num_warps=gelu.FORWARD_WARPS)
    partial = torch.empty(h.size(0) // gelu.BLOCK_ROWS + 1, 2048, device=device)
    out["GELU backward"] = gelu._gelu_backward_kernel[gelu._grid(h.size(0), 2048)](
        h, h, bias, torch.empty_like(h), partial, h.size(0), N_COLS=2048, BLOCK_ROWS=gelu.BLOCK_ROWS,
        BLOCK_COLS=gelu.BLOCK_COLS, ROWS_PER_STEP=gelu.ROWS_PER_STEP, num_warps=gelu.WARPS)
    out.update(launch_qk_rope(device))
    return out


def launch_qk_rope(device: torch.device) -> dict:
    B, T, H, D = 4, 1024, 8, 64
    x = torch.randn(B, T, H, D, device=device, dtype=torch.bfloat16)
    weight = torch.ones(D, device=device)
    cos = sin = torch.ones(T, D, device=device, dtype=torch.bfloat16)
    rows, strides = B * T * H, x.stride()[:3]
    out = {"QK-norm and rotary forward": qk_rope._forward_kernel[(rows // qk_rope.FORWARD_ROWS,)](
        x, weight, cos, sin, torch.empty_like(x), rows, T, H, *strides, 1e-6, HALF=D // 2, ROWS=qk_rope.FORWARD_ROWS,
        num_warps=qk_rope.FORWARD_WARPS)}
    partial = torch.empty(rows // qk_rope.BLOCK_ROWS, D, device=device)
    out["QK-norm and rotary backward"] = qk_rope._backward_kernel[(rows // qk_rope.BLOCK_ROWS,)](
        x, x, weight, cos, sin, torch.empty_like(x), partial, rows, T, H, *strides, *strides, 1e-6, HALF=D // 2,
        BLOCK_ROWS=qk_rope.BLOCK_ROWS, ROWS_PER_STEP=qk_rope.ROWS_PER_STEP, num_warps=qk_rope.WARPS)
    return out


def main() -> None:
    device = torch.device("cuda", 0)
    props = torch.cuda.get_device_properties(device)
    limit = getattr(props, "shared_memory_per_block_optin", None)
    print(f"{props.name}: {limit:,} bytes of shared memory per block (opt-in)")
    for name, kernel in launch_all(device).items():
        meta = kernel.metadata
        shared = getattr(meta, "shared", None)
        regs = getattr(kernel, "n_regs", None)
        print(f"{name:<20} shared {shared:>8,} bytes  registers {regs}  warps {getattr(meta, 'num_warps', '?')}")


if __name__ == "__main__":
    main()
