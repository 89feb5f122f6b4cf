"""End to end: the real `sparknet` command in a real terminal (tmux), driven by keys like a user would.

Start tiny-cpu with the demo mix from the New run screen, watch metrics
arrive on Live, close the panel (the run goes on) and open it again, stop
the run, resume it, see it finish and its evaluation table appear.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from cli_helpers import PROJECT, scaled
from tui_fixtures import pid_alive

pytest_plugins = ["tui_fixtures"]

STEPS = 600
TOKENS = STEPS * 2048  # tens of seconds on 2 cores: time enough to close, reopen and stop it part-way


class Terminal:
    """One tmux server of our own (private socket) showing one command at 120x40."""

    def __init__(self, env: dict[str, str]):
        if shutil.which("tmux") is None:
            pytest.fail("the end-to-end test drives the panel in tmux; install tmux (apt-get install tmux)")
        self.socket = f"sparknet-test-{uuid.uuid4().hex[:8]}"
        self.env = env

    def tmux(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=scaled(30))

    def start(self, argv: list[str]) -> None:
        assignments = [f"{k}={v}" for k, v in self.env.items()]
        # GNU readline, once loaded in this process, exports COLUMNS/LINES of a terminal we are not in;
        # the panel must size itself from the tmux window instead
        command = " ".join(shlex.quote(a) for a in ["env", "-u", "COLUMNS", "-u", "LINES", *assignments, *argv])
        result = self.tmux("new-session", "-d", "-s", "panel", "-x", "120", "-y", "40", command)
        assert result.returncode == 0, result.stderr

    def screen(self) -> str:
        result = self.tmux("capture-pane", "-p", "-t", "panel")
        return result.stdout if result.returncode == 0 else ""

    def keys(self, *keys: str) -> None:
        for key in keys:
            result = self.tmux("send-keys", "-t", "panel", key)
            assert result.returncode == 0, result.stderr
            time.sleep(0.15)

    def type(self, text: str) -> None:
        result = self.tmux("send-keys", "-t", "panel", "-l", text)
        assert result.returncode == 0, result.stderr
        time.sleep(0.15)

    def cursor(self) -> tuple[int, int]:
        """Where the panel put the terminal's cursor: on the focused field."""
        shown = self.tmux("display", "-p", "-t", "panel", "#{cursor_x} #{cursor_y}").stdout.split()
        return (int(shown[0]), int(shown[1])) if len(shown) == 2 else (-1, -1)

    def tab_to(self, label: str, most: int = 20) -> None:
        """Press Tab until the field after `label` has the focus, each press taking effect before the next.

        The panel hands a key to whichever widget has the focus when the key
        is read, so a key sent before the previous Tab moved the focus would
        land in the previous field.
        """
        for _ in range(most):
            x, y = self.cursor()
            rows = self.screen().split("\n")
            if 0 <= y < len(rows) and re.search(rf"(^|\s){re.escape(label)}\s+\S*\s*$", rows[y][:x]):
                return
            self.keys("Tab")
            end = time.monotonic() + scaled(10)
            while self.cursor() == (x, y) and time.monotonic() < end:
                time.sleep(0.05)
        raise AssertionError(f"Tab never reached the field {label!r}; the screen:\n{self.screen()}")

    def wait_for(self, pattern: str, timeout: float = 60) -> re.Match:
        """Wait up to `timeout` seconds of a quiet machine for the pattern to appear."""
        end = time.monotonic() + scaled(timeout)
        while time.monotonic() < end:
            found = re.search(pattern, self.screen())
            if found:
                return found
            time.sleep(0.2)
        raise AssertionError(f"{pattern!r} did not appear within {timeout:.0f} s; the screen:\n{self.screen()}")

    def running(self) -> bool:
        return self.tmux("has-session", "-t", "panel").returncode == 0

    def wait_closed(self, timeout: float = 30) -> None:
        end = time.monotonic() + scaled(timeout)
        while self.running() and time.monotonic() < end:
            time.sleep(0.2)
        assert not self.running(), f"the panel did not exit:\n{self.screen()}"

    def close(self) -> None:
        self.tmux("kill-server")


def sparknet_argv() -> list[str]:
    """The installed `sparknet` command beside this interpreter (the venv's), else its entry module."""
    beside = Path(sys.executable).parent / "sparknet"
    installed = str(beside) if beside.exists() else shutil.which("sparknet")
    return [installed] if installed else [sys.executable, "-m", "sparknet_tui.entry"]


def status_of(logs: Path) -> tuple[Path, dict]:
    (run,) = [p for p in logs.iterdir() if p.is_dir()]
    return run, json.loads((run / "status.json").read_text())


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
        assert "GPT-2 (124M)" in screen and "published" in screen
        doc = json.loads((run_dir / "eval.json").read_text())
        measured = doc["results"][0]
        assert f"{measured['loss']:.4f}" in screen
        term.keys("q")
        term.wait_closed()
    finally:
        term.close()
        if run_dir is not None:  # never leave a training process of ours behind
            pid = json.loads((run_dir / "status.json").read_text()).get("pid")
            if pid_alive(pid):
                os.kill(pid, 15)
