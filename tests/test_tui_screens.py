"""Each screen of the control panel, driven with Textual's Pilot against run directories of real tiny-cpu runs."""

from __future__ import annotations

import json
import math
import shutil

import pytest
from frozen_runs import FROZEN_NOW
from pilot_helpers import POLL, make_app, plain, select_row, settle, table_rows, wait_until
from textual.widgets import DataTable, Static
from tui_fixtures import BROKEN_LINE_AFTER, copy_run, read_jsonl

from sparknet_tui.app import SparkNetApp
from sparknet_tui.screens.compare import CompareScreen
from sparknet_tui.screens.confirm import ConfirmScreen
from sparknet_tui.screens.live import LiveScreen
from sparknet_tui.screens.new_run import NewRunScreen
from sparknet_tui.screens.runs import RunsScreen
from sparknet_tui.widgets.chart import LineChart

pytest_plugins = ["tui_fixtures", "frozen_runs"]


# ---------------------------------------------------------------- Runs


@pytest.mark.slow
async def test_runs_screen_lists_real_runs(panel_env):
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, app, lambda: app.screen.query_one(DataTable).row_count == 2)
        assert isinstance(app.screen, RunsScreen)
        rows = table_rows(app.screen.query_one(DataTable))
        finished = rows[panel_env.finished.name]
        status = json.loads((panel_env.finished / "status.json").read_text())
        assert finished[1] == "finished"
        assert finished[2].strip() == "100%"
        assert finished[3] == f"{status['loss']:.3f}"
        assert float(finished[4].replace(",", "")) == pytest.approx(math.exp(status["val_loss"]), rel=1e-3)
        assert finished[9:] == ["tiny-cpu", "demo"]
        assert rows[panel_env.failed.name][1] == "failed"
        # the failed run's one-line error shows under the table when it is highlighted
        await select_row(pilot, app, panel_env.failed.name)
        detail = plain(app.screen.query_one("#run-detail", Static))
        assert f"broken-data.jsonl line {BROKEN_LINE_AFTER + 1} is not valid JSON" in detail


async def test_runs_screen_shows_a_run_started_elsewhere_live(private_logs, tiny_runs):
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot, app)
        assert app.screen.query_one(DataTable).row_count == 0
        assert "Press n" in plain(app.screen.query_one("#runs-alert", Static))
        copy_run(tiny_runs.finished, private_logs)  # as if `sparknet train` had just made it
        await wait_until(pilot, app, lambda: app.screen.query_one(DataTable).row_count == 1)
        assert tiny_runs.finished.name in table_rows(app.screen.query_one(DataTable))


async def test_runs_screen_flags_hot_and_paused_runs(private_logs, frozen_runs):
    run = copy_run(frozen_runs.running, private_logs)
    app = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await wait_until(pilot, app, lambda: app.screen.query_one(DataTable).row_count == 1)
        (row,) = table_rows(app.screen.query_one(DataTable)).values()
        assert row[1] == "running" and row[7].startswith("⚠")
        assert "above the 85°C warning" in plain(app.screen.query_one("#runs-alert", Static))
        status = json.loads((run / "status.json").read_text())
        status["paused"] = "thermal"
        (run / "status.json").write_text(json.dumps(status))
        await wait_until(pilot, app, lambda: "paused" in table_rows(app.screen.query_one(DataTable))[run.name][1])
        assert "is paused (thermal)" in plain(app.screen.query_one("#runs-alert", Static))


async def test_stop_and_resume_refuse_runs_in_the_wrong_state(panel_env):
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, app, lambda: app.screen.query_one(DataTable).row_count == 2)
        await select_row(pilot, app, panel_env.finished.name)
        await pilot.press("s")
        await pilot.press("r")
        await settle(pilot, app)
        messages = [n.message for n in app._notifications]
        assert any("nothing to stop" in m for m in messages)
        assert any("only a stopped or failed run resumes" in m for m in messages)
        assert json.loads((panel_env.finished / "status.json").read_text())["state"] == "finished"


@pytest.mark.slow
async def test_delete_asks_first(private_logs, tiny_runs):
    doomed = copy_run(tiny_runs.failed, private_logs)
    kept = copy_run(tiny_runs.finished, private_logs)
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, app, lambda: app.screen.query_one(DataTable).row_count == 2)
        await select_row(pilot, app, doomed.name)
        await pilot.press("d")
        await settle(pilot, app)
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        await settle(pilot, app)
        assert isinstance(app.screen, RunsScreen) and doomed.exists()
        await pilot.press("d")
        await settle(pilot, app)
        await pilot.press("y")
        await wait_until(pilot, app, lambda: app.screen.query_one(DataTable).row_count == 1)
        assert not doomed.exists() and kept.exists()


