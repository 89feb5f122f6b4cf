"""QK-norm and rotary embedding as one op, against the modern model's own path (nn.RMSNorm, then apply_rotary)."""

import pytest
import torch
import torch.nn.functional as F
from triton_helpers import run_under_the_interpreter

from engine.kernels.qk_rope import apply_rotary, qk_norm_rope
from engine.models.modern import NORM_EPS, ModernGPT, rotary_tables
from tests.test_model import assert_switch_keeps_loss_and_grads
from tests.test_model_modern import tiny_cfg


def inputs(B, T, H, D, device="cpu", seed=0):
    """Heads as a strided view of a wider projection, a norm weight away from 1, and an incoming gradient laid out
    as scaled_dot_product_attention gives it, (batch, heads, time, head_dim)."""
    g = torch.Generator(device=device).manual_seed(seed)
    wide = torch.randn(B, T, 2 * H * D, device=device, generator=g)
    x = wide[..., : H * D].view(B, T, H, D)
    weight = 1 + 0.3 * torch.randn(D, device=device, generator=g)
    grad = torch.randn(B, H, T, D, device=device, generator=g)
    cos, sin = (t.to(device) for t in rotary_tables(T, D, device))
    return x, weight, cos, sin, grad


def check(x, weight, cos, sin, grad, atol):
    results = []
    for fused in (False, True):
        x_ = x.detach().requires_grad_()
        w_ = weight.detach().clone().requires_grad_()
        if fused:
            out = qk_norm_rope(x_, w_, cos, sin, NORM_EPS).transpose(1, 2)
        else:
            out = apply_rotary(F.rms_norm(x_, (x.size(-1),), w_, NORM_EPS).transpose(1, 2), cos, sin)
        (out * grad).sum().backward()
        results.append((out.detach(), x_.grad, w_.grad))
    (ref_out, ref_x, ref_w), (out, dx, dw) = results
    assert out.is_contiguous() is False and out.transpose(1, 2).is_contiguous()  # (batch, time, heads, dim) memory
    assert torch.allclose(out, ref_out, atol=atol), (out - ref_out).abs().max()
    assert torch.allclose(dx, ref_x, atol=atol), (dx - ref_x).abs().max()
    assert torch.allclose(dw, ref_w, atol=atol * 100), (dw - ref_w).abs().max()


def test_the_op_matches_the_models_path():
    check(*inputs(2, 37, 3, 16), atol=1e-5)


KERNEL_CHECK = r"""
import torch
from engine.kernels.triton_support import use_triton
assert use_triton(torch.zeros(1)), "the Triton interpreter is not in use"
import engine.kernels.qk_rope as Q
import tests.test_qk_rope as T
# 3 x 37 x 5 = 555 heads over several programs, two inner steps each in backward; the last block is partial
Q.BLOCK_ROWS, Q.ROWS_PER_STEP = 64, 32
T.check(*T.inputs(3, 37, 5, 16, seed=1), atol=1e-5)
print("qk_rope kernels ok")
"""


@pytest.mark.slow
def test_the_kernels_match_the_models_path_under_the_interpreter():
    run_under_the_interpreter(KERNEL_CHECK, says="qk_rope kernels ok")


def test_model_with_the_fused_op_matches_its_own_path_eager_and_compiled():
    torch.manual_seed(0)
    model = ModernGPT(tiny_cfg(n_embd=32, n_head=2, context=16, vocab_size=500))
    with torch.no_grad():
        for layer in model.layers:  # norms away from 1, and projections that are not zero, so the op's gradients show
            layer.self_attn.q_norm.weight.add_(0.2 * torch.randn(16))
            layer.self_attn.o_proj.weight.normal_(0, 0.02)

    def fused(on):
        for layer in model.layers:
            layer.self_attn.fused_qk_rope = on

    assert_switch_keeps_loss_and_grads(model, torch.randint(0, 500, (4, 17)), fused)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_kernels_on_the_gpu_match_at_the_70m_shape():
    x, weight, cos, sin, grad = inputs(4, 1024, 8, 64, device="cuda")
    check(x, weight, cos, sin, grad, atol=1e-4)
    # bf16 heads and tables, as in training: within bf16 rounding of the model's own path
    xb, cb, sb = x.bfloat16(), cos.bfloat16(), sin.bfloat16()
    out = qk_norm_rope(xb, weight, cb, sb, NORM_EPS)
    ref = apply_rotary(F.rms_norm(xb, (64,), weight, NORM_EPS).transpose(1, 2), cb, sb).transpose(1, 2)
    assert out.dtype == torch.bfloat16
    assert torch.allclose(out.float(), ref.float(), atol=3e-2, rtol=2e-2), (out.float() - ref.float()).abs().max()
