"""The engine never imports Textual: it runs headless on a GPU box without the panel's dependencies."""

import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]


def test_engine_never_imports_textual():
    code = ("import sys, engine.cli, engine.train, engine.data, engine.evaluate, engine.bench, engine.telemetry; "
            "engine.cli.build_parser(); print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('textual', 'sparknet_tui')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
