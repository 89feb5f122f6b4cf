"""The output layer + loss of the 70M shape on one GPU: the compiled plain path against the one-pass kernel.

usage: python lab/bench_loss_kernel.py [ROWS]
Prints, for one micro-batch of ROWS tokens (default 24,576 = 24 x 1024): the loss kernel alone at several block
shapes (GB/s counting one read and one write of the logits), then forward + backward of the whole output layer
and loss through each path.
"""

import sys

import torch
import triton.testing

import engine.kernels.output_layer as L
from engine.models.parts import logits_or_loss

VOCAB, PADDED, DIM = 50257, 50304, 512


def median_ms(fn) -> float:
    return triton.testing.do_bench(fn, warmup=50, rep=300, return_mode="median")


def main(argv: list[str]) -> int:
    rows = int(argv[0]) if argv else 24576
    torch.manual_seed(0)
    logits = torch.randn(rows, PADDED, device="cuda", dtype=torch.bfloat16) * 2
    targets = torch.randint(0, VOCAB, (rows,), device="cuda")
    bytes_moved = 2 * logits.numel() * logits.element_size()
    print(f"loss kernel alone, {rows} x {PADDED} bf16 logits (one read + one write = {bytes_moved / 1e9:.2f} GB)")
    chosen = L.BLOCK_COLUMNS, L.KERNEL_WARPS
    for block, warps in ((2048, 4), (4096, 8), (8192, 8), (8192, 16), (16384, 16), (16384, 32)):
        L.BLOCK_COLUMNS, L.KERNEL_WARPS = block, warps
        ms = median_ms(lambda: L.loss_and_grad_(logits, targets, VOCAB))
        print(f"  block {block:5d} warps {warps:2d}: {ms:6.3f} ms  {bytes_moved / ms / 1e6:7.0f} GB/s")
    L.BLOCK_COLUMNS, L.KERNEL_WARPS = chosen

    hidden = (torch.randn(rows, DIM, device="cuda") * 0.5).requires_grad_()
    weight = (torch.randn(PADDED, DIM, device="cuda") * 0.02).requires_grad_()

    @torch.compile
    def plain(h, w, t, vocab):
        return logits_or_loss(h @ w.t(), vocab, t)

    def step(loss_fn):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = loss_fn(hidden, weight, targets, VOCAB)
        loss.backward()
        hidden.grad = weight.grad = None

    matmul_flop = 3 * 2 * rows * DIM * PADDED
    print(f"output layer + loss, forward and backward ({matmul_flop / 1e12:.2f} TFLOP of matrix products)")
    for name, fn in (("compiled plain path", plain), ("one-pass kernel", L.fused_linear_cross_entropy)):
        ms = median_ms(lambda: step(fn))
        print(f"  {name:20s} {ms:7.3f} ms  ({matmul_flop / ms / 1e9:5.0f} TFLOP/s counting the products alone)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
