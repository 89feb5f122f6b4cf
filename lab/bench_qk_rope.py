"""QK-norm with rotary embedding at modern-70m's shape (60 x 1,024 tokens, 8 heads of 64): the fused op
(engine/kernels/qk_rope.py) at several block sizes against the compiled plain path, forward and backward.

usage: python lab/bench_qk_rope.py
GB/s counts the forward's read of the heads and write of the output, and the backward's reads of the heads and
the incoming gradient and write of the gradient (bf16).
"""

import sys

import torch
import torch.nn.functional as F
import triton.testing

import engine.kernels.qk_rope as Q
from engine.kernels.qk_rope import apply_rotary
from engine.models.modern import NORM_EPS, rotary_tables

B, T, H, D = 60, 1024, 8, 64


def median_ms(fn) -> float:
    return triton.testing.do_bench(fn, warmup=20, rep=200, return_mode="median")


def plain(x, weight, cos, sin):
    return apply_rotary(F.rms_norm(x, (D,), weight, NORM_EPS).transpose(1, 2), cos, sin)


def fused(x, weight, cos, sin):
    return Q.qk_norm_rope(x, weight, cos, sin, NORM_EPS).transpose(1, 2)


def forward_backward(fn, x, weight, cos, sin, grad):
    x.grad = weight.grad = None
    fn(x, weight, cos, sin).backward(grad)


def op_rows(x, weight, cos, sin, grad, gigabytes) -> None:
    compiled = torch.compile(plain)
    for name, fn in (("compiled plain", compiled), ("fused", fused)):
        with torch.no_grad():
            ms = median_ms(lambda: fn(x, weight, cos, sin))
        both = median_ms(lambda: forward_backward(fn, x, weight, cos, sin, grad))
        print(f"{name:15s} forward {ms:6.3f} ms {2 * gigabytes / ms * 1e3:5.0f} GB/s   "
              f"forward and backward {both:6.3f} ms")
    chosen = Q.FORWARD_ROWS, Q.FORWARD_WARPS
    for shape in ((32, 2), (64, 4), (16, 1), (64, 2), (128, 8)):
        Q.FORWARD_ROWS, Q.FORWARD_WARPS = shape
        with torch.no_grad():
            ms = median_ms(lambda: fused(x, weight, cos, sin))
        print(f"fused forward, {shape[0]:3d} heads per program, {shape[1]} warps: {ms:6.3f} ms "
              f"{2 * gigabytes / ms * 1e3:5.0f} GB/s")
    Q.FORWARD_ROWS, Q.FORWARD_WARPS = chosen
    chosen = Q.BLOCK_ROWS, Q.ROWS_PER_STEP, Q.WARPS
    for shape in ((512, 32, 2), (1024, 64, 4), (512, 64, 4), (1024, 32, 4), (256, 32, 2), (1024, 16, 1)):
        Q.BLOCK_ROWS, Q.ROWS_PER_STEP, Q.WARPS = shape
        ms = median_ms(lambda: Q.qk_norm_rope_backward(grad.transpose(1, 2), x, weight, cos, sin, NORM_EPS))
        print(f"fused backward, {shape[0]:4d} heads per program, {shape[1]:3d} a step, {shape[2]} warps: "
              f"{ms:6.3f} ms {3 * gigabytes / ms * 1e3:5.0f} GB/s")
    Q.BLOCK_ROWS, Q.ROWS_PER_STEP, Q.WARPS = chosen


def main() -> int:
    torch.manual_seed(0)
    x = torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    weight = (1 + 0.1 * torch.randn(D, device="cuda")).requires_grad_()
    cos, sin = (t.cuda().bfloat16() for t in rotary_tables(T, D))
    # the incoming gradient as attention's backward lays it out in the model: (batch, time, heads, head_dim) memory
    grad = torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16).transpose(1, 2)
    op_rows(x, weight, cos, sin, grad, x.numel() * 2 / 1e9)
    return 0


if __name__ == "__main__":
    sys.exit(main())