@pytest.mark.slow
async def test_compare_two_runs(private_logs, tiny_runs):
    a = copy_run(tiny_runs.finished, private_logs, "20260101-000000-a")
    b = copy_run(tiny_runs.failed, private_logs, "20260101-000001-b")
    app = make_app()
    async with app.run_test(size=(120, 50)) as pilot:
        await wait_until(pilot, app, lambda: app.screen.query_one(DataTable).row_count == 2)
        await pilot.press("c")
        await settle(pilot, app)
        assert isinstance(app.screen, RunsScreen)  # nothing marked yet
        assert any("Mark two runs" in n.message for n in app._notifications)
        await select_row(pilot, app, a.name)
        await pilot.press("m")
        await select_row(pilot, app, b.name)
        await pilot.press("m")
        await pilot.press("c")
        await settle(pilot, app)
        assert isinstance(app.screen, CompareScreen)
        await wait_until(pilot, app, lambda: "A " + a.name in plain(app.screen.query_one("#compare-table", Static)))
        table = plain(app.screen.query_one("#compare-table", Static))
        assert "finished" in table and "failed" in table
        diffs = plain(app.screen.query_one("#compare-diffs", Static))
        assert "mix.name: demo → broken-data" in diffs
        chart = app.screen.query_one(LineChart)
        assert [s.label for s in chart.data.series][:2] == ["A loss", "B loss"]
        assert len(chart.data.series[0].points) == len(read_jsonl(a / "metrics.jsonl"))
        await pilot.press("escape")
        await settle(pilot, app)
        assert isinstance(app.screen, RunsScreen)


@pytest.mark.slow
async def test_command_palette_offers_every_footer_action(panel_env):
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, app)
        names = {c.title for c in app.get_system_commands(app.screen)}
        assert {"Open", "New", "Stop", "Resume", "Delete", "Mark", "Compare", "Eval", "Quit"} <= names
        # running a palette entry runs the action: "New" opens the New run screen
        new = next(c for c in app.get_system_commands(app.screen) if c.title == "New")
        await new.callback()
        await settle(pilot, app)
        assert isinstance(app.screen, NewRunScreen)
        names = {c.title for c in app.get_system_commands(app.screen)}
        assert {"Start run", "Save profile", "Save mix", "Back"} <= names


# ---------------------------------------------------------------- Live


@pytest.mark.slow
async def test_live_screen_shows_a_finished_run(panel_env):
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, app, lambda: app.screen.query_one(DataTable).row_count == 2)
        await select_row(pilot, app, panel_env.finished.name)
        await pilot.press("o")
        await wait_until(pilot, app, lambda: isinstance(app.screen, LiveScreen) and app.screen.view is not None)
        screen = app.screen
        metrics = read_jsonl(panel_env.finished / "metrics.jsonl")
        chart = screen.query_one(LineChart)
        labels = [s.label for s in chart.data.series]
        assert labels == ["loss", "smoothed 0.60", "val loss"]
        assert [p[1] for p in chart.data.series[0].points] == [r["loss"] for r in metrics]
        assert len(chart.data.series[2].points) == sum("val_loss" in r for r in metrics)
        status = plain(screen.query_one("#live-status", Static))
        assert "finished" in status and "100%" in status and "evaluation ready" in status
        figures = plain(screen.query_one("#live-figures", Static))
        assert f"loss {metrics[-1]['loss']:.3f}" in figures
        assert "MFU N/A" in figures  # CPU: no peak FLOPs, so no MFU
        events = plain(screen.query_one("#live-events", Static))
        assert "finished" in events and "checkpoint" in events
        assert "No GPU reported" in plain(screen.query_one("#hardware", Static))
        # the smoothing control
        await pilot.press("right_square_bracket")
        await settle(pilot, app)
        assert screen.smoothing == pytest.approx(0.7)
        assert "smoothed 0.70" in [s.label for s in chart.data.series]
        for _ in range(8):
            await pilot.press("left_square_bracket")
        await settle(pilot, app)
        assert screen.smoothing == 0.0
        assert [s.label for s in chart.data.series] == ["loss", "val loss"]
        await pilot.press("escape")
        await settle(pilot, app)
        assert isinstance(app.screen, RunsScreen)


