"""The New run screen with Textual's Pilot: validation as you type, the plan, saving, starting, warnings."""

from __future__ import annotations

import json

import pytest
from pilot_helpers import make_app, open_new_run, plain, settle, wait_until
from textual.widgets import Input, Select, Static
from tui_fixtures import copy_run

from engine.config.loading import load_mix, load_profile
from sparknet_tui.screens.new_run import field_id

pytest_plugins = ["tui_fixtures", "frozen_runs"]


# ---------------------------------------------------------------- New run


async def type_into(pilot, app, screen, key: str, text: str) -> None:
    field = screen.query_one(f"#{field_id(key)}", Input)
    field.focus()
    field.value = ""
    await pilot.press(*text) if text else None
    await settle(pilot, app)


@pytest.mark.slow
async def test_new_run_validates_as_you_type(private_logs, private_profiles):
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_new_run(pilot, app)
        profile = load_profile("tiny-cpu")
        assert screen.query_one("#profile-select", Select).value == "tiny-cpu"
        assert screen.query_one("#mix-select", Select).value == profile.mix
        derived = plain(screen.query_one("#derived", Static))
        assert f"{profile.steps:,}" in derived and f"{profile.tokens_per_step:,}" in derived
        assert "unknown" in derived  # no finished run of this shape here yet
        for name in load_mix(profile.mix).shares:
            assert name in derived

        await type_into(pilot, app, screen, "model.n_head", "3")
        error = plain(screen.query_one("#new-error", Static))
        assert "model.n_head (3) must divide model.n_embd" in error
        assert screen.query_one(f"#{field_id('model.n_head')}", Input).has_class("-invalid")
        await pilot.press("ctrl+r")  # refused while invalid: no run starts
        await settle(pilot, app)
        assert list(private_logs.iterdir()) == []

        await type_into(pilot, app, screen, "model.n_head", "8")
        assert "valid" in plain(screen.query_one("#new-error", Static))
        assert not screen.query_one(f"#{field_id('model.n_head')}", Input).has_class("-invalid")
        await type_into(pilot, app, screen, "run.tokens", "40960")
        derived = plain(screen.query_one("#derived", Static))
        steps = 40960 // profile.tokens_per_step
        assert f"steps       {steps}" in derived
        assert "--set model.n_head=8 run.tokens=40960" in derived


async def test_new_run_warns_that_a_second_run_halves_both(private_logs, private_profiles, frozen_runs):
    run = copy_run(frozen_runs.running, private_logs)
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_new_run(pilot, app)
        await wait_until(pilot, app, lambda: "half speed" in plain(screen.query_one("#new-error", Static)))
        assert f"{run.name} is training on this machine" in plain(screen.query_one("#new-error", Static))


@pytest.mark.slow
async def test_new_run_estimates_duration_from_finished_runs(private_logs, private_profiles, tiny_runs):
    copy_run(tiny_runs.finished, private_logs)
    speed = json.loads((tiny_runs.finished / "status.json").read_text())["tokens_per_s"]
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_new_run(pilot, app)
        await wait_until(pilot, app, lambda: screen.runs != [])
        derived = plain(screen.query_one("#derived", Static))
        profile = load_profile("tiny-cpu")
        from engine.formatting import fmt_duration

        assert f"≈ {fmt_duration(profile.steps * profile.tokens_per_step / speed)}" in derived
        assert "median of 1 finished run" in derived
        # another model shape has no measurement
        await type_into(pilot, app, screen, "model.n_layer", "3")
        assert "unknown" in plain(screen.query_one("#derived", Static))


async def test_new_run_projects_the_duration_from_the_ceilings_doctor_saved(private_logs, private_profiles, tmp_path,
                                                                            monkeypatch):
    from engine.config.ceilings import save_ceilings

    monkeypatch.setenv("SPARKNET_CACHE", str(tmp_path / "cache"))
    save_ceilings("NVIDIA GB10", {"matmul_tflops": 92.0, "bandwidth_gbs": 240.0})
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_new_run(pilot, app)
        await wait_until(pilot, app, lambda: screen.ceilings != {})
        derived = plain(screen.query_one("#derived", Static))
        assert "projected from the ceilings `sparknet doctor` measured on the NVIDIA GB10" in derived


