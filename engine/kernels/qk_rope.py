"""QK-norm and rotary embedding as one op: RMSNorm over each head of q (or k), then rotary, forward and backward.

The plain path runs compiled kernels of its own each way over the projection's
output, and the norm's weight gradient is a reduction over every head of every
token. Here one kernel reads each head once and writes it
once; in backward one kernel writes the input gradient and, per block of rows,
partial sums of the weight gradient, which a small sum then finishes
(deterministically, without atomics). Inputs and gradients may be strided views
(the layout scaled_dot_product_attention hands back); outputs are contiguous
(batch, time, heads, head_dim).

On CUDA the kernels are Triton's; elsewhere the same arithmetic runs as torch
operations. The op is opaque to torch.compile, which calls it between the
products it compiles.
"""

from __future__ import annotations

import torch

from engine.kernels.triton_support import tl, triton, use_triton

# heads per program in forward; in backward, heads per program and per inner step (lab/bench_qk_rope.py)
FORWARD_ROWS, FORWARD_WARPS = 32, 2
BLOCK_ROWS, ROWS_PER_STEP, WARPS = 512, 32, 2


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding in the "rotate half" layout of Hugging Face's Llama/Qwen: x of (..., time, head_dim)
    against cos and sin of (time, head_dim)."""
    half = x.size(-1) // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return (x * cos + rotated * sin).to(x.dtype)


def _norm_rope_torch(x, weight, cos, sin, eps):
    """The modern attention's own path (nn.RMSNorm over each head, then apply_rotary), with a contiguous
    (batch, time, heads, head_dim) result like the kernel's."""
    y = torch.nn.functional.rms_norm(x, (x.size(-1),), weight, eps)
    return apply_rotary(y.transpose(1, 2), cos, sin).transpose(1, 2).contiguous()


def _norm_rope_backward_torch(grad, x, weight, cos, sin, eps):
    """The arithmetic of the backward kernel, in fp32: through the rotation, then through the norm."""
    half, dtype = x.size(-1) // 2, x.dtype
    g, x = grad.float(), x.float()
    c, s = cos[:, None, :half].float(), sin[:, None, :half].float()
    g1, g2 = g[..., :half], g[..., half:]
    dy = torch.cat((g1 * c + g2 * s, g2 * c - g1 * s), dim=-1)
    r = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    n = x * r
    dn = dy * weight.float()
    dx = r * (dn - n * (dn * n).mean(-1, keepdim=True))
    return dx.to(dtype).contiguous(), (dy * n).sum((0, 1, 2))


