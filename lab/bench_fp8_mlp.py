"""Whether FP8 products would pay in the MLP at the 70M shapes, on one GPU: the MLP's forward and backward, compiled,
with its products in bf16 (as the engine runs them) against FP8 with one scale per tensor (e4m3 operands, e5m2
gradients; the quantisation and the transposed copies the backward products need included, inside the compiled
graph so that they fuse with the neighbouring elementwise work).

usage: python lab/bench_fp8_mlp.py
Prints, for modern-70m's SwiGLU (40 x 1,024 tokens, 512 -> 2 x 1,280 -> 512) and codelion-70m's GELU MLP
(120 x 1,024 tokens, 512 -> 2,048 -> 512): the products alone in bf16 and FP8, then the whole MLP forward and
backward each way, what the difference comes to over a 12-layer step, and the FP8 path's relative error.
"""

import sys

import torch
import torch.nn.functional as F

from engine.kernels.output_layer import fp8_tensorwise

LAYERS = 12


class Fp8Linear(torch.autograd.Function):
    """x (rows x in) @ w (out x in)^T with FP8 operands in all three products, one scale per tensor."""

    @staticmethod
    def forward(ctx, x, w):
        xq, xq_t, sx = fp8_tensorwise(x)
        wq, wq_t, sw = fp8_tensorwise(w)
        ctx.save_for_backward(xq_t, sx, wq_t, sw)
        ctx.dtypes = x.dtype, w.dtype
        return torch._scaled_mm(xq, wq.t(), scale_a=sx, scale_b=sw, out_dtype=torch.bfloat16)

    @staticmethod
    def backward(ctx, grad):
        xq_t, sx, wq_t, sw = ctx.saved_tensors
        gq, gq_t, sg = fp8_tensorwise(grad, torch.float8_e5m2)
        grad_x = torch._scaled_mm(gq, wq_t.t(), scale_a=sg, scale_b=sw, out_dtype=torch.bfloat16)
        grad_w = torch._scaled_mm(gq_t, xq_t.t(), scale_a=sg, scale_b=sx, out_dtype=torch.bfloat16)
        return grad_x.to(ctx.dtypes[0]), grad_w.to(ctx.dtypes[1])


def bf16_linear(x, w):
    return x @ w.t()


def swiglu(linear, x, gate_up, down):
    gate, up = linear(x, gate_up).chunk(2, dim=-1)
    return linear(F.silu(gate) * up, down)


def gelu_mlp(linear, x, fc, fc_bias, proj):
    return linear(F.gelu(linear(x, fc) + fc_bias, approximate="tanh"), proj)


def median_ms(fn) -> float:
    import triton.testing

    return triton.testing.do_bench(fn, warmup=20, rep=200, return_mode="median")


def forward_backward(mlp, linear, x, weights, grad):
    def step():
        for w in (x, *weights):
            w.grad = None
        mlp(linear, x, *weights).backward(grad)
    return step


def compare(name: str, mlp, rows: int, shapes: list[tuple[int, ...]], out_dim: int, device: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(rows, 512, device=device, dtype=torch.bfloat16, requires_grad=True)
    weights = [(torch.randn(*s, device=device) * (0.02 if len(s) == 2 else 0.1)).requires_grad_() for s in shapes]
    grad = torch.randn(rows, out_dim, device=device, dtype=torch.bfloat16) * 1e-3
    compiled = torch.compile(mlp)
    results = {}
    for label, linear in (("bf16", bf16_linear), ("fp8", Fp8Linear.apply)):
        with torch.autocast(device, dtype=torch.bfloat16):
            step = forward_backward(compiled, linear, x, weights, grad)
            step()
            results[label] = [x.grad.float().clone()] + [w.grad.float().clone() for w in weights]
            if device == "cuda":
                results[label + " ms"] = median_ms(step)
    rel = [((a - b).norm() / b.norm()).item() for a, b in zip(results["fp8"], results["bf16"])]
    print(f"{name}: gradient relative error of fp8 against bf16: " + ", ".join(f"{r:.4f}" for r in rel))
    if device == "cuda":
        bf16, fp8 = results["bf16 ms"], results["fp8 ms"]
        print(f"  forward + backward, one layer: bf16 {bf16:.3f} ms, fp8 {fp8:.3f} ms ({bf16 / fp8:.2f}x); "
              f"over {LAYERS} layers fp8 changes a step by {LAYERS * (fp8 - bf16):+.2f} ms")


def products_alone(rows: int, inner: int, outer: int) -> None:
    a = torch.randn(rows, inner, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(outer, inner, device="cuda", dtype=torch.bfloat16)
    aq, _, sa = fp8_tensorwise(a)
    bq, _, sb = fp8_tensorwise(b)
    flops = 2 * rows * inner * outer
    bf16 = median_ms(lambda: a @ b.t())
    fp8 = median_ms(lambda: torch._scaled_mm(aq, bq.t(), scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16))
    print(f"  product {rows} x {inner} x {outer}: bf16 {bf16:.3f} ms ({flops / bf16 / 1e9:.0f} TFLOP/s), "
          f"fp8 {fp8:.3f} ms ({flops / fp8 / 1e9:.0f} TFLOP/s)")


def main() -> int:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    scale = 1 if device == "cuda" else 1 / 80  # on a CPU: the correctness line only, on a small batch
    modern_rows, codelion_rows = int(40 * 1024 * scale), int(120 * 1024 * scale)
    if device == "cuda":
        print("products alone")
        for shape in ((modern_rows, 512, 2560), (modern_rows, 1280, 512), (codelion_rows, 512, 2048),
                      (codelion_rows, 2048, 512)):
            products_alone(*shape)
    compare("modern-70m SwiGLU", swiglu, modern_rows, [(2560, 512), (512, 1280)], 512, device)
    compare("codelion-70m GELU MLP", gelu_mlp, codelion_rows, [(2048, 512), (2048,), (512, 2048)], 512, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
