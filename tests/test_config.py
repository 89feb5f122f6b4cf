"""Profiles: every shipped profile validates; every class of mistake fails with one line naming file, key and fix."""

import pytest

from engine.config.loading import (
    ConfigError,
    dump_toml,
    flops_per_token,
    list_profiles,
    load_mix,
    load_profile,
    model_parameter_count,
    profile_from_dict,
    profiles_dir,
    read_toml,
    resolve_profile_path,
)


def test_shipped_profiles_validate():
    names = list_profiles()
    assert {"codelion-70m", "smoke-200m", "tiny-cpu"} <= set(names)
    for name in names:
        load_profile(name)


def test_codelion_recipe_matches_published_numbers():
    p = load_profile("codelion-70m")
    assert (p.model.n_layer, p.model.n_embd, p.model.n_head, p.model.context) == (12, 512, 8, 1024)
    assert p.tokens_per_step == 122_880
    assert p.steps == 8139  # 1e9 / 122,880 rounded up
    assert p.warmup_steps == 162
    assert (p.optim.lr, p.optim.min_lr, p.schedule.decay, p.run.precision) == (5e-4, 5e-5, "cosine", "bf16")
    assert model_parameter_count(p.model) == 64_085_504
    # BASELINES.md: about 456.9 MFLOP per token
    assert flops_per_token(p.model) == pytest.approx(456.9e6, rel=1e-3)


def test_smoke_profile_is_same_shape_200m_tokens():
    a, b = load_profile("codelion-70m"), load_profile("smoke-200m")
    assert a.model == b.model and b.run.tokens == 200_000_000


def _err(overrides):
    with pytest.raises(ConfigError) as e:
        load_profile("tiny-cpu", overrides)
    msg = str(e.value)
    assert "\n" not in msg
    assert "tiny-cpu.toml" in msg
    return msg


@pytest.mark.parametrize("override, expected", [
    ("model.n_layers=3", "unknown key 'model.n_layers' (did you mean 'n_layer'?)"),
    ("modle.n_layer=3", "unknown key 'modle'"),
    ("model.n_layer='three'", "model.n_layer must be an integer"),
    ("model.tie_embeddings=1", "model.tie_embeddings must be true or false"),
    ("optim.lr='fast'", "optim.lr must be a number"),
    ("optim.betas=[0.9]", "optim.betas must be two numbers"),
    ("model.n_head=5", "model.n_head (5) must divide model.n_embd (64); head counts that divide 64: 1, 2, 4, 8"),
    ("batch.micro_batch=0", "batch.micro_batch must be a positive integer"),
    ("batch.grad_accum=-1", "batch.grad_accum must be a positive integer"),
    ("optim.min_lr=1.0", "optim.min_lr (1.0) must not exceed optim.lr"),
    ("optim.lr=0", "optim.lr must be > 0"),
    ("schedule.decay='exp'", "schedule.decay must be cosine, linear, constant, warmdown or range"),
    ("schedule.warmdown=0", "schedule.warmdown must be a fraction of the steps in (0, 1]"),
    ("schedule.warmup=100000", "longer than the run"),
    ("run.precision='fp16'", "run.precision must be 'bf16' or 'fp32'"),
    ("run.device='tpu'", "run.device must be auto, cuda or cpu"),
    ("model.dropout=1.5", "model.dropout must be in [0, 1)"),
    ("model.embed_norm=true", "model.embed_norm, model.zero_init_proj and model.mlp_hidden need model.arch = 'modern'"),
    ("model.mlp_hidden=128", "model.embed_norm, model.zero_init_proj and model.mlp_hidden need model.arch = 'modern'"),
    ("thermal.pause_above_c=90", "thermal.resume_below_c"),
    ("dist.nproc_per_node=3", "batch.grad_accum (2) must be divisible by the 3 processes"),
])
def test_each_mistake_names_key_and_fix(override, expected):
    assert expected in _err([override])


def test_override_without_equals():
    with pytest.raises(ConfigError, match=r"^--set optim.lr: expected key=value"):
        load_profile("tiny-cpu", ["optim.lr"])


def test_bad_toml_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\nn_layer = 2\n")
    with pytest.raises(ConfigError, match=r"bad.toml: not valid TOML"):
        load_profile(str(bad))


