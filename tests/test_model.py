"""The GPT-2 model: exact parameter count, and Hugging Face export gives the same logits."""

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
