"""The Evaluation screen, driven with Textual's Pilot against run directories of real tiny-cpu runs: eval.json's
tables and notes, the benchmark table beside the model card, a run without an evaluation, one evaluation of a run
at a time, and redraws that never crash.
"""

from __future__ import annotations

import json

import pytest
from pilot_helpers import make_app, plain, select_row, settle, wait_until
from rich.text import Text
from textual.widgets import DataTable, Static
from tui_fixtures import copy_run

from sparknet_tui.screens.evaluation import EvaluationScreen

pytest_plugins = ["tui_fixtures"]


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
