"""GPT-2's MLP activation, gelu(h + bias) with the tanh approximation, with its bias gradient fused into backward.

The plain path adds the bias inside the first MLP product, applies GELU in a
kernel of its own, and in backward computes the gradient through GELU in one
kernel and the bias gradient (a sum over all tokens) in another that reads the
same two tensors again: for the 70M shape that second read is 1 GB per layer.
Here the product runs without its bias, this op adds it, and the backward
kernel writes the gradient and, per block of rows, the partial sums of the bias
gradient, which a small sum then finishes (deterministically, without atomics).

On CUDA the kernels are Triton's; elsewhere the same arithmetic runs as torch
operations. The op is opaque to torch.compile, which calls it between the
products it compiles.
"""

from __future__ import annotations

import math

import torch

from engine.kernels.triton_support import tl, triton, use_triton

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
CUBIC = 0.044715
# The forward kernel walks the tensor as one flat run of elements; the backward kernel takes tiles, since it writes
# one partial bias sum per block of rows: rows per program, columns per program, rows per inner step and warps.
# lab/bench_gelu.py compares the choices.
FORWARD_BLOCK, FORWARD_WARPS = 1024, 4
BLOCK_ROWS, BLOCK_COLS, ROWS_PER_STEP, WARPS = 256, 128, 32, 4


def _gelu_torch(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.tanh(SQRT_2_OVER_PI * (x + CUBIC * x * x * x)))


def _gelu_grad_torch(x: torch.Tensor) -> torch.Tensor:
    t = torch.tanh(SQRT_2_OVER_PI * (x + CUBIC * x * x * x))
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3.0 * CUBIC * x * x)


if triton is not None:
    # SQRT_2_OVER_PI, CUBIC and 3 x CUBIC as literals: the interpreter rejects module constants on the left of
    # tensor arithmetic; the backward keeps the order that measured faster
    @triton.jit
    def _tanh(u):
        return 1.0 - 2.0 / (tl.exp(2.0 * u) + 1.0)

    @triton.jit
    def _gelu_forward_kernel(h_ptr, bias_ptr, out_ptr, n_elements, N_COLS: tl.constexpr, BLOCK: tl.constexpr):
        offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        inside = offsets < n_elements
        x = tl.load(h_ptr + offsets, mask=inside, other=0.0).to(tl.float32)
        x += tl.load(bias_ptr + offsets % N_COLS, mask=inside, other=0.0).to(tl.float32)
        g = 0.5 * x * (1.0 + _tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)))
        tl.store(out_ptr + offsets, g.to(out_ptr.dtype.element_ty), mask=inside)

    @triton.jit
    def _gelu_backward_kernel(grad_ptr, h_ptr, bias_ptr, grad_h_ptr, partial_ptr, n_rows, N_COLS: tl.constexpr,
                              BLOCK_ROWS: tl.constexpr, BLOCK_COLS: tl.constexpr, ROWS_PER_STEP: tl.constexpr):
        cols = tl.program_id(1) * BLOCK_COLS + tl.arange(0, BLOCK_COLS)
        col_ok = cols < N_COLS
        bias = tl.load(bias_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
        first = tl.program_id(0).to(tl.int64) * BLOCK_ROWS
        bias_grad = tl.zeros([ROWS_PER_STEP, BLOCK_COLS], tl.float32)  # summed over its rows once, at the end
        for step in range(0, BLOCK_ROWS, ROWS_PER_STEP):
            rows = first + step + tl.arange(0, ROWS_PER_STEP)
            inside = (rows < n_rows)[:, None] & col_ok[None, :]
            offsets = rows[:, None] * N_COLS + cols[None, :]
            # each element is read once: keeping it out of the cache leaves room for the writes (0.550 against 0.565 ms)
            x = tl.load(h_ptr + offsets, mask=inside, other=0.0, eviction_policy="evict_first").to(tl.float32)
            x += bias[None, :]
            dy = tl.load(grad_ptr + offsets, mask=inside, other=0.0, eviction_policy="evict_first").to(tl.float32)
            t = _tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))
            slope = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * 0.7978845608028654 * (1.0 + 0.134145 * x * x)
            dx = (dy * slope).to(grad_h_ptr.dtype.element_ty)
            tl.store(grad_h_ptr + offsets, dx, mask=inside)
            bias_grad += tl.where(inside, dx.to(tl.float32), 0.0)
        tl.store(partial_ptr + tl.program_id(0) * N_COLS + cols, tl.sum(bias_grad, axis=0), mask=col_ok)


def _grid(rows: int, cols: int) -> tuple[int, int]:
    return (triton.cdiv(rows, BLOCK_ROWS), triton.cdiv(cols, BLOCK_COLS))


@torch.library.custom_op("sparknet::gelu_bias", mutates_args=())
def gelu_bias(h: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """gelu(h + bias) (tanh approximation) over the last dimension, in h's dtype."""
    flat = h.reshape(-1, h.size(-1))
    if not use_triton(flat):
        return _gelu_torch(flat.float() + bias.float()).to(h.dtype).reshape(h.shape)
    flat = flat.contiguous()
    out = torch.empty_like(flat)
    if flat.numel():
        _gelu_forward_kernel[(triton.cdiv(flat.numel(), FORWARD_BLOCK),)](
            flat, bias, out, flat.numel(), N_COLS=flat.size(1), BLOCK=FORWARD_BLOCK, num_warps=FORWARD_WARPS)
    return out.reshape(h.shape)


@gelu_bias.register_fake
def _(h, bias):
    return torch.empty_like(h)


@torch.library.custom_op("sparknet::gelu_bias_backward", mutates_args=())
def gelu_bias_backward(grad: torch.Tensor, h: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of gelu(h + bias) with respect to h (h's dtype) and bias (fp32, summed over all leading dims)."""
    flat_h = h.reshape(-1, h.size(-1))
    flat_grad = grad.reshape(-1, grad.size(-1))
    if not use_triton(flat_h):
        x = flat_h.float() + bias.float()
        grad_h = (flat_grad.float() * _gelu_grad_torch(x)).to(h.dtype)
        return grad_h.reshape(h.shape), grad_h.float().sum(0)
    flat_h, flat_grad = flat_h.contiguous(), flat_grad.contiguous()
    rows, cols = flat_h.shape
    grad_h = torch.empty_like(flat_h)
    partial = torch.empty(triton.cdiv(rows, BLOCK_ROWS), cols, dtype=torch.float32, device=h.device)
    if rows:
        _gelu_backward_kernel[_grid(rows, cols)](flat_grad, flat_h, bias, grad_h, partial, rows, N_COLS=cols,
                                                 BLOCK_ROWS=BLOCK_ROWS, BLOCK_COLS=BLOCK_COLS,
                                                 ROWS_PER_STEP=ROWS_PER_STEP, num_warps=WARPS)
    return grad_h.reshape(h.shape), partial.sum(0)


@gelu_bias_backward.register_fake
def _(grad, h, bias):
    return torch.empty_like(h), h.new_empty(h.size(-1), dtype=torch.float32)


def _setup_context(ctx, inputs, output):
    h, bias = inputs
    ctx.save_for_backward(h, bias)


def _backward(ctx, grad):
    h, bias = ctx.saved_tensors
    grad_h, grad_bias = gelu_bias_backward(grad, h, bias)
    return grad_h, grad_bias.to(bias.dtype)


gelu_bias.register_autograd(_backward, setup_context=_setup_context)