if triton is not None:
    @triton.jit
    def _row_offsets(rows, T, H, stride_b, stride_t, stride_h):
        return (rows // (H * T)) * stride_b + ((rows // H) % T) * stride_t + (rows % H) * stride_h

    @triton.jit
    def _forward_kernel(x_ptr, w_ptr, cos_ptr, sin_ptr, out_ptr, n_rows, T, H, sx_b, sx_t, sx_h, eps,
                        HALF: tl.constexpr, ROWS: tl.constexpr):
        rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
        ok = (rows < n_rows)[:, None]
        cols = tl.arange(0, HALF)[None, :]
        src = x_ptr + _row_offsets(rows, T, H, sx_b, sx_t, sx_h)[:, None] + cols
        x1 = tl.load(src, mask=ok, other=0.0).to(tl.float32)
        x2 = tl.load(src + HALF, mask=ok, other=0.0).to(tl.float32)
        r = tl.rsqrt((tl.sum(x1 * x1, axis=1) + tl.sum(x2 * x2, axis=1)) / (2 * HALF) + eps)[:, None]
        y1 = x1 * r * tl.load(w_ptr + cols).to(tl.float32)
        y2 = x2 * r * tl.load(w_ptr + HALF + cols).to(tl.float32)
        table = ((rows // H) % T)[:, None] * (2 * HALF) + cols  # the tables' two halves are equal
        c = tl.load(cos_ptr + table, mask=ok, other=0.0).to(tl.float32)
        s = tl.load(sin_ptr + table, mask=ok, other=0.0).to(tl.float32)
        dst = out_ptr + rows[:, None] * (2 * HALF) + cols
        tl.store(dst, (y1 * c - y2 * s).to(out_ptr.dtype.element_ty), mask=ok)
        tl.store(dst + HALF, (y2 * c + y1 * s).to(out_ptr.dtype.element_ty), mask=ok)

    @triton.jit
    def _backward_kernel(g_ptr, x_ptr, w_ptr, cos_ptr, sin_ptr, dx_ptr, partial_ptr, n_rows, T, H,
                         sg_b, sg_t, sg_h, sx_b, sx_t, sx_h, eps,
                         HALF: tl.constexpr, BLOCK_ROWS: tl.constexpr, ROWS_PER_STEP: tl.constexpr):
        cols = tl.arange(0, HALF)[None, :]
        w1 = tl.load(w_ptr + cols).to(tl.float32)
        w2 = tl.load(w_ptr + HALF + cols).to(tl.float32)
        dw1 = tl.zeros([HALF], tl.float32)
        dw2 = tl.zeros([HALF], tl.float32)
        first = tl.program_id(0).to(tl.int64) * BLOCK_ROWS
        for step in range(0, BLOCK_ROWS, ROWS_PER_STEP):
            rows = first + step + tl.arange(0, ROWS_PER_STEP)
            ok = (rows < n_rows)[:, None]
            src = x_ptr + _row_offsets(rows, T, H, sx_b, sx_t, sx_h)[:, None] + cols
            x1 = tl.load(src, mask=ok, other=0.0).to(tl.float32)
            x2 = tl.load(src + HALF, mask=ok, other=0.0).to(tl.float32)
            grad = g_ptr + _row_offsets(rows, T, H, sg_b, sg_t, sg_h)[:, None] + cols
            g1 = tl.load(grad, mask=ok, other=0.0).to(tl.float32)
            g2 = tl.load(grad + HALF, mask=ok, other=0.0).to(tl.float32)
            table = ((rows // H) % T)[:, None] * (2 * HALF) + cols
            c = tl.load(cos_ptr + table, mask=ok, other=0.0).to(tl.float32)
            s = tl.load(sin_ptr + table, mask=ok, other=0.0).to(tl.float32)
            dy1 = g1 * c + g2 * s  # through the rotation
            dy2 = g2 * c - g1 * s
            r = tl.rsqrt((tl.sum(x1 * x1, axis=1) + tl.sum(x2 * x2, axis=1)) / (2 * HALF) + eps)[:, None]
            n1, n2 = x1 * r, x2 * r
            dw1 += tl.sum(dy1 * n1, axis=0)
            dw2 += tl.sum(dy2 * n2, axis=0)
            dn1, dn2 = dy1 * w1, dy2 * w2
            mean = ((tl.sum(dn1 * n1, axis=1) + tl.sum(dn2 * n2, axis=1)) / (2 * HALF))[:, None]
            dst = dx_ptr + rows[:, None] * (2 * HALF) + cols
            tl.store(dst, (r * (dn1 - n1 * mean)).to(dx_ptr.dtype.element_ty), mask=ok)
            tl.store(dst + HALF, (r * (dn2 - n2 * mean)).to(dx_ptr.dtype.element_ty), mask=ok)
        out = partial_ptr + tl.program_id(0) * (2 * HALF) + tl.arange(0, HALF)
        tl.store(out, dw1)
        tl.store(out + HALF, dw2)


def _layout(t: torch.Tensor) -> tuple[int, int, int, int]:
    """(rows, stride of batch, of time, of heads) of a (batch, time, heads, head_dim) tensor with unit last stride."""
    if t.stride(-1) != 1:
        raise ValueError("the head dimension must be contiguous")
    B, T, H, _ = t.shape
    return B * T * H, t.stride(0), t.stride(1), t.stride(2)


@torch.library.custom_op("sparknet::qk_norm_rope", mutates_args=())
def qk_norm_rope(x: torch.Tensor, weight: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                 eps: float) -> torch.Tensor:
    """rotary(rms_norm(x) * weight) for x of (batch, time, heads, head_dim), cos and sin of (time, head_dim)."""
    if not use_triton(x):
        return _norm_rope_torch(x, weight, cos, sin, eps)
    rows, s_b, s_t, s_h = _layout(x)
    B, T, H, D = x.shape
    out = torch.empty(B, T, H, D, dtype=x.dtype, device=x.device)
    if rows:
        _forward_kernel[(triton.cdiv(rows, FORWARD_ROWS),)](
            x, weight, cos.contiguous(), sin.contiguous(), out, rows, T, H, s_b, s_t, s_h, eps,
            HALF=D // 2, ROWS=FORWARD_ROWS, num_warps=FORWARD_WARPS)
    return out


@qk_norm_rope.register_fake
def _(x, weight, cos, sin, eps):
    return x.new_empty(x.shape)


@torch.library.custom_op("sparknet::qk_norm_rope_backward", mutates_args=())
def qk_norm_rope_backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, cos: torch.Tensor,
                          sin: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of qk_norm_rope with respect to x (x's dtype, contiguous) and weight (fp32)."""
    if not use_triton(x):
        return _norm_rope_backward_torch(grad, x, weight, cos, sin, eps)
    rows, sx_b, sx_t, sx_h = _layout(x)
    _, sg_b, sg_t, sg_h = _layout(grad)
    B, T, H, D = x.shape
    dx = torch.empty(B, T, H, D, dtype=x.dtype, device=x.device)
    programs = triton.cdiv(rows, BLOCK_ROWS)
    partial = torch.empty(programs, D, dtype=torch.float32, device=x.device)
    if rows:
        _backward_kernel[(programs,)](grad, x, weight, cos.contiguous(), sin.contiguous(), dx, partial, rows, T, H,
                                      sg_b, sg_t, sg_h, sx_b, sx_t, sx_h, eps, HALF=D // 2,
                                      BLOCK_ROWS=BLOCK_ROWS, ROWS_PER_STEP=ROWS_PER_STEP, num_warps=WARPS)
    return dx, partial.sum(0)


@qk_norm_rope_backward.register_fake
def _(grad, x, weight, cos, sin, eps):
    B, T, H, D = x.shape
    return x.new_empty(B, T, H, D), x.new_empty(D, dtype=torch.float32)


def _setup_context(ctx, inputs, output):
    x, weight, cos, sin, eps = inputs
    ctx.save_for_backward(x, weight, cos, sin)
    ctx.eps = eps


def _backward(ctx, grad):
    x, weight, cos, sin = ctx.saved_tensors
    dx, dw = qk_norm_rope_backward(grad, x, weight, cos, sin, ctx.eps)
    return dx, dw.to(weight.dtype), None, None, None


qk_norm_rope.register_autograd(_backward, setup_context=_setup_context)
