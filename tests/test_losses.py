"""The one-pass output layer + cross-entropy against PyTorch's own loss and autograd."""

import pytest
import torch
import torch.nn.functional as F
from triton_helpers import run_under_the_interpreter

import engine.kernels.output_layer as losses_module
from engine.config.loading import ModelConfig
from engine.kernels.output_layer import fused_linear_cross_entropy, loss_and_grad_
from engine.models.gpt2 import GPT
from engine.models.parts import logits_or_loss


def reference(hidden, weight, targets, vocab_size):
    """The plain path: full logits, padding columns sliced off, F.cross_entropy, autograd."""
    h = hidden.detach().clone().requires_grad_()
    w = weight.detach().clone().requires_grad_()
    logits = (h @ w.t())[:, :vocab_size]
    loss = F.cross_entropy(logits.float(), targets, ignore_index=-100)
    loss.backward()
    return loss.detach(), h.grad, w.grad


def case(rows=37, dim=16, vocab=300, padded=320, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(rows, dim, generator=g)
    weight = torch.randn(padded, dim, generator=g) * 0.5
    targets = torch.randint(0, vocab, (rows,), generator=g)
    targets[:5] = -100
    return hidden, weight, targets, vocab


def test_loss_and_gradients_match_pytorch():
    hidden, weight, targets, vocab = case()
    loss_ref, gh_ref, gw_ref = reference(hidden, weight, targets, vocab)
    h = hidden.clone().requires_grad_()
    w = weight.clone().requires_grad_()
    loss = fused_linear_cross_entropy(h, w, targets, vocab)
    (loss * 3.0).backward()  # the incoming gradient scales both products
    assert loss.item() == pytest.approx(loss_ref.item(), rel=1e-6)
    assert torch.allclose(h.grad, 3.0 * gh_ref, atol=1e-6)
    assert torch.allclose(w.grad, 3.0 * gw_ref, atol=1e-6)
    assert torch.count_nonzero(w.grad[vocab:]) == 0  # padding rows get no gradient


def test_the_reference_path_gives_the_sliced_loss_and_the_padding_rows_no_gradient():
    hidden, weight, targets, vocab = case()
    loss_ref, gh_ref, gw_ref = reference(hidden, weight, targets, vocab)
    h = hidden.clone().requires_grad_()
    w = weight.clone().requires_grad_()
    loss = logits_or_loss(F.linear(h, w), vocab, targets)
    loss.backward()
    assert loss.item() == pytest.approx(loss_ref.item(), rel=1e-6)
    assert torch.allclose(h.grad, gh_ref, atol=1e-6) and torch.allclose(w.grad, gw_ref, atol=1e-6)
    assert torch.count_nonzero(w.grad[vocab:]) == 0


def test_without_grad_only_the_loss_is_computed():
    hidden, weight, targets, vocab = case()
    loss_ref, _, _ = reference(hidden, weight, targets, vocab)
    with torch.no_grad():
        loss = fused_linear_cross_entropy(hidden, weight, targets, vocab)
    assert loss.item() == pytest.approx(loss_ref.item(), rel=1e-6)


def test_all_rows_ignored_gives_zero_loss_and_no_gradient():
    hidden, weight, targets, vocab = case(rows=6)
    targets[:] = -100
    h = hidden.clone().requires_grad_()
    loss = fused_linear_cross_entropy(h, weight, targets, vocab)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.count_nonzero(h.grad) == 0


def test_model_fused_loss_matches_standard_loss_and_gradients():
    torch.manual_seed(0)
    cfg = ModelConfig(n_layer=1, n_embd=32, n_head=2, context=16, vocab_size=1000, pad_vocab_multiple=64)
    model = GPT(cfg)
    x = torch.randint(0, 1000, (4, 17))
    targets = x[:, 1:].clone()
    targets[0, :3] = -100
    results = []
    for fused in (False, True):
        model.fused_loss = fused
        model.zero_grad()
        loss = model(x[:, :-1], targets)
        loss.backward()
        results.append((loss.item(), [p.grad.clone() for p in model.parameters()]))
    (l1, g1), (l2, g2) = results
    assert l1 == pytest.approx(l2, rel=1e-6)
    for a, b in zip(g1, g2):
        assert torch.allclose(a, b, atol=1e-6), (a - b).abs().max()


def relative_error(a, b):
    return ((a - b).norm() / b.norm()).item()


def test_fp8_head_tracks_the_exact_loss_and_gradients():
    hidden, weight, targets, vocab = case(rows=64, dim=32)
    loss_ref, gh_ref, gw_ref = reference(hidden, weight, targets, vocab)
    h = hidden.clone().requires_grad_()
    w = weight.clone().requires_grad_()
    loss = fused_linear_cross_entropy(h, w, targets, vocab, fp8=True)
    (loss * 3.0).backward()
    assert loss.item() == pytest.approx(loss_ref.item(), rel=0.01)
    # e4m3 operands and an e5m2 gradient: a few percent of noise, never more
    assert 1e-3 < relative_error(h.grad, 3.0 * gh_ref) < 0.1
    assert 1e-3 < relative_error(w.grad, 3.0 * gw_ref) < 0.1
    assert torch.count_nonzero(w.grad[vocab:]) == 0  # padding rows get no gradient
    assert h.grad.dtype == w.grad.dtype == torch.float32


def test_fp8_head_is_exact_where_it_cannot_apply():
    # 37 rows are not a multiple of 16, and without gradients the loss is always computed exactly
    hidden, weight, targets, vocab = case(rows=37, dim=32)
    loss_ref, gh_ref, _ = reference(hidden, weight, targets, vocab)
    h = hidden.clone().requires_grad_()
    loss = fused_linear_cross_entropy(h, weight, targets, vocab, fp8=True)
    loss.backward()
    assert loss.item() == pytest.approx(loss_ref.item(), rel=1e-6)
    assert torch.allclose(h.grad, gh_ref, atol=1e-6)
    hidden, weight, targets, vocab = case(rows=64, dim=32)
    loss_ref, _, _ = reference(hidden, weight, targets, vocab)
    with torch.no_grad():
        assert fused_linear_cross_entropy(hidden, weight, targets, vocab, fp8=True).item() == pytest.approx(
            loss_ref.item(), rel=1e-6)


def test_fp8_gradient_pair_is_the_scaled_gradient_and_its_transpose():
    hidden, weight, targets, vocab = case(rows=64, dim=32)
    logits = hidden @ weight.t()
    losses, count, grad, grad_t = losses_module.loss_and_grad_pair(logits, targets, vocab)
    assert grad.dtype == grad_t.dtype == torch.float8_e5m2
    assert torch.equal(grad_t.float(), grad.float().t())
    exact = logits.clone()
    exact_losses, _ = loss_and_grad_(exact, targets, vocab)
    assert torch.allclose(losses, exact_losses)
    unscaled = grad.float() / (losses_module.FP8_GRAD_SCALE * int(count))
    assert relative_error(unscaled, exact) < 0.1
    assert torch.count_nonzero(grad[:5].float()) == 0  # ignored rows
    assert torch.count_nonzero(grad[:, vocab:].float()) == 0


def test_model_with_fp8_head_learns_a_batch_on_cpu():
    torch.manual_seed(0)
    cfg = ModelConfig(n_layer=1, n_embd=32, n_head=2, context=16, vocab_size=1000, pad_vocab_multiple=64)
    model = GPT(cfg)
    model.fused_loss = model.fp8_head = True
    x = torch.randint(0, 1000, (4, 17))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(30):
        loss = model(x[:, :-1], x[:, 1:])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        first = first if first is not None else loss.item()
    with torch.no_grad():
        exact = model(x[:, :-1], x[:, 1:]).item()  # no gradients: the exact loss
    assert exact < first - 1.0, (first, exact)


TRITON_CHECK = r"""
import torch
import engine.kernels.output_layer as L
assert L.use_triton(torch.zeros(1)), "the Triton interpreter is not in use"
L.BLOCK_COLUMNS = 64  # several blocks per row, the last one partial
g = torch.Generator().manual_seed(1)
rows, vocab, padded = 9, 300, 320
logits = torch.randn(rows, padded, generator=g) * 3
targets = torch.randint(0, vocab, (rows,), generator=g)
targets[2] = -100
ref = logits[:, :vocab].clone().requires_grad_()
loss_ref = torch.nn.functional.cross_entropy(ref, targets, ignore_index=-100)
loss_ref.backward()
for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 2e-2)):
    x = logits.to(dtype, copy=True)
    losses, count = L.loss_and_grad_(x, targets, vocab)
    assert int(count) == rows - 1
    assert abs(float(losses.sum() / count) - loss_ref.item()) < tol * 10, (losses.sum() / count, loss_ref)
    grad = x.float()
    assert torch.allclose(grad[:, :vocab], ref.grad, atol=tol / rows), (grad[:, :vocab] - ref.grad).abs().max()
    assert torch.count_nonzero(grad[:, vocab:]) == 0
    assert torch.count_nonzero(grad[2]) == 0
    loss_only = logits.to(dtype, copy=True)
    losses2, _ = L.loss_and_grad_(loss_only, targets, vocab, write_grad=False)
    assert torch.allclose(losses2, losses, atol=1e-6), (losses2 - losses).abs().max()
    assert torch.equal(loss_only, logits.to(dtype))
print("triton kernel ok")
"""


@pytest.mark.slow
def test_triton_kernel_matches_pytorch_under_the_interpreter():
    run_under_the_interpreter(TRITON_CHECK, says="triton kernel ok")


PAIR_CHECK = r"""
import sys
import torch
import engine.kernels.output_layer as L
assert L.use_triton(torch.zeros(1)), "the Triton interpreter is not in use"
L.PAIR_BLOCK_COLUMNS = 64
# 37 rows: the last row of tiles is partial; 128 columns: so is the last column of tiles
L.TRANSPOSE_TILE_R, L.TRANSPOSE_TILE_C = 16, int(sys.argv[1])
g = torch.Generator().manual_seed(1)
rows, vocab, padded = 37, 300, 320
logits = torch.randn(rows, padded, generator=g) * 3
targets = torch.randint(0, vocab, (rows,), generator=g)
targets[[0, 7]] = -100
# fp32 outputs: the interpreter's own FP8 rounding is not the GPU's, the kernel's arithmetic is what is checked
losses, count, grad, grad_t = L.loss_and_grad_pair(logits, targets, vocab, dtype=torch.float32)
exact = logits.clone()
exact_losses, exact_count = L._loss_and_grad_torch_(exact, targets, vocab, torch.tensor(1.0), True), rows - 2
assert int(count) == exact_count
assert torch.allclose(losses, exact_losses, atol=1e-5), (losses - exact_losses).abs().max()
assert torch.allclose(grad, exact * L.FP8_GRAD_SCALE, atol=0.05), (grad - exact * L.FP8_GRAD_SCALE).abs().max()
assert torch.equal(grad_t, grad.t())
assert torch.count_nonzero(grad[[0, 7]]) == 0 and torch.count_nonzero(grad[:, vocab:]) == 0
print("pair kernel ok")
"""


@pytest.mark.slow
@pytest.mark.parametrize("tile", [16, 128])
def test_fp8_pair_kernels_match_pytorch_under_the_interpreter(tile):
    run_under_the_interpreter(PAIR_CHECK, str(tile), says="pair kernel ok")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_triton_kernel_on_the_gpu_matches_pytorch_at_the_70m_shape():
    torch.manual_seed(0)
    rows, vocab, padded, dim = 4096, 50257, 50304, 512
    hidden = torch.randn(rows, dim, device="cuda") * 0.5
    weight = torch.randn(padded, dim, device="cuda") * 0.02
    targets = torch.randint(0, vocab, (rows,), device="cuda")
    loss_ref, gh_ref, gw_ref = reference(hidden.bfloat16().float(), weight.bfloat16().float(), targets, vocab)
    h = hidden.clone().requires_grad_()
    w = weight.clone().requires_grad_()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = fused_linear_cross_entropy(h, w, targets, vocab)
    loss.backward()
    assert loss.item() == pytest.approx(loss_ref.item(), rel=2e-3)
    assert torch.allclose(h.grad, gh_ref, atol=1e-4, rtol=3e-2)
    assert torch.allclose(w.grad, gw_ref, atol=1e-4, rtol=3e-2)
    logits = torch.randn(64, padded, device="cuda", dtype=torch.bfloat16)
    assert torch.allclose(loss_and_grad_(logits.clone(), targets[:64], vocab, write_grad=False)[0].mean(),
                          logits_or_loss(logits, vocab, targets[:64]), rtol=1e-3)


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 9),
                    reason="needs a GPU with FP8 tensor cores")
