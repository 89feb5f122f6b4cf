"""The New run form's plan without Textual: the engine's own arithmetic and validation for an edited profile and
mix, the overrides the CLI accepts, projections from a finished run or the saved ceilings, and the files it saves.
"""

from __future__ import annotations

import pytest

from engine.config.loading import ConfigError, load_mix, load_profile
from sparknet_tui.plan import (
    load_mix_source,
    load_profile_source,
    make_plan,
    save_mix,
    save_profile,
)

pytest_plugins = ["tui_fixtures"]


def test_plan_of_an_unedited_profile_matches_the_engine(private_profiles):
    source, mix = load_profile_source("tiny-cpu"), load_mix_source("demo")
    plan = make_plan(source, mix, source.field_defaults(), mix.weight_defaults(), [])
    engine_profile = load_profile("tiny-cpu")
    assert plan.ok and plan.overrides == [] and not plan.weights_changed
    assert plan.steps == engine_profile.steps
    assert plan.tokens_per_step == engine_profile.tokens_per_step
    shares = load_mix("demo").shares
    assert [(n, s) for n, s, _ in plan.per_source] == list(shares.items())
    assert sum(t for *_, t in plan.per_source) == pytest.approx(plan.steps * plan.tokens_per_step, abs=3)
    assert plan.duration_s is None  # no finished run of this shape to measure


def test_without_a_finished_run_the_plan_projects_from_the_ceilings_doctor_saved(private_profiles, tmp_path,
                                                                                 monkeypatch):
    from engine.config.ceilings import projected_tokens_per_s, read_ceilings, save_ceilings

    monkeypatch.setenv("SPARKNET_CACHE", str(tmp_path / "cache"))
    save_ceilings("NVIDIA GB10", {"matmul_tflops": 92.0, "bandwidth_gbs": 240.0, "fast_paths_off": ["fp8_head"]})
    source, mix = load_profile_source("codelion-70m"), load_mix_source("demo")
    plan = make_plan(source, mix, source.field_defaults(), mix.weight_defaults(), [], read_ceilings())
    expected = projected_tokens_per_s(92.0, 240.0, plan.flops_per_token, ["fp8_head"])
    assert plan.projected_on == "NVIDIA GB10" and plan.throughput == pytest.approx(expected)
    assert plan.duration_s == pytest.approx(plan.steps * plan.tokens_per_step / expected)


def test_plan_turns_edits_into_the_overrides_the_cli_accepts(private_profiles):
    source, mix = load_profile_source("tiny-cpu"), load_mix_source("demo")
    fields = source.field_defaults() | {"model.n_layer": "3", "run.tokens": "40_960"}
    plan = make_plan(source, mix, fields, mix.weight_defaults(), [])
    assert plan.ok, plan.error
    assert sorted(plan.overrides) == ["model.n_layer=3", "run.tokens=40_960"]
    engine_profile = load_profile("tiny-cpu", plan.overrides)
    assert plan.profile.model.n_layer == engine_profile.model.n_layer == 3
    assert plan.steps == engine_profile.steps == 40_960 // engine_profile.tokens_per_step


@pytest.mark.parametrize("key, text, field, words", [
    ("model.n_head", "3", "model.n_head", "must divide"),
    ("optim.min_lr", "1.0", "optim.min_lr", "must not exceed"),
    ("batch.micro_batch", "abc", "batch.micro_batch", "must be an integer"),
    ("run.tokens", "", "run.tokens", "empty"),
])
def test_plan_reports_the_engines_validation_error(private_profiles, key, text, field, words):
    source, mix = load_profile_source("tiny-cpu"), load_mix_source("demo")
    plan = make_plan(source, mix, source.field_defaults() | {key: text}, mix.weight_defaults(), [])
    assert not plan.ok
    assert plan.error_field == field
    assert words in plan.error


def test_plan_validates_mix_weights(private_profiles):
    source, mix = load_profile_source("tiny-cpu"), load_mix_source("demo")
    weights = mix.weight_defaults() | {"towns": "-1"}
    plan = make_plan(source, mix, source.field_defaults(), weights, [])
    assert plan.error_field == "weight:towns" and "weight" in plan.error
    weights = mix.weight_defaults() | {"towns": "0.3"}
    plan = make_plan(source, mix, source.field_defaults(), weights, [])
    assert plan.ok and plan.weights_changed
    assert dict((n, s) for n, s, _ in plan.per_source)["towns"] == pytest.approx(0.3 / 1.2)


def test_saved_profile_and_mix_load_in_the_engine(private_profiles):
    source, mix = load_profile_source("tiny-cpu"), load_mix_source("demo")
    fields = source.field_defaults() | {"model.n_layer": "3"}
    weights = mix.weight_defaults() | {"stories": "0.5"}
    plan = make_plan(source, mix, fields, weights, [])
    profile_path = save_profile(plan, "tiny-3", "demo-light")
    mix_path = save_mix(plan, "demo-light", mix.path)
    assert mix_path == private_profiles / "mixes" / "demo-light.toml"
    assert profile_path == private_profiles / "tiny-3.toml"
    saved = load_profile("tiny-3")
    assert saved.model.n_layer == 3 and saved.mix == "demo-light"
    saved_mix = load_mix("demo-light")
    assert saved_mix.shares["stories"] == pytest.approx(0.5 / 0.8)
    assert [s.path for s in saved_mix.sources] == [s.path for s in load_mix("demo").sources]
    with pytest.raises(ConfigError, match="exists"):
        save_profile(plan, "tiny-3", "demo")
    with pytest.raises(ConfigError, match="letters, digits"):
        save_mix(plan, "../escape", mix.path)
    with pytest.raises(ConfigError, match="type a name for the new mix in 'save mix as' first"):
        save_mix(plan, "  ", mix.path)
    assert not list(private_profiles.glob(".*.tmp")) and not list(private_profiles.parent.glob("escape*"))


def test_a_broken_profile_file_is_one_line(private_profiles):
    (private_profiles / "broken.toml").write_text("[model]\nn_layers = 2\n")
    with pytest.raises(ConfigError) as e:
        load_profile_source("broken")
    assert "n_layers" in str(e.value) and "\n" not in str(e.value)
