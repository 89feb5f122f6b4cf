"""The CLI's one error boundary: a user's mistake or a malformed file is one line with exit code 2, what the
machine refuses is one line with exit code 1, a reader that goes away is no traceback; real files, real processes
and, where root may mount one, a real small or read-only filesystem."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import FAST, PROJECT, only_run, scaled, sparknet
from eval_helpers import tiny_model

from engine.data.cache import read_manifest
from engine.models.export_hf import export_hf


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


@pytest.mark.slow
def test_a_run_whose_console_reader_goes_away_trains_on_without_a_word_of_it(logs):
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "train", "--profile", "tiny-cpu", *FAST, "--set",
                             "run.tokens=61_440"], cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline()
    proc.stdout.close()  # as `sparknet train ... | head -1` does
    _, err = proc.communicate(timeout=scaled(120))
    assert proc.returncode == 0 and b"Traceback" not in err and b"Logging error" not in err, err[-2000:]
    run = only_run(logs)
    assert json.loads((run / "status.json").read_text())["state"] == "finished"
    assert "finished: finished 60 steps" in (run / "train.log").read_text()  # train.log keeps every line


def test_the_panel_outside_a_terminal_and_on_a_logs_file_is_one_line(tmp_path):
    """Without a terminal the panel would draw into the pipe and wait for keys forever."""
    panel = [sys.executable, "-m", "sparknet_tui.entry"]
    proc = subprocess.run(panel, cwd=PROJECT, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=scaled(60))
    assert proc.returncode == 2 and proc.stdout == "" and "the panel needs a terminal" in proc.stderr, proc.stderr
    notes = tmp_path / "notes"
    notes.write_text("mine\n")
    main, terminal = pty.openpty()  # a terminal of its own: stdin and stdout are one
    try:
        proc = subprocess.run([*panel, "--logs", str(notes)], cwd=PROJECT, stdin=terminal, stdout=terminal,
                              stderr=subprocess.PIPE, text=True, timeout=scaled(60))
    finally:
        os.close(terminal)
        os.close(main)
    assert proc.returncode == 2 and f"--logs: {notes} is a file, not a folder" in proc.stderr, proc.stderr
    assert notes.read_text() == "mine\n"


# ---------------------------------------------------------------- the fault table: every verb, one line each

def one_line_error(proc: subprocess.CompletedProcess, code: int, *words: str) -> str:
    err = proc.stderr.strip()
    assert proc.returncode == code and "Traceback" not in err and "\n" not in err, (proc.returncode, proc.stderr)
    assert all(word in err for word in words), err
    return err


@pytest.fixture
def model_dir(tmp_path, tok):
    return export_hf(tiny_model(), tmp_path / "model", tok)


@pytest.mark.slow
def test_a_run_record_without_its_tables_is_one_line_and_changes_nothing(logs):
    sparknet("train", "--profile", "tiny-cpu", *FAST, "--set", "run.tokens=4096")
    run = only_run(logs)
    (run / "run.toml").write_text("")
    (run / "status.json").write_text(json.dumps({"state": "stopped", "step": 3, "steps": 9}))
    def contents():  # lock files aside: taking a lock writes nothing a reader uses
        return sorted(p.relative_to(run) for p in run.rglob("[!.]*")), (run / "status.json").read_text()

    before = contents()
    for verb in ("resume", "eval"):
        one_line_error(sparknet(verb, str(run), check=False), 2, "run.toml", "[profile]")
        assert contents() == before


def test_a_model_folder_with_damaged_weights_is_one_line(model_dir):
    weights = model_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    one_line_error(sparknet("eval", str(model_dir), "--device", "cpu", check=False), 2, str(model_dir),
                   "export the model again")


def test_wikitext_that_is_not_text_is_one_line(model_dir, tmp_path):
    wiki = tmp_path / "wiki"
    wiki.mkdir()
    for name in ("wiki.test.raw", "wiki.valid.raw"):
        (wiki / name).write_bytes(bytes(range(128, 256)) * 64)
    one_line_error(sparknet("eval", str(model_dir), "--wikitext", str(wiki), "--device", "cpu", check=False), 2,
                   "wiki.test.raw", "not UTF-8")


def test_a_runs_folder_that_is_a_file_is_one_line_and_nothing_is_made(tmp_path):
    not_a_folder = tmp_path / "logs"
    not_a_folder.write_text("notes\n")
    env = {**os.environ, "SPARKNET_LOGS": str(not_a_folder)}
    for args in (("train", "--profile", "tiny-cpu", "--set", "run.tokens=4096"), ("runs",)):
        one_line_error(sparknet(*args, check=False, env=env), 2, "SPARKNET_LOGS", str(not_a_folder))
    assert not_a_folder.read_text() == "notes\n"


def test_a_cache_manifest_missing_a_field_is_rebuilt_not_fatal(tmp_path):
    env = {**os.environ, "SPARKNET_CACHE": str(tmp_path / "cache")}
    sparknet("prepare", "--mix", "demo", env=env)
    manifests = list((tmp_path / "cache").glob("tokens/*/*/manifest.json"))
    broken = json.loads(manifests[0].read_text())
    del broken["dtype"]
    manifests[0].write_text(json.dumps(broken))
    sparknet("prepare", "--mix", "demo", env=env)
    assert json.loads(manifests[0].read_text())["dtype"] == "uint16"


@contextlib.contextmanager
def tmpfs(path: Path, size: str, read_only: bool = False):
    path.mkdir()
    options = f"size={size}" + (",ro" if read_only else "")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True).returncode:
        pytest.skip("mounting a small tmpfs needs root (CAP_SYS_ADMIN) on this machine")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_read_only_runs_folder_is_refused_before_start_and_a_full_cache_disk_is_one_line(tmp_path):
    with tmpfs(tmp_path / "ro", "1m", read_only=True) as logs:  # the setting is the user's, and known at start
        env = {**os.environ, "SPARKNET_LOGS": str(logs)}
        for check in ([], ["--check"]):
            one_line_error(sparknet("train", "--profile", "tiny-cpu", "--set", "run.tokens=4096", *check,
                                    check=False, env=env), 2, f"SPARKNET_LOGS: cannot write in {logs}",
                           "Read-only file system")
    with tmpfs(tmp_path / "full", "96k") as cache:
        env = {**os.environ, "SPARKNET_CACHE": str(cache)}
        one_line_error(sparknet("prepare", "--mix", "demo", check=False, env=env), 1, "No space left on device")
        # what was committed verifies; an uncommitted tail is cut off by the next prepare, never read
        for manifest in cache.glob("tokens/*/*/manifest.json"):
            assert read_manifest(manifest.parent) is not None


def test_an_evaluation_whose_results_could_not_be_saved_is_refused_before_it_scores(tmp_path, tok):
    with tmpfs(tmp_path / "model", "16m") as folder:  # a model folder on a mount made read-only after the export
        export_hf(tiny_model(), folder, tok)
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        for tasks in ([], ["--tasks", "no-such-task"]):
            proc = sparknet("eval", str(folder), "--device", "cpu", *tasks, check=False)
            one_line_error(proc, 2, f"{folder}: cannot write in {folder} (Read-only file system)",
                           "evaluate the copy")
            assert "perplexity" not in proc.stdout, proc.stdout  # nothing was scored


def test_an_unexpected_failure_is_one_line_and_the_debug_switch_shows_the_traceback(tmp_path):
    from engine.cli.main import error_line

    assert error_line(KeyError("dtype")) == (1, "KeyError: 'dtype' (an unexpected failure: SPARKNET_DEBUG=1 shows "
                                                 "where it happened)")
    not_a_folder = tmp_path / "logs"
    not_a_folder.write_text("")
    proc = sparknet("runs", check=False, process=True, env={**os.environ, "SPARKNET_LOGS": str(not_a_folder),
                                                            "SPARKNET_DEBUG": "1"})
    assert proc.returncode == 1 and "Traceback" in proc.stderr
