"""The modern model: parameter budget, shapes, Qwen3 export with equal logits, and it learns."""

import pytest
import torch
import torch.nn.functional as F

from engine.config.loading import ModelConfig, load_profile, model_parameter_count
from engine.models.export_hf import export_hf, load_engine_model
from engine.models.modern import ModernGPT
from engine.train.optim import build_optimizer


def tiny_cfg(**kw) -> ModelConfig:
    return ModelConfig(**{**dict(arch="modern", n_layer=2, n_embd=64, n_head=4, context=64, vocab_size=50257,
                                 bias=False), **kw})


def test_modern_70m_within_5_percent_of_codelion_budget():
    modern, gpt2 = load_profile("modern-70m"), load_profile("codelion-70m")
    with torch.device("meta"):
        n = ModernGPT(modern.model).num_parameters()
    assert n == model_parameter_count(modern.model)
    assert abs(n / model_parameter_count(gpt2.model) - 1) < 0.05


@pytest.mark.parametrize("mlp_hidden", [0, 96, 200])
def test_the_parameter_count_follows_the_mlp_width(mlp_hidden):
    cfg = tiny_cfg(mlp_hidden=mlp_hidden)
    model = ModernGPT(cfg)
    assert model.layers[0].mlp.gate_proj.out_features == (mlp_hidden or 256)  # 8/3 x 64, up to a multiple of 128
    assert model.num_parameters() == model_parameter_count(cfg)


def test_forward_shapes_and_loss():
    torch.manual_seed(0)
    model = ModernGPT(tiny_cfg())
    x = torch.randint(0, 50257, (2, 64))
    assert model(x).shape == (2, 64, 50257)
    assert model(x[:, :10]).shape == (2, 10, 50257)
    loss = model(x[:, :-1], x[:, 1:])
    assert loss.dim() == 0 and abs(loss.item() - torch.log(torch.tensor(50257.0)).item()) < 0.5


@pytest.mark.parametrize("embed_norm,mlp_hidden", [(False, 0), (True, 0), (True, 96)],
                         ids=["plain", "embed-norm", "own-mlp-width"])
def test_exports_to_qwen3_with_equal_logits(tmp_path, embed_norm, mlp_hidden):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = ModernGPT(tiny_cfg(embed_norm=embed_norm, mlp_hidden=mlp_hidden)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # norms away from 1 so a misplaced norm shows
    export_hf(model, tmp_path)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(hf).__name__ == "Qwen3ForCausalLM"
    assert hf.config.intermediate_size == (mlp_hidden or 256) == model.layers[0].mlp.up_proj.out_features
    # with the embedding normalised, the file's input table is the normalised one and its head the raw one
    assert hf.config.tie_word_embeddings is not embed_norm
    x = torch.randint(0, 50257, (2, 64))
    with torch.no_grad():
        ours, theirs = model(x), hf(x).logits
    # float32 on CPU: equal up to summation order
    assert torch.allclose(ours, theirs, atol=1e-4, rtol=1e-4), (ours - theirs).abs().max()
    with torch.no_grad():
        assert torch.equal(load_engine_model(tmp_path).eval()(x), ours)


@pytest.mark.slow
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
    from engine.train.optim import newton_schulz

    torch.manual_seed(0)
    stack = torch.randn(3, 48, 16)
    batched = newton_schulz(stack)
    for i in range(3):
        assert torch.equal(batched[i], newton_schulz(stack[i]))
    # orthogonalised: singular values near 1 (the quintic iteration lands in about [0.7, 1.2])
    s = torch.linalg.svdvals(batched[0].float())
    assert s.min() > 0.5 and s.max() < 1.5


def test_the_normalised_embedding_feeds_the_first_block_unit_rms_rows():
    torch.manual_seed(0)
    model = ModernGPT(tiny_cfg(embed_norm=True, n_layer=0)).eval()
    with torch.no_grad():
        model.embed_tokens.weight.mul_(7.0)  # far from unit scale: the normalisation must undo it
        x = torch.randint(0, 50257, (2, 16))
        raw = model.embed_tokens(x)
        expected = model.norm(F.rms_norm(raw, (64,), eps=1e-6))
        assert torch.allclose(model.hidden(x), expected)
        assert torch.allclose(F.rms_norm(raw, (64,), eps=1e-6).pow(2).mean(-1), torch.ones(2, 16), atol=1e-4)
    assert model.lm_head.weight is model.embed_tokens.weight  # still tied in training: one matrix, one rate


def test_zero_initialised_output_projections_start_each_block_as_the_identity():
    torch.manual_seed(0)
    model = ModernGPT(tiny_cfg(zero_init_proj=True)).eval()
    for layer in model.layers:
        assert not layer.self_attn.o_proj.weight.any() and not layer.mlp.down_proj.weight.any()
        assert layer.self_attn.q_proj.weight.std() > 0.01
    x = torch.randint(0, 50257, (1, 8))
    with torch.no_grad():
        assert torch.allclose(model.hidden(x), model.norm(model.embed_tokens(x)))


def test_the_warmdown_schedule_holds_then_falls_linearly_to_min_lr():
    from engine.train.schedule import lr_factor

    profile = load_profile("modern-70m", ["run.tokens=6_144_000", "batch.micro_batch=60", 'schedule.decay="warmdown"',
                                          "schedule.warmdown=0.4", "schedule.warmup=10"])
    steps, o = profile.steps, profile.optim
    assert steps == 100
    lrs = [lr_factor(s, profile) * o.lr for s in range(steps)]
    assert lrs[9] == o.lr and lrs[10:60] == [o.lr] * 50  # warm-up, then constant until the last 40%
    falling = lrs[60:]
    assert all(a > b for a, b in zip(falling, falling[1:]))
    assert falling[-1] == pytest.approx(o.min_lr + (o.lr - o.min_lr) / 40)


@pytest.mark.parametrize("nesterov,weight_decay", [(True, 0.0), (False, 0.1)])
def test_muon_takes_torch_optim_muons_steps(nesterov, weight_decay):
    """engine.optim.Muon batches same-shaped matrices for speed; its steps are torch.optim.Muon's, to bf16
    rounding of the Newton-Schulz iteration."""
    from engine.train.optim import Muon

    torch.manual_seed(0)
    shapes = [(32, 32), (32, 32), (88, 32), (32, 88), (88, 32)]
    ours = [torch.nn.Parameter(torch.randn(s) * 0.02) for s in shapes]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    start = [p.detach().clone() for p in ours]
    settings = dict(lr=0.04, momentum=0.9, nesterov=nesterov, weight_decay=weight_decay)
    opt_ours = Muon(ours, **settings)
    opt_theirs = torch.optim.Muon(theirs, adjust_lr_fn="original", **settings)
    for _ in range(3):
        grads = [torch.randn(s) for s in shapes]
        for p, q, g in zip(ours, theirs, grads):
            p.grad, q.grad = g.clone(), g.clone()
        opt_ours.step()
        opt_theirs.step()
    for p, q, p0 in zip(ours, theirs, start):
        moved = (q - p0).norm()
        assert moved > 0.01
        assert (p - q).norm() / moved < 0.03, (p.shape, ((p - q).norm() / moved).item())
