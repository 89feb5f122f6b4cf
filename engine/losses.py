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
BLOCK_COLUMNS = 4096  # columns per inner step; benchmarks/bench_loss_kernel.py compares the choices
KERNEL_WARPS = 8

try:  # Triton ships with CUDA builds of torch; CPU builds may not have it
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the installed torch
    triton = None


if triton is not None:
    _IGNORE = tl.constexpr(IGNORE_INDEX)

    @triton.jit
    def _loss_and_grad_kernel(logits_ptr, row_stride, targets_ptr, losses_ptr, inv_count_ptr,
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

        if WRITE_GRAD:
            # pass 2 overwrites the row with softmax - onehot, scaled for the mean over counted rows
            scale = tl.where(valid, tl.load(inv_count_ptr), 0.0)
            for start in range(0, N_COLUMNS, BLOCK):
                cols = start + offsets
                x = tl.load(base + cols, mask=cols < N_COLUMNS, other=0.0).to(tl.float32)
                p = tl.exp(x - lse)
                g = tl.where(cols == target, p - 1.0, p) * scale
                g = tl.where(cols < VOCAB, g, 0.0)
                tl.store(base + cols, g.to(logits_ptr.dtype.element_ty), mask=cols < N_COLUMNS)


def use_triton(t: torch.Tensor) -> bool:
    """Triton runs the kernel on CUDA tensors (or anywhere when TRITON_INTERPRET=1, as the tests do on CPU)."""
    return triton is not None and (t.is_cuda or os.environ.get("TRITON_INTERPRET") == "1")


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
        if rows:
            _loss_and_grad_kernel[(rows,)](logits, logits.stride(0), targets, losses, inv_count.reshape(1),
                                           N_COLUMNS=columns, VOCAB=vocab_size, WRITE_GRAD=write_grad,
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
