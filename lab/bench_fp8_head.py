"""The 70M output layer + loss for one step of 122,880 tokens: bf16 against FP8 (run.fp8_head), on one GPU.

usage: python lab/bench_fp8_head.py [ROWS]
Prints the forward product alone (bf16, FP8 scaled per row, FP8 scaled per tensor), the FP8 path's loss kernel at
several tile shapes (GB/s counting two reads of the bf16 logits and one write of the two e5m2 gradients), and
forward + backward of the whole output layer and loss through each path, with the FP8 path's relative error.
"""

import sys

import torch
import triton.testing

import engine.kernels.output_layer as L

VOCAB, PADDED, DIM = 50257, 50304, 512


def median_ms(fn) -> float:
    return triton.testing.do_bench(fn, warmup=20, rep=200, return_mode="median")


def main(argv: list[str]) -> int:
    rows = int(argv[0]) if argv else 122880
    torch.manual_seed(0)
    hidden = torch.randn(rows, DIM, device="cuda")
    weight = torch.randn(PADDED, DIM, device="cuda") * 0.05
    targets = torch.randint(0, VOCAB, (rows,), device="cuda")
    product = 2 * rows * DIM * PADDED
    hq, _, hs, wq, _, ws = L.fp8_operands(hidden, weight)
    h16, w16 = hidden.bfloat16(), weight.bfloat16()
    print(f"forward product, {rows} x {DIM} x {PADDED} ({product / 1e12:.2f} TFLOP)")
    for name, fn in (
        ("bf16", lambda: h16 @ w16.t()),
        ("fp8", lambda: torch._scaled_mm(hq, wq.t(), scale_a=hs, scale_b=ws, out_dtype=torch.bfloat16)),
        ("fp8 fast accumulation", lambda: torch._scaled_mm(hq, wq.t(), scale_a=hs, scale_b=ws,
                                                             out_dtype=torch.bfloat16, use_fast_accum=True)),
    ):
        ms = median_ms(fn)
        print(f"  {name:20s} {ms:7.3f} ms  {product / ms / 1e9:6.0f} TFLOP/s")

    print_loss_kernels(h16 @ w16.t(), targets, rows)
    print_whole_layer(hidden, weight, targets, product)
    return 0


def print_loss_kernels(logits: torch.Tensor, targets: torch.Tensor, rows: int) -> None:
    """The device copy of the logits, then the FP8 path's loss kernels at several tile shapes."""
    moved = 2 * logits.numel() * 2 + 2 * logits.numel()
    ms = device_copy_ms(logits)
    print(f"device copy of the logits: {ms:7.3f} ms  {2 * logits.numel() * 2 / ms / 1e6:6.0f} GB/s")
    print(f"FP8 loss kernels ({moved / 1e9:.1f} GB: two reads of bf16 logits, two e5m2 gradients written; "
          f"the transpose also reads one)")
    chosen = L.TRANSPOSE_TILE_R, L.TRANSPOSE_TILE_C, L.TRANSPOSE_WARPS, L.PAIR_BLOCK_COLUMNS, L.PAIR_KERNEL_WARPS
    for tile_r, tile_c, warps, block, block_warps in ((128, 128, 8, 4096, 8), (128, 128, 8, 2048, 4),
                                                      (128, 128, 8, 1024, 4), (128, 64, 4, 2048, 4)):
        L.TRANSPOSE_TILE_R, L.TRANSPOSE_TILE_C, L.TRANSPOSE_WARPS, L.PAIR_BLOCK_COLUMNS, L.PAIR_KERNEL_WARPS = (
            tile_r, tile_c, warps, block, block_warps)
        ms = median_ms(lambda: L.loss_and_grad_pair(logits, targets, VOCAB))
        print(f"  one-pass block {block:5d} warps {block_warps:2d}, transpose tile {tile_r:3d} x {tile_c:3d} "
              f"warps {warps:2d}: {ms:7.3f} ms  {moved / ms / 1e6:6.0f} GB/s")
    L.TRANSPOSE_TILE_R, L.TRANSPOSE_TILE_C, L.TRANSPOSE_WARPS, L.PAIR_BLOCK_COLUMNS, L.PAIR_KERNEL_WARPS = chosen
    _, _, grad, grad_t = L.loss_and_grad_pair(logits, targets, VOCAB)
    for tile_r, tile_c, warps in ((64, 64, 4), (128, 128, 8), (64, 128, 4), (128, 64, 4)):
        grid = (triton.cdiv(rows, tile_r), triton.cdiv(PADDED, tile_c))
        ms = median_ms(lambda: L._transpose_kernel[grid](grad, grad_t, rows, PADDED, TILE_R=tile_r, TILE_C=tile_c,
                                                         num_warps=warps))
        print(f"  the e5m2 transpose alone, tile {tile_r:3d} x {tile_c:3d} warps {warps:2d}: {ms:7.3f} ms  "
              f"{2 * grad.numel() / ms / 1e6:6.0f} GB/s")
    ms = median_ms(lambda: L.loss_and_grad_(logits, targets, VOCAB))
    print(f"  (the bf16 one-pass kernel: {ms:7.3f} ms)")


def device_copy_ms(t: torch.Tensor) -> float:
    """One device-to-device copy of t; the copy's buffer is freed on return."""
    copy = torch.empty_like(t)
    return median_ms(lambda: copy.copy_(t))


def print_whole_layer(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, product: int) -> None:
    print("output layer + loss, forward and backward, operand quantisation included")
    results = {}
    for name, fp8 in (("bf16 one-pass", False), ("fp8", True)):
        h = hidden.clone().requires_grad_()
        w = weight.clone().requires_grad_()

        def step():
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = L.fused_linear_cross_entropy(h, w, targets, VOCAB, fp8=fp8)
            loss.backward()
            return loss

        ms = median_ms(lambda: (step(), setattr(h, "grad", None), setattr(w, "grad", None)))
        h.grad = w.grad = None
        loss = step()
        results[name] = (loss.item(), h.grad.float(), w.grad.float())
        print(f"  {name:14s} {ms:7.3f} ms  ({3 * product / ms / 1e9:5.0f} TFLOP/s counting the products alone), "
              f"peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    (l0, gh0, gw0), (l1, gh1, gw1) = results["bf16 one-pass"], results["fp8"]
    print(f"fp8 against bf16: loss {l1:.5f} vs {l0:.5f}; gradient relative error hidden {relative(gh1, gh0):.4f}, "
          f"weight {relative(gw1, gw0):.4f}")


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
