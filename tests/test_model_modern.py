"""The modern model: parameter budget, shapes, Qwen3 export with equal logits, and it learns."""

import torch

from engine.config import ModelConfig, load_profile, model_parameter_count
from engine.export import export_hf, load_engine_model
from engine.model_modern import ModernGPT
from engine.optim import build_optimizer


def tiny_cfg(**kw) -> ModelConfig:
    return ModelConfig(**{**dict(arch="modern", n_layer=2, n_embd=64, n_head=4, context=64, vocab_size=50257,
                                 bias=False), **kw})


def test_modern_70m_within_5_percent_of_codelion_budget():
    modern, gpt2 = load_profile("modern-70m"), load_profile("codelion-70m")
    with torch.device("meta"):
        n = ModernGPT(modern.model).num_parameters()
    assert n == model_parameter_count(modern.model)
    assert abs(n / model_parameter_count(gpt2.model) - 1) < 0.05


def test_forward_shapes_and_loss():
    torch.manual_seed(0)
    model = ModernGPT(tiny_cfg())
    x = torch.randint(0, 50257, (2, 64))
    assert model(x).shape == (2, 64, 50257)
    assert model(x[:, :10]).shape == (2, 10, 50257)
    loss = model(x[:, :-1], x[:, 1:])
    assert loss.dim() == 0 and abs(loss.item() - torch.log(torch.tensor(50257.0)).item()) < 0.5


def test_exports_to_qwen3_with_equal_logits(tmp_path):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = ModernGPT(tiny_cfg()).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # norms away from 1 so a misplaced norm shows
    export_hf(model, tmp_path)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(hf).__name__ == "Qwen3ForCausalLM"
    x = torch.randint(0, 50257, (2, 64))
    with torch.no_grad():
        ours, theirs = model(x), hf(x).logits
    # float32 on CPU: equal up to summation order
    assert torch.allclose(ours, theirs, atol=1e-4, rtol=1e-4), (ours - theirs).abs().max()
    with torch.no_grad():
        assert torch.equal(load_engine_model(tmp_path).eval()(x), ours)


def test_a_few_muon_steps_lower_the_loss():
    torch.manual_seed(0)
    profile = load_profile("modern-70m", ["model.n_layer=2", "model.n_embd=64", "model.n_head=4",
                                          "model.context=32", "run.tokens=4096"])
    model = ModernGPT(profile.model)
    opt = build_optimizer(model, profile, torch.device("cpu"))
    assert len(opt.optimizers) == 2  # AdamW + Muon
    x = torch.randint(0, 1000, (8, 33))  # a fixed batch: the model must fit it
    first = None
    for _ in range(15):
        loss = model(x[:, :-1], x[:, 1:])
        loss.backward()
        opt.step()
        opt.zero_grad()
        first = first or loss.item()
    assert loss.item() < first - 1.0, (first, loss.item())


def test_batched_newton_schulz_equals_one_at_a_time():
    from engine.optim import newton_schulz

    torch.manual_seed(0)
    stack = torch.randn(3, 48, 16)
    batched = newton_schulz(stack)
    for i in range(3):
        assert torch.equal(batched[i], newton_schulz(stack[i]))
    # orthogonalised: singular values near 1 (the quintic iteration lands in about [0.7, 1.2])
    s = torch.linalg.svdvals(batched[0].float())
    assert s.min() > 0.5 and s.max() < 1.5
