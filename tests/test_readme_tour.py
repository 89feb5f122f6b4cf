"""The README's five-minute tour, command by command, as a new user meets it.

A fresh copy of the project (the files git would clone), with no network
(the hub switched off), empty caches and a home of its own, and no SPARKNET_*
variable: the demo mix must train, stop, resume, evaluate and export with
what the project ships. `.venv/bin` holds this interpreter's `sparknet`, as
scripts/setup.sh would leave it; the panel, the tour's last command, is
opened in tmux and closed again.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import PROJECT, scaled
from terminal import Terminal

FORBIDDEN = ("SPARKNET_", "HF_", "TRANSFORMERS_", "XDG_CACHE_HOME", "TORCH_HOME")


def tour_commands() -> list[str]:
    """The commands of the README's tour block, comments left out."""
    text = (PROJECT / "README.md").read_text(encoding="utf-8")
    block = text.split("## A five-minute tour", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    lines = [line.split("#", 1)[0].strip() for line in block.splitlines()]
    return [line for line in lines if line]


def fresh_copy(dst: Path) -> Path:
    """The project's files as a clone of this working tree would have them: tracked and not ignored."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=PROJECT, check=True,
                            capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        src = PROJECT / name
        if src.is_file():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / name)
    bin_dir = dst / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "sparknet").write_text(f"#!/bin/sh\nPYTHONPATH={shlex.quote(str(dst))} exec "
                                      f"{shlex.quote(sys.executable)} -m sparknet_tui.entry \"$@\"\n")
    (bin_dir / "sparknet").chmod(0o755)
    (bin_dir / "activate").write_text(f"export PATH={shlex.quote(str(bin_dir))}:$PATH\n")
    return dst


def offline_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(FORBIDDEN)}
    env.update(HOME=str(home), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return env


@pytest.mark.long
@pytest.mark.slow
def test_the_readme_tour_runs_offline_on_a_fresh_copy(tmp_path):
    commands = tour_commands()
    assert commands[0] == "source .venv/bin/activate" and commands[-1] == "sparknet", commands
    project = fresh_copy(tmp_path / "sparknet")
    home = tmp_path / "home"
    home.mkdir()
    env = offline_env(home)
    run_id = None
    for command in commands[1:-1]:
        line = command.replace("RUN", run_id or "RUN")
        proc = subprocess.run(["bash", "-c", f"source .venv/bin/activate && {line}"], cwd=project, env=env,
                              capture_output=True, text=True, timeout=scaled(300), stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, f"$ {line}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        assert "Traceback" not in proc.stderr, proc.stderr
        if "--detach" in line and "train" in line:
            run_id = proc.stdout.strip().splitlines()[-1]
        if line.startswith("sparknet eval"):
            assert "held-out text of mix 'demo'" in proc.stdout
        if line.startswith("sparknet sweep"):
            assert "ranked by val_loss" in " ".join(proc.stdout.split()) and "lr=0.01" in proc.stdout
    assert len(list((project / "logs" / "sweeps" / "demo-lr").glob("*/run.toml"))) == 6
    runs = sorted(p.name for p in (project / "logs").iterdir() if (p / "run.toml").exists())
    assert len(runs) == 2 and run_id in runs
    assert (home / "models" / "my-70m" / "config.json").exists()  # the export
    assert (home / ".cache" / "sparknet").is_dir()  # the demo's tokens, cached where a user's would be

    term = Terminal({"PATH": f"{project / '.venv' / 'bin'}:{env['PATH']}", **{k: env[k] for k in
                                                                            ("HOME", "HF_HUB_OFFLINE", "TERM")
                                                                            if k in env}, "TERM": "xterm-256color"})
    try:
        term.start(["sh", "-c", f"cd {shlex.quote(str(project))} && sparknet"])
        term.wait_for(r"SparkNet — Runs")
        term.wait_for(rf"{run_id}\s+finished")
        term.keys("q")
        term.wait_closed()
    finally:
        term.close()
