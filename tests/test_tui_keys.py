"""Every key of every panel screen, pressed through Textual's Pilot at 80x24 and 120x40, does what its help says.
The Sweeps screen's keys start real sweep processes and are pressed at 80x24 only: what a key does is the same at
every size, and the screen's layout at both sizes is test_tui_snapshots.py's.

The runs are copies of the session's real tiny-cpu runs (one finished, one failed), so keys that act on a
run meet real run directories and, where they reach the CLI, the real `sparknet` command.
"""

from __future__ import annotations

import pytest
from cli_helpers import scaled
from pilot_helpers import make_app, plain, select_row, settle, wait_until
from textual.widgets import DataTable, Input, Static
from tui_fixtures import copy_run

from engine.runs.sweep import SweepState
from sparknet_tui.screens.compare import CompareScreen
from sparknet_tui.screens.confirm import ConfirmScreen
from sparknet_tui.screens.evaluation import EvaluationScreen
from sparknet_tui.screens.help import HelpScreen
from sparknet_tui.screens.live import LiveScreen
from sparknet_tui.screens.new_run import NewRunScreen
from sparknet_tui.screens.runs import RunsScreen
from sparknet_tui.screens.sweeps import SweepsScreen

pytest_plugins = ["tui_fixtures", "frozen_runs"]

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 40), id="120x40")]


def notes(app) -> list[str]:
    return [n.message for n in app._notifications]


async def press(pilot, app, key: str) -> None:
    await pilot.press(key)
    await settle(pilot, app)


async def check_help(pilot, app, key: str = "question_mark") -> None:
    """The key opens the help for the screen underneath, listing its keys; Escape closes it."""
    under = app.screen
    await press(pilot, app, key)
    assert isinstance(app.screen, HelpScreen), type(app.screen)
    text = plain(app.screen.query_one("#help-text", Static))
    assert f"{under.HELP_TOPIC} screen" in text
    for binding in under.BINDINGS:
        if binding.description:
            assert (binding.tooltip or binding.description) in text, (binding.description, text)
    await press(pilot, app, "escape")
    assert app.screen is under


async def check_back(pilot, app, key: str, back_to: type) -> None:
    await press(pilot, app, key)
    assert isinstance(app.screen, back_to), type(app.screen)


@pytest.fixture
def two_runs(private_logs, tiny_runs):
    finished = copy_run(tiny_runs.finished, private_logs, "20260101-000000-finished")
    failed = copy_run(tiny_runs.failed, private_logs, "20260101-000001-failed")
    return finished, failed


async def runs_keys(pilot, app, finished) -> set[str]:
    await wait_until(pilot, app, lambda: app.screen.query_one(DataTable).row_count == 2)
    runs = app.screen
    await select_row(pilot, app, finished.name)
    await check_help(pilot, app)
    await check_help(pilot, app, "f1")
    for key, opens in (("o", LiveScreen), ("enter", LiveScreen), ("n", NewRunScreen), ("e", EvaluationScreen),
                       ("w", SweepsScreen)):
        await press(pilot, app, key)
        assert isinstance(app.screen, opens), (key, type(app.screen))
        await check_back(pilot, app, "escape", RunsScreen)
    await press(pilot, app, "s")
    assert any("nothing to stop" in n for n in notes(app))
    await press(pilot, app, "r")
    assert any("only a stopped or failed run resumes" in n for n in notes(app))
    await press(pilot, app, "d")
    assert isinstance(app.screen, ConfirmScreen)
    await check_back(pilot, app, "n", RunsScreen)
    assert finished.exists()
    await press(pilot, app, "c")
    assert any("Mark two runs" in n for n in notes(app))
    await press(pilot, app, "m")
    assert runs.marked == [finished.name]
    return {"question_mark", "f1", "o", "enter", "n", "e", "w", "s", "r", "d", "c", "m"}


