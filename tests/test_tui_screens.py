"""Each screen of the control panel, driven with Textual's Pilot against run directories of real tiny-cpu runs."""

from __future__ import annotations

import json
import math
import shutil

import pytest
from pilot_helpers import POLL, make_app, plain, select_row, settle, table_rows, wait_until
from rich.text import Text
from textual.widgets import DataTable, Static
from tui_fixtures import BROKEN_LINE_AFTER, FROZEN_NOW, copy_run, read_jsonl

from sparknet_tui.app import SparkNetApp
from sparknet_tui.screens.compare import CompareScreen
from sparknet_tui.screens.confirm import ConfirmScreen
from sparknet_tui.screens.evaluation import EvaluationScreen
from sparknet_tui.screens.live import LiveScreen
from sparknet_tui.screens.new_run import NewRunScreen
from sparknet_tui.screens.runs import RunsScreen
from sparknet_tui.widgets.chart import LineChart

pytest_plugins = ["tui_fixtures"]


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


# ---------------------------------------------------------------- Evaluation


async def open_finished_runs_evaluation(pilot, app, panel_env) -> None:
    """From the Runs screen, the finished run's Evaluation screen with its three tables shown."""
    await wait_until(pilot, app, lambda: app.screen.query_one(DataTable).row_count == 2)
    await select_row(pilot, app, panel_env.finished.name)
    await pilot.press("e")
    await wait_until(pilot, app, lambda: isinstance(app.screen, EvaluationScreen) and app.screen.loaded
                     and len(app.screen.query(".eval-table")) == 3)


async def test_evaluation_screen_shows_eval_json(panel_env):
    app = make_app()
    async with app.run_test(size=(140, 45)) as pilot:
        await open_finished_runs_evaluation(pilot, app, panel_env)
        doc = json.loads((panel_env.finished / "eval.json").read_text())
        # a table per protocol, in eval.json's order: standard, sparknet-2000, the demo's held-out text
        assert [s["protocol"]["name"] for s in doc["evaluations"]] == ["standard", "sparknet-2000", "held-out"]
        for i, section in enumerate(doc["evaluations"]):
            table = app.screen.query_one(f"#eval-table-{i}", DataTable)
            rows = [[str(c.plain if isinstance(c, Text) else c) for c in table.get_row_at(j)]
                    for j in range(table.row_count)]
            assert [r[0] for r in rows] == [r["model"] for r in section["results"]]
            assert [r[1] for r in rows] == [r["source"] for r in section["results"]]
            measured = section["results"][0]
            assert rows[0][2] == f"{measured['loss']:.4f}"
            assert rows[0][4] == f"{measured['bits_per_byte']:.3f}"
        standard_notes = plain(app.screen.query_one("#eval-notes-0", Static))
        assert "capped at" in standard_notes  # the measured row's deviation from the full protocol
        assert "protocol: HF sliding window" in standard_notes  # a published figure's own protocol
        assert f"vs {doc['evaluations'][0]['deltas'][0]['against']}" in standard_notes
        assert "comparable" in standard_notes
        body = "\n".join(plain(w) for w in app.screen.query(".eval-protocol"))
        assert "WikiText-2 (standard protocol, test split)" in body
        assert "held-out text of mix 'demo'" in body
        # a perplexity above the model's 1,024-token vocabulary is worse than a uniform guess, and is called so
        held_out = doc["evaluations"][2]["results"][0]
        assert ("above the vocabulary size (1,024)" in plain(app.screen.query_one("#eval-notes-2", Static))) == \
            (held_out["perplexity"] > 1024)
        assert "published =" in plain(app.screen.query_one("#eval-heading", Static))
        samples = plain(app.screen.query_one("#eval-samples", Static))
        assert doc["samples"][0]["prompt"] in samples


def test_evaluation_notes_give_the_raw_file_bits_per_byte():
    from sparknet_tui.screens.evaluation import section_notes

    row = {"model": "this run", "source": "measured", "protocol": "standard", "loss": 6.87, "perplexity": 964.2,
           "bits_per_byte": 2.1996, "bits_per_raw_byte": 2.2083, "raw_bytes": 1290590, "tokenizer_matches": True}
    notes = section_notes({"protocol": {"name": "standard"}, "results": [row], "deltas": []}).plain
    assert "this run: bits per byte of the raw file: 2.2083 (its 1,290,590 bytes" in notes


