"""The CLI's one error boundary: what the machine refuses is one line with exit code 1, a reader that goes away
is no traceback."""

from __future__ import annotations

import json
import subprocess
import sys

from cli_helpers import PROJECT, scaled


def test_a_closed_pipe_ends_the_runs_table_without_a_traceback(tmp_path):
    logs = tmp_path / "logs"
    for i in range(3000):  # more lines than a pipe buffers
        run = logs / f"20260101-000000-run-{i:04d}"
        run.mkdir(parents=True)
        (run / "run.toml").write_text('profile_name = "tiny-cpu"\n')
        (run / "status.json").write_text(json.dumps({"state": "finished", "step": 1, "steps": 1}))
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "runs"], cwd=PROJECT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={"SPARKNET_LOGS": str(logs), "PATH": "/usr/bin:/bin"})
    assert proc.stdout.readline().startswith(b"run")
    proc.stdout.close()  # as `| head -1` does
    _, err = proc.communicate(timeout=scaled(60))
    assert proc.returncode == 1 and b"Traceback" not in err and err == b"", err
