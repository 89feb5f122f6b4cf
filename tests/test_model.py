"""The GPT-2 model: exact parameter count, and Hugging Face export gives the same logits."""

import functools

import pytest
import torch
import torch.nn.functional as F

from engine.config.loading import ConfigError, ModelConfig, load_profile, model_parameter_count
from engine.models.export_hf import export_hf, load_engine_model
from engine.models.gpt2 import GPT
from engine.models.parts import num_parameters
from engine.models.registry import build_model


def test_codelion_70m_has_exactly_64_085_504_parameters():
    cfg = load_profile("codelion-70m").model
    with torch.device("meta"):
        model = GPT(cfg)
    assert model.num_parameters() == 64_085_504 == model_parameter_count(cfg)


def test_untied_and_biasless_counts_agree():
    for cfg in (ModelConfig(n_layer=2, n_embd=32, n_head=4, context=16, vocab_size=100, tie_embeddings=False),
                ModelConfig(n_layer=1, n_embd=32, n_head=2, context=16, vocab_size=100, bias=False)):
        assert GPT(cfg).num_parameters() == model_parameter_count(cfg)


@pytest.mark.slow
def test_hf_export_gives_same_logits(tmp_path):
    from transformers import GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = ModelConfig(n_layer=2, n_embd=64, n_head=4, context=64, vocab_size=50257)
    model = GPT(cfg).eval()
    # make the weights non-trivial so a transposed or misnamed tensor cannot hide
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    export_hf(model, tmp_path)
    hf = GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    x = torch.randint(0, cfg.vocab_size, (3, 64))
    with torch.no_grad():
        ours, theirs = model(x), hf(x).logits
    # float32 on CPU: the two implementations differ only in summation order
    assert torch.allclose(ours, theirs, atol=1e-4, rtol=1e-4), (ours - theirs).abs().max()
    again = load_engine_model(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(again(x), ours)


def test_loss_of_untrained_model_is_near_uniform():
    torch.manual_seed(0)
    cfg = ModelConfig(n_layer=1, n_embd=32, n_head=2, context=32, vocab_size=1000)
    x = torch.randint(0, 1000, (4, 33))
    loss = GPT(cfg)(x[:, :-1], x[:, 1:]).item()
    assert abs(loss - torch.log(torch.tensor(1000.0)).item()) < 0.2


def assert_switch_keeps_loss_and_grads(model: GPT, x: torch.Tensor, switch) -> list[dict[str, torch.Tensor]]:
    """Trains one batch with `switch(False)`, then with `switch(True)` eager and compiled, and checks that the loss and
    every gradient stay the same; returns the gradients of the switched runs."""
    results = []
    for on, compiled in ((False, False), (True, False), (True, True)):
        switch(on)
        model.zero_grad()
        run = torch.compile(model) if compiled else model
        loss = run(x[:, :-1], x[:, 1:])
        loss.backward()
        results.append((loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (plain_loss, plain_grads), *switched = results
    for loss, grads in switched:
        assert abs(loss - plain_loss) < 1e-5
        for name, grad in grads.items():
            assert torch.allclose(grad, plain_grads[name], atol=1e-5), (name, (grad - plain_grads[name]).abs().max())
    return [grads for _, grads in switched]


def gpt2_attention(attn, x: torch.Tensor) -> torch.Tensor:
    """GPT-2's own attention: one product for query, key and value, then the split, every bias where it was."""
    B, T, C = x.shape
    q, k, v = (t.view(B, T, attn.n_head, C // attn.n_head).transpose(1, 2) for t in attn.c_attn(x).split(C, dim=2))
    y = F.scaled_dot_product_attention(q, k, v, dropout_p=attn.dropout if attn.training else 0.0, is_causal=True)
    return attn.resid_dropout(attn.c_proj(y.transpose(1, 2).contiguous().view(B, T, C)))


def use_gpt2_attention(model: GPT, on: bool) -> None:
    for block in model.h:
        if on:
            block.attn.forward = functools.partial(gpt2_attention, block.attn)
        else:
            block.attn.__dict__.pop("forward", None)


@pytest.mark.slow
def test_three_products_and_the_bias_rewrites_compute_gpt2s_attention_eager_and_compiled():
    torch.manual_seed(0)
    cfg = ModelConfig(n_layer=2, n_embd=32, n_head=2, context=16, vocab_size=500)
    model = GPT(cfg)
    with torch.no_grad():  # non-zero biases, so a misplaced bias slice cannot hide
        for block in model.h:
            block.attn.c_attn.bias.normal_(0.0, 0.1)

    # switch(True) is GPT-2's formula here, so the gradients returned are the reference's
    assert_switch_keeps_loss_and_grads(model, torch.randint(0, 500, (4, 17)), lambda on: use_gpt2_attention(model, on))
    use_gpt2_attention(model, False)
    model.zero_grad()
    x = torch.randint(0, 500, (4, 17))
    model(x[:, :-1], x[:, 1:]).backward()
    bias_grad = model.h[0].attn.c_attn.bias.grad
    # the key bias cannot change any output: its gradient is exactly zero, not rounding noise
    assert (bias_grad[32:64] == 0).all()
    assert bias_grad[64:].abs().max() > 1e-4  # the value bias still learns


def test_attention_with_dropout_keeps_the_value_bias_in_place():
    cfg = ModelConfig(n_layer=1, n_embd=32, n_head=2, context=16, vocab_size=500, dropout=0.5)
    model = GPT(cfg)
    with torch.no_grad():
        model.h[0].attn.c_attn.bias.normal_(0.0, 0.1)
    x = torch.randint(0, 500, (4, 17))
    results = []
    for reference in (True, False):
        use_gpt2_attention(model, reference)
        model.zero_grad()
        torch.manual_seed(1)  # the same dropout masks for both paths
        model(x[:, :-1], x[:, 1:]).backward()
        results.append({n: p.grad.clone() for n, p in model.named_parameters()})
    gpt2, ours = results
    for name in gpt2:
        assert torch.allclose(ours[name], gpt2[name], atol=1e-5), name


@pytest.mark.parametrize("arch", ["gpt2", "modern"])
def test_export_names_the_tokenizers_own_end_of_text_token(tmp_path, arch):
    from cli_helpers import DEMO_TOKENIZER
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from engine.data.tokenizer import load_tokenizer
    from engine.models.registry import build_model

    tok = load_tokenizer(str(DEMO_TOKENIZER))  # its end-of-text token is id 0, not GPT-2's 50256
    model = build_model(ModelConfig(arch=arch, n_layer=1, n_embd=32, n_head=2, context=32, vocab_size=tok.n_vocab))
    export_hf(model, tmp_path, tok)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert hf.config.eos_token_id == hf.config.bos_token_id == tok.eos_id == 0
    assert AutoTokenizer.from_pretrained(tmp_path).eos_token_id == 0


def test_every_architecture_is_registered_once_with_its_counts_and_its_network():
    from engine.config.architectures import ARCHITECTURES
    from engine.models.registry import NETWORKS

    assert set(ARCHITECTURES) == set(NETWORKS)
    for arch in ARCHITECTURES:
        cfg = ModelConfig(arch=arch, n_layer=2, n_embd=64, n_head=4, context=32, vocab_size=300,
                          bias=arch == "gpt2")
        assert model_parameter_count(cfg) == num_parameters(build_model(cfg)), arch
    with pytest.raises(ConfigError, match="model.arch must be one of gpt2, modern, got 'llama'"):
        load_profile("tiny-cpu", ['model.arch="llama"'])
