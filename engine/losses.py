"""Cross-entropy over the output layer without materialising the full logits.

The usual path writes (tokens x vocabulary) logits, then reads them for the loss,
then writes and reads their gradient again: for the 70M shape that is about
100 KB per token each way, more memory traffic than the rest of the network.
This path walks the tokens in chunks: for each chunk it computes the logits, the
loss and, because the loss is the last node of the graph, the gradients with
respect to the hidden states and the output matrix at once. Backward then only
scales the saved gradients. Same arithmetic, one pass over each chunk's logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CHUNK_TOKENS = 8192


class FusedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, vocab_size: int,
                compute_dtype: torch.dtype):
        n = hidden.size(0)
        valid = (targets != -100).sum().clamp(min=1)
        w = weight.to(compute_dtype)
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        loss = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, n, CHUNK_TOKENS):
            h = hidden[start:start + CHUNK_TOKENS].to(compute_dtype)
            t = targets[start:start + CHUNK_TOKENS]
            logits = (h @ w.t()).float()
            if vocab_size < logits.size(1):
                logits[:, vocab_size:] = float("-inf")  # padding columns take no probability
            loss = loss + F.cross_entropy(logits, t, ignore_index=-100, reduction="sum")
            grad = torch.softmax(logits, dim=1)
            mask = t != -100
            rows = torch.arange(t.size(0), device=t.device)
            grad[rows[mask], t[mask]] -= 1.0
            grad[~mask] = 0.0
            grad = (grad / valid).to(compute_dtype)
            grad_hidden[start:start + CHUNK_TOKENS] = (grad @ w).to(hidden.dtype)
            grad_weight += (grad.t() @ h).float()
        ctx.save_for_backward(grad_hidden, grad_weight.to(weight.dtype))
        return loss / valid

    @staticmethod
    def backward(ctx, grad_output):
        grad_hidden, grad_weight = ctx.saved_tensors
        return grad_hidden * grad_output, grad_weight * grad_output, None, None, None


def fused_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                               vocab_size: int) -> torch.Tensor:
    """Mean cross-entropy of softmax(hidden @ weight.T)[:, :vocab_size] against targets (-100 ignored)."""
    dtype = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else hidden.dtype
    hidden = hidden.reshape(-1, hidden.size(-1))
    return FusedLinearCrossEntropy.apply(hidden, weight, targets.reshape(-1), vocab_size, dtype)