async def live_keys(pilot, app, finished) -> set[str]:
    app.open_live(finished)
    await wait_until(pilot, app, lambda: isinstance(app.screen, LiveScreen) and app.screen.view is not None)
    live = app.screen
    await check_help(pilot, app)
    await press(pilot, app, "left_square_bracket")
    assert live.smoothing == 0.5
    await press(pilot, app, "right_square_bracket")
    assert live.smoothing == 0.6
    await press(pilot, app, "z")
    assert live.query_one("#loss-chart").data.recent == 0.5
    await press(pilot, app, "x")
    assert live.query_one("#loss-chart").data.x_log
    await press(pilot, app, "l")
    assert live.has_class("-log-view") and "events" in plain(live.query_one("#live-log", Static))
    await press(pilot, app, "l")
    assert "(end of train.log)" in plain(live.query_one("#live-log", Static))
    await press(pilot, app, "l")
    assert not live.has_class("-log-view")
    await press(pilot, app, "s")
    assert any("nothing to stop" in n for n in notes(app))
    await press(pilot, app, "r")
    assert any("only a stopped or failed run resumes" in n for n in notes(app))
    await press(pilot, app, "ctrl+s")  # saving a suggested rate is for an LR range test only
    assert any("Only a finished LR range test" in n for n in notes(app))
    await press(pilot, app, "e")
    assert isinstance(app.screen, EvaluationScreen)
    await check_back(pilot, app, "escape", LiveScreen)
    await check_back(pilot, app, "escape", RunsScreen)
    return {"question_mark", "left_square_bracket", "right_square_bracket", "z", "x", "l", "s", "r", "e", "ctrl+s",
            "escape"}


async def evaluation_keys(pilot, app, failed) -> set[str]:
    app.open_evaluation(failed)
    await settle(pilot, app)
    await check_help(pilot, app)
    await press(pilot, app, "x")
    assert any("evaluation" in n for n in notes(app)), notes(app)
    await press(pilot, app, "v")
    # the real `sparknet eval` refuses a run that never saved a model, and the panel says so
    await wait_until(pilot, app, lambda: any("no model" in n or "checkpoint" in n for n in notes(app)),
                     timeout=120)
    await press(pilot, app, "l")
    assert isinstance(app.screen, LiveScreen)
    await check_back(pilot, app, "escape", RunsScreen)
    return {"question_mark", "x", "v", "l", "escape"}


async def new_run_keys(pilot, app) -> set[str]:
    await press(pilot, app, "n")
    screen = app.screen
    assert isinstance(screen, NewRunScreen)
    await check_help(pilot, app)
    layers = screen.query_one("#f-model-n_layer", Input)
    layers.focus()
    await check_help(pilot, app, "f1")  # a text field keeps `?` as a character; F1 still opens the help
    layers.value = "zero"
    await settle(pilot, app)
    await press(pilot, app, "ctrl+r")
    assert any("model.n_layer" in n for n in notes(app)), notes(app)
    for key in ("ctrl+s", "ctrl+o"):  # an invalid form is saved neither as a profile nor as a mix, and says why
        before = list(app._notifications)
        await press(pilot, app, key)
        new = [n.message for n in app._notifications if n not in before]  # older ones may time out meanwhile
        assert len(new) == 1 and "cannot save" in new[0], (key, new)
    await check_back(pilot, app, "escape", RunsScreen)
    return {"question_mark", "f1", "ctrl+r", "ctrl+s", "ctrl+o", "escape"}


async def compare_keys(pilot, app, finished, failed) -> set[str]:
    app.open_compare(finished, failed)
    await settle(pilot, app)
    assert isinstance(app.screen, CompareScreen)
    await check_help(pilot, app)
    await check_back(pilot, app, "escape", RunsScreen)
    return {"question_mark", "escape"}


@pytest.mark.long
@pytest.mark.slow
@pytest.mark.parametrize("size", SIZES)
async def test_every_key_of_every_screen(two_runs, private_profiles, size):
    finished, failed = two_runs
    app = make_app()
    async with app.run_test(size=size) as pilot:
        await settle(pilot, app)
        pressed = {RunsScreen: await runs_keys(pilot, app, finished)}
        pressed[LiveScreen] = await live_keys(pilot, app, finished)
        pressed[EvaluationScreen] = await evaluation_keys(pilot, app, failed)
        pressed[NewRunScreen] = await new_run_keys(pilot, app)
        pressed[CompareScreen] = await compare_keys(pilot, app, finished, failed)
        for screen, keys in pressed.items():
            # q quits (pressed last, below); escape on Runs stays on Runs
            bound = {k for b in screen.BINDINGS for k in b.key.split(",")} - {"q"}
            assert bound <= keys | {"escape"}, (screen.__name__, bound - keys)
        await press(pilot, app, "escape")
        assert isinstance(app.screen, RunsScreen)
        await pilot.press("q")
        await pilot.pause()
    assert app.return_code == 0


