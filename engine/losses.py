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
"""

from __future__ import annotations

import os

import torch

IGNORE_INDEX = -100
BLOCK_COLUMNS = 8192  # columns per inner step of the kernel (benchmarks/bench_loss_kernel.py chose it)
KERNEL_WARPS = 16
PROGRAMS_PER_SM = 2  # rows in flight at once; 0 = one program per row
PROGRAMS = None  # a fixed number of programs instead (the tests use it)

try:  # Triton ships with CUDA builds of torch; CPU builds may not have it
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the installed torch
    triton = None


if triton is not None:
    _IGNORE = tl.constexpr(IGNORE_INDEX)

    @triton.jit
    def _loss_and_grad_kernel(logits_ptr, row_stride, targets_ptr, losses_ptr, inv_count_ptr, n_rows,
                              N_COLUMNS: tl.constexpr, VOCAB: tl.constexpr, ROWS_PER_PROGRAM: tl.constexpr,
                              WRITE_GRAD: tl.constexpr, BLOCK: tl.constexpr):
        offsets = tl.arange(0, BLOCK)
        inv_count = tl.load(inv_count_ptr)
        for i in range(ROWS_PER_PROGRAM):
            row = tl.program_id(0) * ROWS_PER_PROGRAM + i
            in_range = row < n_rows
            row = tl.minimum(row, n_rows - 1).to(tl.int64)  # past the end: read the last row, write nothing
            base = logits_ptr + row * row_stride
            target = tl.load(targets_ptr + row)
            valid = target != _IGNORE

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
            tl.store(losses_ptr + row, tl.where(valid, lse - target_logit, 0.0), mask=in_range)

            if WRITE_GRAD:
                # pass 2: with few rows in flight the row is still in L2 cache, so memory is read once
                scale = tl.where(valid, inv_count, 0.0)
                store_limit = tl.where(in_range, N_COLUMNS, 0)
                for start in range(0, N_COLUMNS, BLOCK):
                    cols = start + offsets
                    x = tl.load(base + cols, mask=cols < N_COLUMNS, other=0.0).to(tl.float32)
                    p = tl.exp(x - lse)
                    g = tl.where(cols == target, p - 1.0, p) * scale
                    g = tl.where(cols < VOCAB, g, 0.0)
                    tl.store(base + cols, g.to(logits_ptr.dtype.element_ty), mask=cols < store_limit)


def use_triton(t: torch.Tensor) -> bool:
    """Triton runs the kernel on CUDA tensors (or anywhere when TRITON_INTERPRET=1, as the tests do on CPU)."""
    return triton is not None and (t.is_cuda or os.environ.get("TRITON_INTERPRET") == "1")


def _program_count(t: torch.Tensor, rows: int) -> int:
    if PROGRAMS is not None:
        return max(1, min(rows, PROGRAMS))
    if t.is_cuda and PROGRAMS_PER_SM:
        return max(1, min(rows, PROGRAMS_PER_SM * torch.cuda.get_device_properties(t.device).multi_processor_count))
    return max(1, rows)


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
        if rows == 0:
            return losses, count
        programs = _program_count(logits, rows)
        _loss_and_grad_kernel[(programs,)](
            logits, logits.stride(0), targets, losses, inv_count.reshape(1), rows, N_COLUMNS=columns,
            VOCAB=vocab_size, ROWS_PER_PROGRAM=triton.cdiv(rows, programs), WRITE_GRAD=write_grad,
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
def fused_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                               vocab_size: int) -> torch.Tensor:
    """Mean cross-entropy of softmax(hidden @ weight.T)[:, :vocab_size] against targets (-100 ignored)."""
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
