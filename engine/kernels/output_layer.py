"""The output layer and cross-entropy as one autograd node, with one pass over the logits.

The usual path writes the (tokens x vocabulary) logits, reads them for the loss,
reads them again in backward and writes their gradient: for the 70M shape that
is several times 100 KB per token of memory traffic, more than the rest of the
network moves. Because the loss is the last node of the graph, its gradient
with respect to the logits, softmax - onehot, is known as soon as the loss is:
here one kernel reads each row of logits, computes its loss and overwrites the
row with that gradient. Backward is then just the two matrix products through
the output layer, scaled by the incoming gradient (a scalar).

On a CUDA device the kernel is Triton's; elsewhere the same arithmetic runs as
plain torch operations. Padding columns of the vocabulary (beyond vocab_size)
take no probability and get no gradient; targets of -100 are ignored.

With fp8=True (run.fp8_head) the three products of the output layer run in
FP8, which the tensor cores of Hopper-class GPUs do at twice the bf16 rate:
the forward product takes e4m3 operands, each with one scale; the one-pass
kernel then writes the gradient in e5m2 to a buffer of its own, and a tiled
transpose copies it for the weight's gradient (FP8 products need both operands
contiguous along their shared dimension, here the tokens). Losses are still
computed from the logits in fp32; evaluation never takes this path.
"""

from __future__ import annotations

import torch

from engine.kernels.triton_support import tl, triton, use_triton

IGNORE_INDEX = -100
BLOCK_COLUMNS = 4096  # columns per inner step; lab/bench_loss_kernel.py compares the choices
KERNEL_WARPS = 8
# FP8 path: softmax - onehot lies in [-1, 1]; scaled by 2^15 its largest value stays below e5m2's 57,344 and
# probabilities down to about 2e-9 stay normal e5m2 numbers
FP8_GRAD_SCALE = 2.0 ** 15
# the FP8 path's one-pass kernel (it writes e5m2 rows of its own) and its transpose: block shapes and warps
# (lab/bench_fp8_head.py compares them)
PAIR_BLOCK_COLUMNS, PAIR_KERNEL_WARPS = 2048, 4
TRANSPOSE_TILE_R, TRANSPOSE_TILE_C, TRANSPOSE_WARPS = 128, 128, 8