@pytest.mark.slow
@pytest.mark.parametrize("size", SIZES)
async def test_confirm_keys(two_runs, size):
    finished, _ = two_runs
    app = make_app()
    async with app.run_test(size=size) as pilot:
        await wait_until(pilot, app, lambda: app.screen.query_one(DataTable).row_count == 2)
        await select_row(pilot, app, finished.name)
        for key in ("n", "escape"):
            await press(pilot, app, "d")
            await check_back(pilot, app, key, RunsScreen)
        assert finished.exists()
        await press(pilot, app, "d")
        await press(pilot, app, "y")
        await wait_until(pilot, app, lambda: not finished.exists())


TINY_SPEC = """profile = "tiny-cpu"
mix = "demo"
tokens = 4096
set = ["batch.grad_accum=1", "run.eval_every=2", "run.eval_tokens=1024", "run.final_eval=false"]
[grid]
"optim.lr" = [1e-3, 1e-2]
"""


@pytest.mark.slow
async def test_every_key_of_the_sweeps_screen(frozen_sweep, private_logs, private_profiles):
    import shutil

    shutil.copytree(frozen_sweep / "sweeps", private_logs / "sweeps")
    (private_profiles / "sweeps").mkdir(exist_ok=True)
    (private_profiles / "sweeps" / "tiny-keys.toml").write_text(TINY_SPEC)
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        await press(pilot, app, "w")
        screen = app.screen
        assert isinstance(screen, SweepsScreen)
        await wait_until(pilot, app, lambda: screen.query_one("#sweep-table", DataTable).row_count == 2)
        await check_help(pilot, app)
        await press(pilot, app, "m")
        assert screen.marked == ["lr=0.01"]
        await press(pilot, app, "x")
        await wait_until(pilot, app, lambda: any("not running" in n for n in notes(app)))
        screen.query_one("#save-as", Input).value = "from-sweep"
        screen.query_one("#sweep-table", DataTable).focus()
        await press(pilot, app, "ctrl+s")
        saved = private_profiles / "from-sweep.toml"
        await wait_until(pilot, app, saved.exists, timeout=60)
        assert 'measured = "rank 1 of 2 in sweep demo-lr' in saved.read_text()
        app.push_screen(NewRunScreen(app.context, "from-sweep"))  # a saved profile remembers where it came from
        await wait_until(pilot, app, lambda: "measured: rank 1 of 2 in sweep demo-lr" in plain(
            app.screen.query_one("#new-description", Static)))
        await press(pilot, app, "escape")
        await press(pilot, app, "r")  # a finished sweep resumed: every run is done, nothing is trained again
        await wait_until(pilot, app, lambda: any("sparknet sweep resume" in n for n in notes(app)))
        screen.query_one("#spec-select").value = str(private_profiles / "sweeps" / "tiny-keys.toml")
        await press(pilot, app, "ctrl+r")
        made = private_logs / "sweeps" / "tiny-keys" / "sweep.json"
        await wait_until(pilot, app, made.exists, timeout=120)
        await check_back(pilot, app, "escape", RunsScreen)
        # a sweep's runs are ordinary runs: the Runs table lists them
        listed = [k.value for k in app.screen.query_one(DataTable).rows]
        assert all(e.run in listed for e in SweepState.load(private_logs / "sweeps" / "demo-lr").entries)
        bound = {k for b in SweepsScreen.BINDINGS for k in b.key.split(",")} - {"q", "escape"}
        assert bound == {"m", "ctrl+s", "ctrl+r", "x", "r"}
    from engine.files import wait_for

    # the sweep the panel started runs to its end, detached from the panel
    assert wait_for(lambda: SweepState.load(made.parent).state == "finished", scaled(240))


@pytest.mark.slow
async def test_an_lr_range_tests_rate_is_saved_from_its_live_screen(private_logs, private_profiles):
    from cli_helpers import sparknet

    sparknet("lr-find", "--profile", "tiny-cpu", "--steps", "20", "--set", "batch.grad_accum=1", timeout=300)
    run = next(private_logs.glob("*-lr-find-all"))
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        app.open_live(run)
        await wait_until(pilot, app, lambda: isinstance(app.screen, LiveScreen) and app.screen.view is not None
                         and app.screen.view.lr_find is not None)
        assert app.screen.query_one("#loss-chart").data.x_label == "rate"  # the test drawn against the rate
        await press(pilot, app, "ctrl+s")
        await pilot.press(*"tiny-rate", "enter")
        saved = private_profiles / "tiny-rate.toml"
        await wait_until(pilot, app, saved.exists, timeout=60)
    assert f"lr-find run {run.name}" in saved.read_text()