async def test_live_screen_follows_a_running_run(private_logs, frozen_runs):
    run = copy_run(frozen_runs.running, private_logs)
    app = SparkNetApp(clock=lambda: FROZEN_NOW, poll_interval=POLL, open_run=run)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, app, lambda: isinstance(app.screen, LiveScreen) and app.screen.view is not None)
        screen = app.screen
        chart = screen.query_one(LineChart)
        before = len(chart.data.series[0].points)
        status = plain(screen.query_one("#live-status", Static))
        assert "running" in status and "ETA 1m35s" in status and "⚠ GPU" in status
        hardware = plain(screen.query_one("#hardware", Static))
        assert "NVIDIA GB10" in hardware and "unified memory" in hardware and "above 85°C" in hardware
        last = read_jsonl(run / "metrics.jsonl")[-1]
        with open(run / "metrics.jsonl", "a") as f:
            f.write(json.dumps({**last, "step": last["step"] + 1, "loss": 1.2345, "tokens_per_s": 4321.0,
                                "wikitext_ppl": 150.0}) + "\n")
        with open(run / "events.jsonl", "a") as f:
            f.write(json.dumps({"t": "2025-12-31T23:59:00Z", "event": "thermal_pause",
                                "message": "GPU0 at 91°C: pausing until it cools below 75°C"}) + "\n")
        status_data = json.loads((run / "status.json").read_text())
        (run / "status.json").write_text(json.dumps({**status_data, "paused": "thermal"}))
        await wait_until(pilot, app, lambda: len(chart.data.series[0].points) == before + 1)
        assert chart.data.series[0].points[-1] == (last["step"] + 1, 1.2345)
        figures = plain(screen.query_one("#live-figures", Static))
        assert "4.32k" in figures and "WikiText ppl 150.00" in figures
        wikitext = next(s for s in chart.data.series if s.label == "WikiText ln(ppl)")
        assert wikitext.points == [(last["step"] + 1, pytest.approx(math.log(150.0)))]
        assert "PAUSED (thermal)" in plain(screen.query_one("#live-status", Static))
        assert "thermal_pause" in plain(screen.query_one("#live-events", Static))


async def test_live_screen_of_a_failed_run_shows_its_error_and_log(panel_env):
    app = SparkNetApp(clock=lambda: FROZEN_NOW, poll_interval=POLL, open_run=panel_env.failed)
    async with app.run_test(size=(100, 40)) as pilot:
        await wait_until(pilot, app, lambda: isinstance(app.screen, LiveScreen) and app.screen.view is not None)
        status = plain(app.screen.query_one("#live-status", Static))
        error = json.loads((panel_env.failed / "status.json").read_text())["error"]
        assert f"error: {error}" in status.replace("\n", "") or "error: source 'broken'" in status
        log = plain(app.screen.query_one("#live-events", Static))
        assert "end of train.log" in log
        tail = (panel_env.failed / "train.log").read_text().splitlines()
        assert tail and tail[-1].strip()[:40] in log


@pytest.mark.slow
async def test_two_panels_watch_one_run(private_logs, frozen_runs):
    run = copy_run(frozen_runs.running, private_logs)
    first = SparkNetApp(clock=lambda: FROZEN_NOW, poll_interval=POLL, open_run=run)
    second = SparkNetApp(clock=lambda: FROZEN_NOW, poll_interval=POLL, open_run=run)
    async with first.run_test(size=(100, 30)) as p1, second.run_test(size=(100, 30)) as p2:
        last = read_jsonl(run / "metrics.jsonl")[-1]
        with open(run / "metrics.jsonl", "a") as f:
            f.write(json.dumps({**last, "step": last["step"] + 1, "loss": 0.5}) + "\n")
        for pilot, app in ((p1, first), (p2, second)):
            await wait_until(pilot, app, lambda app=app: isinstance(app.screen, LiveScreen) and app.screen.view
                             is not None and app.screen.view.loss_points[-1] == (last["step"] + 1, 0.5))


# ---------------------------------------------------------------- errors never crash the panel


@pytest.mark.slow
async def test_broken_run_directories_show_messages(private_logs, tiny_runs):
    broken = copy_run(tiny_runs.finished, private_logs, "20260101-000000-broken")
    (broken / "status.json").write_text("{truncated")
    (broken / "metrics.jsonl").unlink()
    (broken / "metrics.jsonl").mkdir()
    (broken / "eval.json").write_text("[]")
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, app, lambda: app.screen.query_one(DataTable).row_count == 1)
        assert "status.json: unreadable" in plain(app.screen.query_one("#run-detail", Static))
        await pilot.press("o")
        await wait_until(pilot, app, lambda: isinstance(app.screen, LiveScreen) and app.screen.view is not None)
        status = plain(app.screen.query_one("#live-status", Static))
        assert "status.json: unreadable" in status and "eval.json: not a JSON object" in status
        shutil.rmtree(broken)  # deleted from under the panel
        await wait_until(pilot, app, lambda: "run directory is gone" in plain(app.screen.query_one("#live-status",
                                                                                                 Static)))
        await pilot.press("e")
        await settle(pilot, app)
        assert app.is_running