@pytest.mark.slow
async def test_new_run_saves_a_profile_and_a_mix(private_logs, private_profiles):
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_new_run(pilot, app)
        await type_into(pilot, app, screen, "model.n_layer", "3")
        name = screen.query_one("#save-profile-name", Input)
        name.value = "tiny-three"
        await pilot.press("ctrl+s")
        await settle(pilot, app)
        assert load_profile("tiny-three").model.n_layer == 3
        assert screen.query_one("#profile-select", Select).value == "tiny-three"
        name.value = "tiny-three"
        await pilot.press("ctrl+s")  # never over an existing profile
        await settle(pilot, app)
        assert any("exists" in n.message for n in app._notifications)

        first_source, weight = next(iter(screen.weight_inputs.items()))
        weight.value = "2.0"
        await settle(pilot, app)
        assert screen.plan.weights_changed
        # what the screen calls valid starts: an edited mix is not called valid
        line = plain(screen.query_one("#new-error", Static))
        assert "valid" not in line and "save the mix (ctrl+o)" in line
        await pilot.press("ctrl+r")  # an edited mix must be saved before it can run
        await settle(pilot, app)
        assert any("save the mix first" in n.message for n in app._notifications)
        assert list(private_logs.iterdir()) == []
        screen.query_one("#save-mix-name", Input).value = "demo-heavy"
        await pilot.press("ctrl+o")
        await settle(pilot, app)
        assert load_mix("demo-heavy").sources[0].weight == 2.0
        assert screen.query_one("#mix-select", Select).value == "demo-heavy"
        assert not screen.plan.weights_changed and screen.plan.mix.sources[0].name == first_source
        await wait_until(pilot, app, lambda: plain(screen.query_one("#new-error", Static)).startswith("valid"))
        assert f"{screen.plan.steps:,} steps" in plain(screen.query_one("#new-error", Static))
        # the edited hyperparameters survive switching to the saved mix
        assert screen.query_one(f"#{field_id('model.n_layer')}", Input).value == "3"


async def test_new_run_with_a_broken_profile_shows_the_error(private_logs, private_profiles):
    (private_profiles / "tiny-cpu.toml").write_text("[model]\nn_layers = 2\n")
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_new_run(pilot, app)
        error = plain(screen.query_one("#new-error", Static))
        assert "unknown key 'model.n_layers'" in error
        await pilot.press("ctrl+r")
        await settle(pilot, app)
        assert app.is_running and list(private_logs.iterdir()) == []


@pytest.mark.slow
async def test_new_run_checks_the_sources_before_it_says_valid(private_logs, private_profiles):
    broken = private_profiles / "mixes" / "demo.toml"
    broken.write_text(broken.read_text().replace('path = "demo/stories.jsonl"', 'path = "demo/no-stories.jsonl"'))
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_new_run(pilot, app)
        await wait_until(pilot, app, lambda: "checking" not in plain(screen.query_one("#new-error", Static)))
        error = plain(screen.query_one("#new-error", Static))
        assert "no-stories.jsonl does not exist" in error and str(broken) in error.replace("\n", "")
        assert "valid" not in error
        await pilot.press("ctrl+r")
        await settle(pilot, app)
        assert list(private_logs.iterdir()) == []


@pytest.mark.slow
async def test_new_run_shows_the_memory_a_run_needs_and_refuses_one_that_cannot_fit(private_logs, private_profiles):
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_new_run(pilot, app)
        await wait_until(pilot, app, lambda: "checking" not in plain(screen.query_one("#new-error", Static)))
        ready = plain(screen.query_one("#new-error", Static))
        assert "valid" in ready and "of memory" in ready and "free on the CPU" in ready
        await type_into(pilot, app, screen, "model.n_head", "1")
        await type_into(pilot, app, screen, "model.n_embd", "100000000")
        await wait_until(pilot, app, lambda: "checking" not in plain(screen.query_one("#new-error", Static)))
        error = plain(screen.query_one("#new-error", Static))
        assert "the run needs about" in error and "TiB" in error and "valid" not in error
        await pilot.press("ctrl+r")
        await settle(pilot, app)
        assert app.is_running and list(private_logs.iterdir()) == []


def test_new_run_opens_on_the_recommended_profile_where_the_driver_lists_a_gpu(tmp_path, monkeypatch):
    """The driver's GPU list is the one part faked (no GPU here): a machine with one opens on modern-70m, one
    without on tiny-cpu, which trains in seconds on a CPU."""
    from sparknet_tui.screens import new_run

    profiles = ["codelion-70m", "modern-70m", "tiny-cpu"]
    gpus = tmp_path / "gpus"
    monkeypatch.setattr(new_run, "NVIDIA_GPUS", gpus)
    assert new_run.default_profile(profiles) == "tiny-cpu"
    (gpus / "0000:01:00.0").mkdir(parents=True)
    assert new_run.default_profile(profiles) == "modern-70m"
    assert new_run.default_profile(["codelion-70m", "tiny-cpu"]) == "tiny-cpu"
