"""`sparknet export` never replaces what a user made without being asked: an earlier export, other files, a file
where a folder should be; the machine's refusals are one line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cli_helpers import FAST, sparknet

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    logs = tmp_path_factory.mktemp("logs")
    env = dict(os.environ, SPARKNET_LOGS=str(logs))
    sparknet("train", "--profile", "tiny-cpu", *FAST, "--set", "run.tokens=20_480", env=env)
    return next(d for d in logs.iterdir() if d.is_dir())


def one_line_error(proc, code: int, *words: str) -> None:
    assert proc.returncode == code, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    for word in words:
        assert word in proc.stderr, proc.stderr


def test_an_earlier_export_is_kept_unless_forced_and_force_replaces_only_what_export_writes(run, tmp_path):
    out = tmp_path / "my-model"
    sparknet("export", str(run), str(out))
    first = (out / "model.safetensors").read_bytes()
    (out / "model.safetensors").write_bytes(b"the user's own weights")
    (out / "notes.txt").write_text("mine")
    one_line_error(sparknet("export", str(run), str(out), check=False), 2, str(out), "is not empty", "--force")
    assert (out / "model.safetensors").read_bytes() == b"the user's own weights"
    sparknet("export", str(run), str(out), "--force")
    assert (out / "model.safetensors").read_bytes() == first and (out / "notes.txt").read_text() == "mine"
    assert not [p for p in out.iterdir() if p.name.startswith(".export-")]


def test_a_gguf_file_is_kept_unless_forced_beside_other_files(run, tmp_path):
    (tmp_path / "other.gguf").write_text("another model")
    sparknet("export", str(run), str(tmp_path), "--format", "gguf")
    made = tmp_path / f"{run.name}-f16.gguf"
    made.write_bytes(b"edited")
    one_line_error(sparknet("export", str(run), str(tmp_path), "--format", "gguf", check=False), 2, str(made))
    assert made.read_bytes() == b"edited"
    sparknet("export", str(run), str(tmp_path), "--format", "gguf", "--force")
    assert made.read_bytes()[:4] == b"GGUF" and (tmp_path / "other.gguf").read_text() == "another model"


def test_a_file_where_the_folder_goes_and_a_place_that_cannot_be_made_are_one_line(run, tmp_path):
    (tmp_path / "taken").write_text("a file")
    one_line_error(sparknet("export", str(run), str(tmp_path / "taken"), check=False), 2, "is a file")
    one_line_error(sparknet("export", str(run), str(tmp_path / "taken" / "inside"), check=False), 2,
                   f"lies under {tmp_path / 'taken'}, which is a file")
    for fmt in ("hf", "gguf"):  # no folder can be made in /proc, even by root: refused before the model loads
        proc = sparknet("export", str(run), "/proc/sparknet-export", "--format", fmt, check=False)
        one_line_error(proc, 2, "export folder /proc/sparknet-export: cannot write in /proc")
        assert "using checkpoint" not in proc.stdout, proc.stdout