def test_missing_profile_lists_available():
    with pytest.raises(ConfigError, match=r"profile 'nope' not found .*available: .*tiny-cpu"):
        resolve_profile_path("nope")


def test_overrides_apply_and_toml_roundtrip(tmp_path):
    p = load_profile("tiny-cpu", ["optim.lr=1e-3", "run.tokens=1_000", "run.compile=true"])
    assert p.optim.lr == 1e-3 and p.run.tokens == 1000 and p.run.compile is True
    text = dump_toml(p.to_dict())
    f = tmp_path / "again.toml"
    f.write_text(text)
    again = profile_from_dict(read_toml(f), str(f))
    assert again.to_dict() == p.to_dict()


def test_mix_errors(tmp_path):
    def mix(text):
        f = tmp_path / "m.toml"
        f.write_text(text)
        with pytest.raises(ConfigError) as e:
            load_mix(str(f))
        assert "\n" not in str(e.value) and "m.toml" in str(e.value)
        return str(e.value)

    src = '[[sources]]\nname = "a"\npath = "x.txt"\n'
    assert "sources.a.weight must be a number > 0" in mix(src + "weight = 0\n")
    assert "sources.a.weight must be a number" in mix(src + 'weight = "half"\n')
    assert "sources.a needs a weight" in mix(src)
    assert "unknown key 'sources.a.wieght'" in mix(src + "wieght = 1\n")
    assert "unknown key 'tokeniser'" in mix('tokeniser = "gpt2"\n' + src + "weight = 1\n")
    assert "needs exactly one of hf" in mix('[[sources]]\nname = "a"\nweight = 1\n')
    assert "needs at least one [[sources]]" in mix('description = "empty"\n')
    assert "${NOPE_NOT_SET}" in mix('[[sources]]\nname = "a"\nweight = 1\npath = "${NOPE_NOT_SET}/x"\n')


def test_mix_paths_resolve_against_mix_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_POSTS", str(tmp_path / "posts"))
    f = tmp_path / "sub" / "m.toml"
    f.parent.mkdir()
    f.write_text('[[sources]]\nname = "rel"\nweight = 1\npath = "data/a.txt"\n'
                 '[[sources]]\nname = "env"\nweight = 3\npath = "${MY_POSTS}"\n')
    m = load_mix(str(f))
    assert m.sources[0].path == str(tmp_path / "sub" / "data" / "a.txt")
    assert m.sources[1].path == str(tmp_path / "posts")
    assert m.shares == {"rel": 0.25, "env": 0.75}


def test_a_negative_mlp_width_is_refused():
    with pytest.raises(ConfigError, match=r"modern-70m.toml with --set model.mlp_hidden=-1: model.mlp_hidden must be >= 0 \(0 = the default width\)"):
        load_profile("modern-70m", ["model.mlp_hidden=-1"])


def test_a_profile_without_a_mix_needs_one_named(tmp_path):
    from engine.config.loading import load_run_inputs

    lone = tmp_path / "lone.toml"
    lone.write_text((profiles_dir() / "tiny-cpu.toml").read_text().replace('mix = "demo"', ""))
    with pytest.raises(ConfigError, match=r"lone.toml: no mix given; .* pass --mix NAME"):
        load_run_inputs(str(lone), None, [])
    profile, mix = load_run_inputs(str(lone), "demo", [])
    assert mix.name == "demo" and profile.mix == ""


def test_train_without_a_profile_starts_the_recommended_one():
    from engine.cli.parser import build_parser

    assert build_parser().parse_args(["train"]).profile == "modern-70m"
    assert build_parser().parse_args(["doctor"]).profile == "modern-70m"


def test_the_next_size_up_has_gpt2_smalls_shape_and_parameter_budgets():
    """gpt2-124m is GPT-2 small (124.4M parameters with tied embeddings); modern-124m stays within 1% of it."""
    from engine.config.loading import load_profile
    from engine.config.model_size import model_parameter_count

    gpt2, modern = load_profile("gpt2-124m"), load_profile("modern-124m")
    for p in (gpt2, modern):
        assert (p.model.n_layer, p.model.n_embd, p.model.n_head, p.model.context) == (12, 768, 12, 1024)
    assert model_parameter_count(gpt2.model) == 124_439_808
    assert abs(model_parameter_count(modern.model) / model_parameter_count(gpt2.model) - 1) < 0.01
