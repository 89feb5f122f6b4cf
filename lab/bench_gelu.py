"""GPT-2's MLP activation at the 70M shape (122,880 tokens x 2,048): the fused gelu(h + bias) kernels at several
block sizes and shapes, and the compiled plain forward for reference.

usage: python lab/bench_gelu.py
GB/s counts the forward's read of h and write of the output, and the backward's reads of h and the incoming
gradient and write of the gradient (bf16).
"""

import sys

import torch
import torch.nn.functional as F
import triton.testing

import engine.kernels.gelu as G

ROWS, COLS = 122880, 2048


def median_ms(fn) -> float:
    return triton.testing.do_bench(fn, warmup=20, rep=200, return_mode="median")


def main() -> int:
    torch.manual_seed(0)
    h = torch.randn(ROWS, COLS, device="cuda", dtype=torch.bfloat16)
    bias = torch.randn(COLS, device="cuda")
    grad = torch.randn_like(h)
    tensor_bytes = h.numel() * 2

    @torch.compile
    def plain(h, bias):
        return F.gelu(h.float() + bias, approximate="tanh").to(torch.bfloat16)

    ms = median_ms(lambda: plain(h, bias))
    print(f"compiled plain forward       {ms:6.3f} ms  {2 * tensor_bytes / ms / 1e6:5.0f} GB/s")
    chosen = G.FORWARD_BLOCK, G.FORWARD_WARPS
    for shape in ((1024, 4), (2048, 8), (4096, 8)):
        G.FORWARD_BLOCK, G.FORWARD_WARPS = shape
        forward = median_ms(lambda: G.gelu_bias(h, bias))
        print(f"forward, {shape[0]:4d} elements per program, {shape[1]} warps: {forward:6.3f} ms "
              f"{2 * tensor_bytes / forward / 1e6:5.0f} GB/s")
    G.FORWARD_BLOCK, G.FORWARD_WARPS = chosen
    chosen = G.BLOCK_ROWS, G.BLOCK_COLS, G.ROWS_PER_STEP, G.WARPS
    for shape in ((256, 128, 32, 4), (256, 256, 16, 4), (256, 256, 32, 8), (512, 128, 32, 4), (128, 128, 16, 4),
                  (256, 64, 64, 4), (256, 512, 8, 4), (256, 256, 16, 8), (256, 2048, 2, 4), (256, 2048, 4, 8)):
        G.BLOCK_ROWS, G.BLOCK_COLS, G.ROWS_PER_STEP, G.WARPS = shape
        backward = median_ms(lambda: G.gelu_bias_backward(grad, h, bias))
        print(f"backward with the bias sum, rows {shape[0]:3d} cols {shape[1]:4d} step {shape[2]:2d} warps {shape[3]}: "
              f"{backward:6.3f} ms {3 * tensor_bytes / backward / 1e6:5.0f} GB/s")
    G.BLOCK_ROWS, G.BLOCK_COLS, G.ROWS_PER_STEP, G.WARPS = chosen
    return 0


if __name__ == "__main__":
    sys.exit(main())