if triton is not None:
    _IGNORE = tl.constexpr(IGNORE_INDEX)

    @triton.jit
    def _loss_and_grad_kernel(logits_ptr, row_stride, targets_ptr, losses_ptr, lse_ptr, scale_ptr, grad_ptr,
                              N_COLUMNS: tl.constexpr, VOCAB: tl.constexpr, WRITE_GRAD: tl.constexpr,
                              BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        base = logits_ptr + row * row_stride
        target = tl.load(targets_ptr + row)
        valid = target != _IGNORE
        offsets = tl.arange(0, BLOCK)

        # pass 1: running maximum and sum of exponentials (online softmax)
        running_max = float("-inf")
        running_sum = 0.0
        for start in range(0, N_COLUMNS, BLOCK):
            cols = start + offsets
            x = tl.load(base + cols, mask=cols < VOCAB, other=float("-inf")).to(tl.float32)
            new_max = tl.maximum(running_max, tl.max(x, axis=0))
            running_sum = running_sum * tl.exp(running_max - new_max) + tl.sum(tl.exp(x - new_max), axis=0)
            running_max = new_max
        lse = running_max + tl.log(running_sum)
        target_logit = tl.load(base + tl.where(valid, target, 0)).to(tl.float32)
        tl.store(losses_ptr + row, tl.where(valid, lse - target_logit, 0.0))
        tl.store(lse_ptr + row, lse)

        if WRITE_GRAD:
            # pass 2 writes (softmax - onehot) x scale to the row of grad (contiguous rows; the logits themselves
            # when it overwrites them in place)
            scale = tl.where(valid, tl.load(scale_ptr), 0.0)
            grad_base = grad_ptr + row * N_COLUMNS
            for start in range(0, N_COLUMNS, BLOCK):
                cols = start + offsets
                x = tl.load(base + cols, mask=cols < N_COLUMNS, other=0.0).to(tl.float32)
                p = tl.exp(x - lse)
                g = tl.where(cols == target, p - 1.0, p) * scale
                g = tl.where(cols < VOCAB, g, 0.0)
                tl.store(grad_base + cols, g.to(grad_ptr.dtype.element_ty), mask=cols < N_COLUMNS)

    @triton.jit
    def _transpose_kernel(src_ptr, dst_ptr, n_rows, n_cols, TILE_R: tl.constexpr, TILE_C: tl.constexpr):
        rows = tl.program_id(0).to(tl.int64) * TILE_R + tl.arange(0, TILE_R)
        cols = tl.program_id(1).to(tl.int64) * TILE_C + tl.arange(0, TILE_C)
        inside = (rows < n_rows)[:, None] & (cols < n_cols)[None, :]
        x = tl.load(src_ptr + rows[:, None] * n_cols + cols[None, :], mask=inside)
        tl.store(dst_ptr + cols[:, None] * n_rows + rows[None, :], tl.trans(x), mask=tl.trans(inside))


def loss_and_grad_(logits: torch.Tensor, targets: torch.Tensor, vocab_size: int, write_grad: bool = True):
    """Per-row cross-entropy of (rows x padded vocabulary) logits; when write_grad, logits is overwritten in place
    by the gradient of the mean loss over the non-ignored rows. Returns (row losses fp32, number of counted rows)."""
    rows, columns = logits.shape
    count = (targets != IGNORE_INDEX).sum()
    inv_count = 1.0 / count.clamp(min=1).float()
    if use_triton(logits):
        if logits.stride(1) != 1:
            raise ValueError("logits must have contiguous rows")
        losses = torch.empty(rows, dtype=torch.float32, device=logits.device)
        lse = torch.empty(rows, dtype=torch.float32, device=logits.device)
        if rows:
            _loss_and_grad_kernel[(rows,)](logits, logits.stride(0), targets, losses, lse, inv_count.reshape(1),
                                           logits, N_COLUMNS=columns, VOCAB=vocab_size, WRITE_GRAD=write_grad,
                                           BLOCK=BLOCK_COLUMNS, num_warps=KERNEL_WARPS)
        return losses, count
    return _loss_and_grad_torch_(logits, targets, vocab_size, inv_count, write_grad), count


def _loss_and_grad_torch_(logits, targets, vocab_size, inv_count, write_grad):
    x = logits.to(torch.float32, copy=True)
    x[:, vocab_size:] = float("-inf")
    lse = torch.logsumexp(x, dim=1)
    valid = targets != IGNORE_INDEX
    safe_targets = torch.where(valid, targets, 0)
    target_logit = x.gather(1, safe_targets[:, None])[:, 0]
    losses = torch.where(valid, lse - target_logit, 0.0)
    if write_grad:
        grad = torch.exp(x - lse[:, None])
        grad[torch.arange(len(targets), device=targets.device), safe_targets] -= 1.0
        grad *= torch.where(valid, inv_count, 0.0)[:, None]
        logits.copy_(grad)
    return losses


class LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, vocab_size: int):
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            logits = hidden @ weight.t()
            losses, count = loss_and_grad_(logits, targets, vocab_size)
        ctx.save_for_backward(hidden, weight, logits)  # logits now hold d(loss)/d(logits)
        return losses.sum() / count.clamp(min=1)

    @staticmethod
    def backward(ctx, grad_loss):
        hidden, weight, grad_logits = ctx.saved_tensors
        # the scalar is applied to the two small products, never to the large gradient
        grad_hidden = (grad_logits @ weight).mul_(grad_loss.to(hidden.dtype))
        grad_weight = (grad_logits.t() @ hidden).mul_(grad_loss.to(weight.dtype))
        return grad_hidden, grad_weight, None, None


@torch.compiler.disable  # a compiled model hands its final hidden states to this eager node
def _bf16_node(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, vocab_size: int) -> torch.Tensor:
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        hidden, weight = hidden.to(dtype), weight.to(dtype)
    hidden = hidden.reshape(-1, hidden.size(-1))
    targets = targets.reshape(-1)
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        return LinearCrossEntropy.apply(hidden, weight, targets, vocab_size)
    with torch.autocast(device_type=device_type, enabled=False):
        losses, count = loss_and_grad_(hidden @ weight.t(), targets, vocab_size, write_grad=False)
    return losses.sum() / count.clamp(min=1)


def fused_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                               vocab_size: int, fp8: bool = False) -> torch.Tensor:
    """Mean cross-entropy of softmax(hidden @ weight.T)[:, :vocab_size] against targets (-100 ignored).

    fp8 runs the output layer's products in FP8 when gradients are wanted and the shapes allow it (every
    dimension a multiple of 16); otherwise, and always without gradients, the products are bf16 or fp32."""
    rows, dim = hidden.numel() // hidden.size(-1), hidden.size(-1)
    if fp8 and torch.is_grad_enabled() and fp8_shapes_ok(rows, dim, weight.size(0)):
        flat = hidden.reshape(rows, dim)
        # quantised here rather than in the eager node, so a compiled model fuses these passes with its own kernels
        operands = fp8_operands(flat.detach(), weight.detach())
        return _fp8_node(flat, weight, targets.reshape(-1), vocab_size, operands)
    return _bf16_node(hidden, weight, targets, vocab_size)


def fp8_shapes_ok(rows: int, dim: int, columns: int) -> bool:
    return rows > 0 and rows % 16 == 0 and dim % 16 == 0 and columns % 16 == 0


def fp8_tensorwise(t: torch.Tensor, dtype: torch.dtype = torch.float8_e4m3fn) -> tuple[torch.Tensor, ...]:
    """t in `dtype` with one scale (its largest magnitude maps to the format's largest), as it is and transposed
    contiguous (an FP8 product needs both operands contiguous along their shared dimension). Returns (q, q
    transposed, scale)."""
    scale = t.abs().amax().float().clamp(min=1e-30) / torch.finfo(dtype).max
    q = (t.float() / scale).to(dtype)
    return q, q.t().contiguous(), scale


