"""A long evaluation of a run tells how far it is (eval-progress.json, the CLI's bar, the panel's Evaluation
screen) and stops at once on SIGTERM or the panel's x, leaving eval.json as it was and the run's lock free.

Real parts: `sparknet eval` as a subprocess on a tiny GPT-2 checkpoint over the whole WikiText-2 test split
(a small stride makes it long enough to stop halfway), the real panel driven by its Pilot.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from cli_helpers import PROJECT, scaled
from eval_helpers import WIKITEXT_DIR, make_run, tiny_model
from pilot_helpers import make_app, plain, wait_until
from textual.widgets import Static

from engine.runs.eval_progress import PROGRESS_NAME, read_progress
from engine.runs.lock import EVAL_LOCK_NAME, lock_held
from sparknet_tui.screens.evaluation import EvaluationScreen

TEST_SPLIT_TOKENS = 287_643  # the joined test split's GPT-2 tokens less the first: what the standard protocol scores
STOPPED = "sparknet eval: stopped before the end; eval.json is as it was"


def start_eval(run_dir) -> subprocess.Popen:
    # stride 2 on a 64-token context: about 144,000 windows, minutes on a CPU, so a stop lands halfway
    return subprocess.Popen([sys.executable, "-m", "engine.cli", "eval", run_dir.name, "--protocol", "standard",
                             "--wikitext", str(WIKITEXT_DIR), "--stride", "2", "--no-samples"], cwd=PROJECT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)


def wait_for_progress(run_dir, proc) -> dict:
    deadline = time.monotonic() + scaled(60)
    while time.monotonic() < deadline:
        state = read_progress(run_dir)
        if state and state["done"] > 0:
            return state
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("no progress written in time")


def assert_stopped_cleanly(run_dir, proc) -> None:
    out, err = proc.communicate(timeout=scaled(30))
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == STOPPED and "Traceback" not in err
    assert not (run_dir / PROGRESS_NAME).exists()
    assert not lock_held(run_dir, EVAL_LOCK_NAME)  # the next evaluation may start
    assert not list(run_dir.glob("eval*.json"))  # nothing half-written


@pytest.mark.slow
def test_sigterm_stops_a_run_evaluation_halfway_and_it_said_how_far_it_was(logs):
    run_dir = make_run(logs, tiny_model(seed=3))
    proc = start_eval(run_dir)
    try:
        state = wait_for_progress(run_dir, proc)
        assert (state["pid"], state["stage"], state["unit"]) == (proc.pid, "standard: this run", "tokens")
        assert state["total"] == TEST_SPLIT_TOKENS and 0 < state["done"] < TEST_SPLIT_TOKENS
        os.kill(proc.pid, signal.SIGTERM)
        assert_stopped_cleanly(run_dir, proc)
    finally:
        proc.kill()


@pytest.mark.slow
async def test_the_evaluation_screen_shows_progress_and_x_stops_it(logs):
    run_dir = make_run(logs, tiny_model(seed=4))
    proc = start_eval(run_dir)
    try:
        wait_for_progress(run_dir, proc)
        app = make_app()
        async with app.run_test(size=(100, 30)) as pilot:
            app.push_screen(EvaluationScreen(app.context, run_dir))
            heading = lambda: plain(app.screen.query_one("#eval-heading", Static))  # noqa: E731
            await wait_until(pilot, app, lambda: isinstance(app.screen, EvaluationScreen)
                             and "evaluating: standard: this run ·" in heading())
            assert f"of {TEST_SPLIT_TOKENS:,} tokens (" in heading() and "x stops it" in heading()
            await pilot.press("x")
            await wait_until(pilot, app, lambda: proc.poll() is not None, timeout=scaled(30))
            await wait_until(pilot, app, lambda: "evaluating:" not in heading(), timeout=scaled(10))
        assert_stopped_cleanly(run_dir, proc)
    finally:
        proc.kill()


def test_stopping_when_no_evaluation_runs_says_so_in_one_line(logs):
    from sparknet_tui.commands import stop_evaluation

    run_dir = make_run(logs, tiny_model(seed=5))
    result = stop_evaluation(run_dir)
    assert (result.ok, result.message) == (False, f"no evaluation of {run_dir.name} is running")
    # a progress file left by a process that is gone is no evaluation either
    (run_dir / PROGRESS_NAME).write_text('{"pid": 999999999, "stage": "standard: this run", "done": 1}')
    assert read_progress(run_dir) is None and not stop_evaluation(run_dir).ok