def test_fp8_head_on_the_gpu_tracks_the_exact_loss_at_the_70m_shape():
    torch.manual_seed(0)
    rows, vocab, padded, dim = 4096, 50257, 50304, 512
    hidden = torch.randn(rows, dim, device="cuda")
    weight = torch.randn(padded, dim, device="cuda") * 0.1
    targets = torch.randint(0, vocab, (rows,), device="cuda")
    loss_ref, gh_ref, gw_ref = reference(hidden, weight, targets, vocab)
    h = hidden.clone().requires_grad_()
    w = weight.clone().requires_grad_()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = fused_linear_cross_entropy(h, w, targets, vocab, fp8=True)
    loss.backward()
    assert loss.item() == pytest.approx(loss_ref.item(), rel=0.01)
    assert 1e-3 < relative_error(h.grad, gh_ref) < 0.1
    assert 1e-3 < relative_error(w.grad, gw_ref) < 0.1


def test_bf16_residual_stream_changes_the_residual_type_not_the_loss():
    torch.manual_seed(0)
    cfg = ModelConfig(n_layer=2, n_embd=32, n_head=2, context=16, vocab_size=500)
    model = GPT(cfg)
    x = torch.randint(0, 500, (4, 17))
    seen = []
    model.h[1].register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    losses = []
    for dtype in (None, torch.bfloat16):
        model.residual_dtype = dtype
        with torch.autocast("cpu", dtype=torch.bfloat16):
            losses.append(model(x[:, :-1], x[:, 1:]).item())
    assert seen == [torch.float32, torch.bfloat16]
    assert losses[0] == pytest.approx(losses[1], abs=0.02)
