"""End to end: the real `sparknet` command in a real terminal (tmux), driven by keys like a user would.

Start tiny-cpu with the demo mix from the New run screen, watch metrics
arrive on Live, close the panel (the run goes on) and open it again, stop
the run, resume it, see it finish and its evaluation table appear.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from cli_helpers import PROJECT
from terminal import Terminal
from tui_fixtures import pid_alive

pytest_plugins = ["tui_fixtures"]

STEPS = 360
TOKENS = STEPS * 2048  # tens of seconds on 2 cores: time enough to close, reopen and stop it part-way


def sparknet_argv() -> list[str]:
    """The installed `sparknet` command beside this interpreter (the venv's), else its entry module."""
    beside = Path(sys.executable).parent / "sparknet"
    installed = str(beside) if beside.exists() else shutil.which("sparknet")
    return [installed] if installed else [sys.executable, "-m", "sparknet_tui.entry"]


def status_of(logs: Path) -> tuple[Path, dict]:
    (run,) = [p for p in logs.iterdir() if p.is_dir()]
    return run, json.loads((run / "status.json").read_text())


@pytest.mark.long
@pytest.mark.slow
def test_panel_end_to_end_in_a_terminal(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    env = {
        "SPARKNET_LOGS": str(logs),
        "PYTHONPATH": str(PROJECT),
        "TERM": "xterm-256color",
        **{k: os.environ[k] for k in ("SPARKNET_TOKENIZER", "SPARKNET_WIKITEXT", "SPARKNET_CACHE", "HF_HUB_OFFLINE",
                                      "HF_DATASETS_OFFLINE", "TOKENIZERS_PARALLELISM", "PATH", "HOME")
           if k in os.environ},
    }
    term = Terminal(env)
    run_dir = None
    try:
        term.start(sparknet_argv())
        term.wait_for(r"SparkNet — Runs")
        term.wait_for(r"No runs in")

        # New run: tiny-cpu and its demo mix are preselected; shorten the run in the form
        term.keys("n")
        term.wait_for(r"valid: ctrl\+r starts the run")
        screen = term.screen()
        assert "profile tiny-cpu" in screen and "mix demo" in screen
        term.tab_to("tokens")
        term.keys("C-u")
        term.wait_for(r"run\.tokens is empty")
        term.type(str(TOKENS))
        term.wait_for(rf"--set run\.tokens={TOKENS}")
        term.keys("C-r")

        # Live: metrics arrive
        term.wait_for(r"SparkNet — Live")
        term.wait_for(rf"step (\d+)/{STEPS}", timeout=180)
        term.wait_for(r"tok/s\s+[\d.]+k?\s")
        run_dir, status = status_of(logs)
        pid = status["pid"]

        # closing the panel leaves the run going; opening it again shows it live
        term.keys("q")
        term.wait_closed()
        assert pid_alive(pid), "closing the panel stopped the run"
        term.start(sparknet_argv())
        term.wait_for(rf"{run_dir.name}\s+running")
        term.keys("o")
        first = int(term.wait_for(rf"step (\d+)/{STEPS}").group(1))
        term.wait_for(rf"step (?!{first}/)(\d+)/{STEPS}", timeout=60)

        # stop, then resume
        term.keys("s")
        term.wait_for(rf"{run_dir.name}\s+stopped", timeout=180)
        stopped_step = status_of(logs)[1]["step"]
        assert 0 < stopped_step < STEPS
        assert any(e["event"] == "stopped" for e in map(json.loads, (run_dir / "events.jsonl").read_text().split(
            "\n")[:-1]))
        term.keys("r")
        term.wait_for(rf"{run_dir.name}\s+(preparing|running)", timeout=60)
        term.wait_for(rf"{run_dir.name}\s+finished", timeout=300)
        term.wait_for(r"evaluation ready: press e", timeout=30)
        assert any(e["event"] == "resumed" for e in map(json.loads, (run_dir / "events.jsonl").read_text().split(
            "\n")[:-1]))

        # the evaluation table
        term.keys("e")
        term.wait_for(r"SparkNet — Evaluation")
        term.wait_for(r"this run\s+measured")
        screen = term.screen()
        # the demo's own tokenizer: scored on the mix's held-out text, with what a WikiText comparison needs
        assert "held-out text of mix 'demo'" in screen and "GPT-2 tokenizer" in screen
        doc = json.loads((run_dir / "eval.json").read_text())
        measured = doc["evaluations"][0]["results"][0]
        assert f"{measured['loss']:.4f}" in screen
        term.keys("q")
        term.wait_closed()
    finally:
        term.close()
        if run_dir is not None:  # never leave a training process of ours behind
            pid = json.loads((run_dir / "status.json").read_text()).get("pid")
            if pid_alive(pid):
                os.kill(pid, 15)
