"""A real terminal for the panel: one tmux server of our own, driven by keys as a user would."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import time
import uuid

import pytest
from cli_helpers import scaled


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
