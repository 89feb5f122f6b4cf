"""The manual's screenshots come from a script in the repo; it runs, over real runs, and pictures every screen."""

from __future__ import annotations

import subprocess
import sys

import pytest
from cli_helpers import PROJECT

SCRIPT = PROJECT / "scripts" / "panel_screenshots.py"
TITLES = {"runs": "Runs", "new-run": "New run", "live": "Live", "evaluation": "Evaluation", "compare": "Compare",
          "sweeps": "Sweeps", "help": "runs screen"}


@pytest.mark.long
@pytest.mark.slow
def test_the_screenshot_script_pictures_every_screen(tmp_path):
    out = tmp_path / "panel"
    done = subprocess.run([sys.executable, str(SCRIPT), str(out), "--size", "80x24", "--text"], cwd=PROJECT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for name, title in TITLES.items():
        svg = (out / f"{name}.svg").read_text(encoding="utf-8")
        assert svg.startswith("<svg") and title.replace(" ", "&#160;") in svg, name
        assert f"--- {name} (80x24)" in done.stdout
    assert "lr-3e-3" in done.stdout and "finished" in done.stdout  # the runs it trained are on the pictures
    # the manual's pictures are the script's, at 120x40
    for name in TITLES:
        assert (PROJECT / "docs" / "panel" / f"{name}.svg").exists(), name