def fp8_operands(hidden: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """e4m3 copies of the output layer's operands, for the forward product and transposed for the backward ones,
    whose shared dimension runs along their rows. Returns (hidden, hidden transposed, hidden scale, weight, weight
    transposed, scale)."""
    return (*fp8_tensorwise(hidden), *fp8_tensorwise(weight))


def loss_and_grad_pair(logits: torch.Tensor, targets: torch.Tensor, vocab_size: int,
                       dtype: torch.dtype = torch.float8_e5m2):
    """Per-row cross-entropy of (rows x padded vocabulary) logits, and (softmax - onehot) x FP8_GRAD_SCALE for the
    counted rows (zero for ignored ones and padding columns) as `dtype`, both as (rows x columns) and transposed.
    Returns (row losses fp32, number of counted rows, grad, grad_t)."""
    rows, columns = logits.shape
    count = (targets != IGNORE_INDEX).sum()
    if use_triton(logits):
        if logits.stride(1) != 1:
            raise ValueError("logits must have contiguous rows")
        losses = torch.empty(rows, dtype=torch.float32, device=logits.device)
        lse = torch.empty(rows, dtype=torch.float32, device=logits.device)
        grad = torch.empty(rows, columns, dtype=dtype, device=logits.device)
        grad_t = torch.empty(columns, rows, dtype=dtype, device=logits.device)
        if rows:
            scale = torch.full((1,), FP8_GRAD_SCALE, device=logits.device)
            _loss_and_grad_kernel[(rows,)](logits, logits.stride(0), targets, losses, lse, scale, grad,
                                           N_COLUMNS=columns, VOCAB=vocab_size, WRITE_GRAD=True,
                                           BLOCK=PAIR_BLOCK_COLUMNS, num_warps=PAIR_KERNEL_WARPS)
            grid = (triton.cdiv(rows, TRANSPOSE_TILE_R), triton.cdiv(columns, TRANSPOSE_TILE_C))
            _transpose_kernel[grid](grad, grad_t, rows, columns, TILE_R=TRANSPOSE_TILE_R, TILE_C=TRANSPOSE_TILE_C,
                                    num_warps=TRANSPOSE_WARPS)
        return losses, count, grad, grad_t
    scaled = torch.full((), FP8_GRAD_SCALE, device=logits.device)
    g = logits.to(torch.float32, copy=True)
    losses = _loss_and_grad_torch_(g, targets, vocab_size, scaled, write_grad=True)
    grad = g.to(dtype)
    return losses, count, grad, grad.t().contiguous()


class LinearCrossEntropyFP8(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, vocab_size, operands):
        hidden_q, hidden_t, hidden_scale, weight_q, weight_t, weight_scale = operands
        # fast accumulation only here, where the shared dimension is the model width (512 for the 70M shape);
        # the backward products sum over the vocabulary and over the tokens, and keep full fp32 accumulation
        logits = torch._scaled_mm(hidden_q, weight_q.t(), scale_a=hidden_scale, scale_b=weight_scale,
                                  out_dtype=torch.bfloat16, use_fast_accum=hidden.is_cuda)
        losses, count, grad, grad_t = loss_and_grad_pair(logits, targets, vocab_size)
        del logits
        ctx.save_for_backward(grad, grad_t, hidden_t, hidden_scale, weight_t, weight_scale, count)
        ctx.dtypes = hidden.dtype, weight.dtype
        return losses.sum() / count.clamp(min=1)

    @staticmethod
    def backward(ctx, grad_loss):
        grad, grad_t, hidden_t, hidden_scale, weight_t, weight_scale, count = ctx.saved_tensors
        hidden_dtype, weight_dtype = ctx.dtypes
        # the kernel left out the mean's 1/count and scaled by FP8_GRAD_SCALE: both come back in the products' scale
        grad_scale = (1.0 / (count.clamp(min=1).float() * FP8_GRAD_SCALE)).reshape(())
        grad_hidden = torch._scaled_mm(grad, weight_t.t(), scale_a=grad_scale, scale_b=weight_scale,
                                       out_dtype=torch.bfloat16)
        grad_weight = torch._scaled_mm(grad_t, hidden_t.t(), scale_a=grad_scale, scale_b=hidden_scale,
                                       out_dtype=torch.bfloat16)
        grad_hidden = grad_hidden.mul_(grad_loss.to(grad_hidden.dtype)).to(hidden_dtype)
        grad_weight = grad_weight.mul_(grad_loss.to(grad_weight.dtype)).to(weight_dtype)
        return grad_hidden, grad_weight, None, None, None


@torch.compiler.disable  # like _bf16_node: the products and the kernel run eagerly, after the compiled model
def _fp8_node(hidden, weight, targets, vocab_size, operands):
    with torch.autocast(device_type=hidden.device.type, enabled=False):
        return LinearCrossEntropyFP8.apply(hidden, weight, targets, vocab_size, operands)
