"""GELU with the first MLP product's bias and its gradient fused in, against PyTorch's own GELU and autograd."""

import pytest
import torch
import torch.nn.functional as F
from triton_helpers import run_under_the_interpreter

from engine.config.loading import ModelConfig
from engine.kernels.gelu import gelu_bias
from engine.models.gpt2 import GPT
from tests.test_model import assert_switch_keeps_loss_and_grads


def reference(h, bias, grad):
    h = h.detach().clone().requires_grad_()
    bias = bias.detach().clone().requires_grad_()
    out = F.gelu(h + bias, approximate="tanh")
    (out * grad).sum().backward()
    return out.detach(), h.grad, bias.grad


def check(h, bias, grad, atol):
    ref_out, ref_h, ref_bias = reference(h, bias, grad)
    h = h.detach().clone().requires_grad_()
    bias = bias.detach().clone().requires_grad_()
    out = gelu_bias(h, bias)
    (out * grad).sum().backward()
    assert torch.allclose(out, ref_out, atol=atol), (out - ref_out).abs().max()
    assert torch.allclose(h.grad, ref_h, atol=atol), (h.grad - ref_h).abs().max()
    assert torch.allclose(bias.grad, ref_bias, atol=atol * 10), (bias.grad - ref_bias).abs().max()


def test_gelu_bias_matches_pytorch():
    g = torch.Generator().manual_seed(0)
    h, bias = torch.randn(2, 150, 96, generator=g) * 3, torch.randn(96, generator=g)
    check(h, bias, torch.randn(2, 150, 96, generator=g), atol=1e-5)


KERNEL_CHECK = r"""
import pytest
import torch
import engine.kernels.gelu as G
from engine.kernels.triton_support import use_triton
assert use_triton(torch.zeros(1)), "the Triton interpreter is not in use"
import tests.test_gelu as T
g = torch.Generator().manual_seed(1)
# 300 rows: the last block of rows is partial; 96 columns: so is the only block of columns
h, bias = torch.randn(300, 96, generator=g) * 3, torch.randn(96, generator=g)
T.check(h, bias, torch.randn(300, 96, generator=g), atol=1e-5)
print("gelu kernels ok")
"""


@pytest.mark.slow
def test_gelu_kernels_match_pytorch_under_the_interpreter():
    run_under_the_interpreter(KERNEL_CHECK, says="gelu kernels ok")


@pytest.mark.slow
def test_model_with_fused_gelu_matches_the_plain_mlp_eager_and_compiled():
    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layer=2, n_embd=32, n_head=2, context=16, vocab_size=500))

    def fused(on):
        for block in model.h:
            block.mlp.fused_gelu = on

    assert_switch_keeps_loss_and_grads(model, torch.randint(0, 500, (4, 17)), fused)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gelu_kernels_on_the_gpu_match_pytorch_at_the_70m_width():
    g = torch.Generator(device="cuda").manual_seed(0)
    h = torch.randn(4 * 1024 + 17, 2048, device="cuda", generator=g)
    bias = torch.randn(2048, device="cuda", generator=g)
    grad = torch.randn(h.shape, device="cuda", generator=g)
    check(h, bias, grad, atol=1e-4)
    # bf16 activations, as in training: within bf16 rounding of the fp32 result
    out = gelu_bias(h.bfloat16(), bias)
    assert out.dtype == torch.bfloat16
    assert torch.allclose(out.float(), F.gelu(h.bfloat16().float() + bias, approximate="tanh"), atol=2e-2, rtol=1e-2)
