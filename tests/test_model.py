"""The GPT-2 model: exact parameter count, and Hugging Face export gives the same logits."""

import pytest
import torch

from engine.config import ModelConfig, load_profile, model_parameter_count
from engine.export import export_hf, load_engine_model
from engine.model import GPT


def test_codelion_70m_has_exactly_64_085_504_parameters():
    cfg = load_profile("codelion-70m").model
    with torch.device("meta"):
        model = GPT(cfg)
    assert model.num_parameters() == 64_085_504 == model_parameter_count(cfg)


def test_untied_and_biasless_counts_agree():
    for cfg in (ModelConfig(n_layer=2, n_embd=32, n_head=4, context=16, vocab_size=100, tie_embeddings=False),
                ModelConfig(n_layer=1, n_embd=32, n_head=2, context=16, vocab_size=100, bias=False)):
        assert GPT(cfg).num_parameters() == model_parameter_count(cfg)


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


def test_separate_qkv_products_match_the_split_product_eager_and_compiled():
    torch.manual_seed(0)
    cfg = ModelConfig(n_layer=2, n_embd=32, n_head=2, context=16, vocab_size=500)
    model = GPT(cfg)
    with torch.no_grad():  # non-zero biases, so a misplaced bias slice cannot hide
        for block in model.h:
            block.attn.c_attn.bias.normal_(0.0, 0.1)

    def separate(on):
        for block in model.h:
            block.attn.separate_qkv = on

    for grads in assert_switch_keeps_loss_and_grads(model, torch.randint(0, 500, (4, 17)), separate):
        # the key bias cannot change any output: its gradient is exactly zero, not rounding noise
        assert (grads["h.0.attn.c_attn.bias"][32:64] == 0).all()
        assert grads["h.0.attn.c_attn.bias"][64:].abs().max() > 1e-4  # the value bias still learns


def test_separate_qkv_with_attention_dropout_keeps_the_value_bias_in_place():
    cfg = ModelConfig(n_layer=1, n_embd=32, n_head=2, context=16, vocab_size=500, dropout=0.5)
    model = GPT(cfg)
    with torch.no_grad():
        model.h[0].attn.c_attn.bias.normal_(0.0, 0.1)
    x = torch.randint(0, 500, (4, 17))
    results = []
    for separate in (False, True):
        model.h[0].attn.separate_qkv = separate
        model.zero_grad()
        torch.manual_seed(1)  # the same dropout masks for both paths
        model(x[:, :-1], x[:, 1:]).backward()
        results.append({n: p.grad.clone() for n, p in model.named_parameters()})
    split, separate = results
    for name in split:
        assert torch.allclose(separate[name], split[name], atol=1e-5), name


@pytest.mark.parametrize("arch", ["gpt2", "modern"])
def test_export_names_the_tokenizers_own_end_of_text_token(tmp_path, arch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cli_helpers import DEMO_TOKENIZER
    from engine.model import build_model
    from engine.tokenizer import load_tokenizer

    tok = load_tokenizer(str(DEMO_TOKENIZER))  # its end-of-text token is id 0, not GPT-2's 50256
    model = build_model(ModelConfig(arch=arch, n_layer=1, n_embd=32, n_head=2, context=32, vocab_size=tok.n_vocab))
    export_hf(model, tmp_path, tok)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert hf.config.eos_token_id == hf.config.bos_token_id == tok.eos_id == 0
    assert AutoTokenizer.from_pretrained(tmp_path).eos_token_id == 0