def test_the_benchmark_table_shows_a_measured_baseline_as_measured():
    from sparknet_tui.screens.evaluation import benchmark_cells, benchmarks_notes

    row = {"task": "piqa", "num_fewshot": 0, "value": 58.0, "stderr": 1.2, "chance": 50.0}
    benchmarks = {"tasks": [row],
                  "published": [{"task": "piqa", "CodeLion GPT-2 70M": 57.29, "GPT-2 (124M)": 63.0,
                                 "source": "codelion/gpt-2-70m model card"}],
                  "baselines": {"GPT-2 (124M)": {"source": "measured", "path": "/models/gpt2",
                                                 "tasks": {"piqa": {"task": "piqa", "value": 62.5}}}}}
    codelion, gpt2 = benchmark_cells(row, benchmarks)[4:6]
    assert (codelion.plain, "italic" in str(codelion.style)) == ("57.29 ≈", True)  # the card's, published
    assert (gpt2.plain, str(gpt2.style)) == ("62.50", "green")  # measured here, outside two standard errors
    assert "GPT-2 (124M): measured here, from /models/gpt2" in benchmarks_notes(benchmarks).plain


async def test_evaluation_screen_shows_the_benchmark_table_beside_the_card(private_logs, tiny_runs):
    run = copy_run(tiny_runs.finished, private_logs)
    doc = json.loads((run / "eval.json").read_text())
    doc["benchmarks"] = {"harness": "lm-eval 0.4.13", "limit": None, "published": [
        {"task": "piqa", "CodeLion GPT-2 70M": 57.29, "GPT-2 (124M)": 63.0, "source": "codelion/gpt-2-70m model card"}],
        "tasks": [{"task": "piqa", "metric": "acc_norm", "value": 58.1, "stderr": 1.15, "examples": 1838,
                   "num_fewshot": 0, "chance": 50.0, "harness_version": "0.4.13"},
                  {"task": "truthfulqa_mc2", "metric": "acc", "value": 47.0, "stderr": 1.6, "examples": 817,
                   "num_fewshot": 0, "chance": None, "harness_version": "0.4.13"}]}
    (run / "eval.json").write_text(json.dumps(doc))
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        app.open_evaluation(run)
        await wait_until(pilot, app, lambda: isinstance(app.screen, EvaluationScreen) and app.screen.loaded
                         and len(app.screen.query("#eval-benchmarks")) == 1)
        table = app.screen.query_one("#eval-benchmarks", DataTable)
        rows = [[str(c.plain if isinstance(c, Text) else c) for c in table.get_row_at(i)] for i in range(2)]
        # CodeLion's 57.29 lies within two standard errors of 58.1, GPT-2's 63.0 does not; MC2 has no single chance
        assert rows[0] == ["piqa", "0", "58.10", "1.15", "57.29 ≈", "63.00", "50.00"]
        assert rows[1][0] == "truthfulqa_mc2" and rows[1][-1] == "varies"
        notes = plain(app.screen.query_one("#eval-benchmark-notes", Static))
        assert "piqa: acc_norm, 1,838 examples" in notes and "codelion/gpt-2-70m model card" in notes


async def test_evaluation_screen_without_eval_json(panel_env):
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        app.open_evaluation(panel_env.failed)
        await wait_until(pilot, app, lambda: isinstance(app.screen, EvaluationScreen) and app.screen.loaded)
        assert "No evaluation yet" in plain(app.screen.query_one("#eval-heading", Static))
        assert not app.screen.query(".eval-table")


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



async def test_a_second_evaluation_of_a_run_is_refused_while_one_runs(private_logs, tiny_runs):
    from engine.runs.lock import EVAL_LOCK_NAME, RunLock

    run = copy_run(tiny_runs.finished, private_logs)
    lock = RunLock.acquire(run, what="evaluation", name=EVAL_LOCK_NAME)  # an evaluation started elsewhere
    try:
        app = make_app()
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot, app)
            app.open_evaluation(run)
            await settle(pilot, app)
            assert "evaluation in progress" in plain(app.screen.query_one("#eval-heading", Static))
            await pilot.press("v")
            await settle(pilot, app)
            assert app.context.evaluating == set()  # nothing was started
            assert any("being evaluated already" in n.message for n in app._notifications)
    finally:
        lock.release()


@pytest.mark.slow
async def test_the_evaluation_screen_redraws_its_tables_without_crashing(panel_env):
    """A redraw (an evaluation started with v, its progress, its end) replaces every table: the old widgets must be
    gone before the new ones, of the same ids, are mounted."""
    from sparknet_tui.messages import EvalLoaded

    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await open_finished_runs_evaluation(pilot, app, panel_env)
        screen = app.screen
        data = json.loads((panel_env.finished / "eval.json").read_text())
        for done in (1, 2, 3):  # what the screen's worker posts while an evaluation runs, then once it ends
            screen.post_message(EvalLoaded(panel_env.finished, data, None, progress={"done": done, "total": 4}))
            await settle(pilot, app)
        screen.post_message(EvalLoaded(panel_env.finished, data, None))
        await settle(pilot, app)
        assert app.is_running and app.screen is screen
        assert len(screen.query(".eval-table")) == 3 and screen.query_one("#eval-table-0", DataTable).row_count > 0
