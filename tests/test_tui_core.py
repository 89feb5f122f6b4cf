"""The panel's reading, planning and drawing code, without Textual, against real run directories."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from cli_helpers import scaled
from tui_fixtures import BROKEN_LINE_AFTER, PROJECT, copy_run, read_jsonl

from engine.formatting import fmt_age, fmt_bytes, fmt_count, fmt_duration, fmt_perplexity, parse_time
from engine.runs.reader import RunReader
from engine.runs.records import GpuSample, MetricRow, SystemRow
from engine.runs.rundir import RunWriter
from engine.runs.status import RunStatus, State
from sparknet_tui.evalfile import read_eval
from sparknet_tui.scan import RunRow, RunsScanner, measured_throughput
from sparknet_tui.series import ema
from sparknet_tui.watch import RunWatcher
from sparknet_tui.widgets.chart import ChartData, Series, render_chart, spark
from sparknet_tui.widgets.hardware import fmt_gpu_memory, fmt_throttle, hardware_text, memory_line

pytest_plugins = ["tui_fixtures", "frozen_runs"]


# ---------------------------------------------------------------- the panel never imports the training stack


@pytest.mark.slow
def test_panel_imports_no_torch_transformers_or_datasets():
    code = (
        "import sys, sparknet_tui.app, sparknet_tui.screens.live, sparknet_tui.screens.new_run;"
        "heavy = sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules);"
        "print(','.join(heavy))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, timeout=scaled(120))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"sparknet_tui imported {proc.stdout.strip()}"


@pytest.mark.slow
def test_import_guard_detects_a_heavy_import(tmp_path):
    # the same check, pointed at a module that does import torch, must see it (the guard is not vacuous)
    (tmp_path / "heavy_mod.py").write_text("import torch\n")
    code = "import sys, heavy_mod; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=scaled(120))
    assert proc.stdout.strip() == "True"


def test_main_names_an_unknown_run_in_one_line(tmp_path):
    env = dict(os.environ, SPARKNET_LOGS=str(tmp_path))
    proc = subprocess.run([sys.executable, "-m", "sparknet_tui.app", "--run", "no-such-run"], cwd=PROJECT, env=env,
                          capture_output=True, text=True, timeout=scaled(120))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "sparknet: error: run 'no-such-run' not found: give a run id from `sparknet runs` or a run directory path"]


# ---------------------------------------------------------------- formatting


def test_formatting_of_missing_and_present_values():
    assert fmt_count(None) == "N/A"
    assert fmt_count(12_345_678) == "12.3M"
    assert fmt_count(999_600) == "1M" and fmt_count(999_400) == "999k"  # never "1000k"
    assert fmt_duration(3725) == "1h02m"
    assert fmt_duration(59) == "59s"
    assert fmt_duration(None) == "N/A"
    assert fmt_bytes(9_663_676_416) == "9.0 GiB"
    assert fmt_perplexity(float("nan")) == "N/A"
    assert parse_time("2026-01-01T00:00:00Z") == 1_767_225_600.0
    assert fmt_age("2026-01-01T00:00:00Z", 1_767_225_600.0 + 125) == "2m05s ago"


# ---------------------------------------------------------------- the Runs table


@pytest.mark.slow
def test_scanner_reads_real_runs(tiny_runs):
    rows = {r.run_id: r for r in RunsScanner(tiny_runs.logs).scan().rows}
    finished = rows[tiny_runs.finished.name]
    status = json.loads((tiny_runs.finished / "status.json").read_text())
    assert finished.state == "finished"
    assert finished.profile == "tiny-cpu" and finished.mix == "demo"
    assert finished.progress == 1.0
    assert finished.val_perplexity == pytest.approx(math.exp(status["val_loss"]))
    assert finished.tokens_per_s == status["tokens_per_s"]
    failed = rows[tiny_runs.failed.name]
    assert failed.state == "failed"
    assert f"broken-data.jsonl line {BROKEN_LINE_AFTER + 1} is not valid JSON" in failed.status.error
    # newest first
    assert [r.run_id for r in RunsScanner(tiny_runs.logs).scan().rows] == sorted(rows, reverse=True)


@pytest.mark.slow
def test_scanner_reports_a_live_run_with_a_dead_pid_as_failed(tiny_runs, tmp_path):
    run = copy_run(tiny_runs.finished, tmp_path / "logs")
    status = json.loads((run / "status.json").read_text())
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    status.update(state="running", pid=dead.pid)
    (run / "status.json").write_text(json.dumps(status))
    (row,) = RunsScanner(tmp_path / "logs").scan().rows
    assert row.state == "failed"
    assert "ended without saying so" in row.status.error


def test_scanner_survives_broken_run_directories(tmp_path):
    logs = tmp_path / "logs"
    bad_toml = logs / "20260101-000000-bad-toml"
    bad_toml.mkdir(parents=True)
    (bad_toml / "run.toml").write_text("profile_name = [unclosed\n")
    bad_status = logs / "20260101-000001-bad-status"
    bad_status.mkdir()
    (bad_status / "run.toml").write_text('profile_name = "x"\n')
    (bad_status / "status.json").write_text("[1, 2, 3]")
    (logs / "not-a-run").mkdir()
    result = RunsScanner(logs).scan()
    rows = {r.run_id: r for r in result.rows}
    assert set(rows) == {bad_toml.name, bad_status.name}
    assert "not valid TOML" in rows[bad_toml.name].problem
    assert rows[bad_status.name].state == "unknown"
    assert "status.json" in rows[bad_status.name].problem
    assert result.error is None


def test_scanner_reports_an_unlistable_logs_folder(tmp_path):
    not_a_folder = tmp_path / "logs"
    not_a_folder.write_text("a file where the logs folder should be")
    result = RunsScanner(not_a_folder).scan()
    assert result.rows == [] and "cannot list" in result.error


@pytest.mark.slow
def test_measured_throughput_is_the_median_of_finished_runs_of_the_same_shape(tiny_runs, tmp_path):
    logs = tmp_path / "logs"
    speeds = [1000.0, 3000.0, 2000.0]
    for i, speed in enumerate(speeds):
        run = copy_run(tiny_runs.finished, logs, f"2026010{i}-000000-r")
        status = json.loads((run / "status.json").read_text())
        status["tokens_per_s"] = speed
        (run / "status.json").write_text(json.dumps(status))
    copy_run(tiny_runs.failed, logs)  # failed runs do not count
    rows = RunsScanner(logs).scan().rows
    shape = next(r.shape for r in rows if r.state == "finished")
    assert measured_throughput(rows, shape) == (2000.0, 3)
    other = ("gpt2", 12, 512, 8, 1024, 50257)
    assert measured_throughput(rows, other) == (None, 0)


# ---------------------------------------------------------------- following one run


@pytest.mark.slow
def test_watcher_reads_a_real_run(tiny_runs):
    view = RunWatcher(tiny_runs.finished).poll()
    metrics = read_jsonl(tiny_runs.finished / "metrics.jsonl")
    assert view.state == "finished"
    assert [p[0] for p in view.loss_points] == [r["step"] for r in metrics if "loss" in r]
    assert [p[1] for p in view.val_points] == [r["val_loss"] for r in metrics if "val_loss" in r]
    assert len(view.val_points) >= 2
    assert view.tokens_per_s[-1] == metrics[-1]["tokens_per_s"]
    assert view.mfu == []  # a CPU run has no MFU (null), never 0
    assert any(e.event == "finished" for e in view.events)
    assert view.log_tail and view.eval is not None
    assert view.gpus == [] and view.cpu_pct is not None


@pytest.mark.slow
def test_watcher_reads_only_what_was_appended(tiny_runs, tmp_path):
    run = copy_run(tiny_runs.finished, tmp_path / "logs")
    metrics_path = run / "metrics.jsonl"
    watcher = RunWatcher(run)
    first = watcher.poll()
    offset = watcher.reader._metrics.offset
    assert offset == metrics_path.stat().st_size
    assert watcher.poll().loss_points == first.loss_points  # nothing new: nothing added
    assert watcher.reader._metrics.offset == offset

    last_step = first.loss_points[-1][0]
    row = {"step": last_step + 1, "tokens": 1, "loss": 2.5, "tokens_per_s": 1234.0}
    text = json.dumps(row) + "\n"
    with open(metrics_path, "a") as f:
        f.write(text[:10])  # a partial line, as a reader can see it mid-write
    assert watcher.poll().loss_points == first.loss_points
    with open(metrics_path, "a") as f:
        f.write(text[10:])
    view = watcher.poll()
    assert view.loss_points == first.loss_points + [(last_step + 1, 2.5)]
    assert view.tokens_per_s[-1] == 1234.0
    assert watcher.reader._metrics.offset == metrics_path.stat().st_size


@pytest.mark.slow
def test_watcher_reports_unreadable_files_as_problems(tiny_runs, tmp_path):
    run = copy_run(tiny_runs.finished, tmp_path / "logs")
    (run / "metrics.jsonl").unlink()
    (run / "metrics.jsonl").mkdir()  # unreadable as a file
    (run / "eval.json").write_text("{not json")
    (run / "run.toml").write_text("= broken")
    view = RunWatcher(run).poll()
    assert view.loss_points == []
    assert any("eval.json" in p for p in view.problems)
    assert any("run.toml" in p for p in view.problems)
    assert read_eval(run)[0] is None


def test_the_newest_telemetry_row_skips_a_partial_last_line(tmp_path):
    (tmp_path / "system.jsonl").write_text('{"t": 1, "cpu_pct": 5}\n{"t": 2, "cpu_pc')
    assert RunReader(tmp_path).last_system() == SystemRow(t=1.0, cpu_pct=5.0)
    assert RunReader(tmp_path / "missing").last_system() is None


def test_the_status_of_a_missing_and_a_garbage_file(tmp_path):
    status, problem = RunReader(tmp_path).status()
    assert status.state == State.UNKNOWN and problem is None
    (tmp_path / "status.json").write_text("garbage")
    status, problem = RunReader(tmp_path).status()
    assert status.state == State.UNKNOWN and "status.json" in problem


def test_records_read_what_writers_write_and_malformed_fields_as_none(tmp_path):
    rd = RunWriter(tmp_path)
    rd.metric(MetricRow(step=3, tokens=96, loss=2.5, val_loss=2.75))
    rd.system(SystemRow(t=1.0, gpus=[GpuSample(1, temp_c=61.0, throttle=["power"])]))
    rd.event("warning", "hot", step=3, kind="thermal")
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": "four", "loss": 1}\n{"step": 5, "loss": "nan?", "lr": null}\n[1, 2]\n')
    reader = RunReader(tmp_path)
    rows = reader.follow_metrics()
    assert [r.step for r in rows] == [3, 5] and rows[0].val_loss == 2.75 and rows[1].loss is None
    assert "wikitext_ppl" not in json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    (gpu,) = reader.follow_system()[0].gpus
    assert (gpu.index, gpu.temp_c, gpu.throttle, gpu.power_w) == (1, 61.0, ["power"], None)
    (event,) = reader.follow_events()
    assert (event.event, event.message, event.step, event.extra["kind"]) == ("warning", "hot", 3, "thermal")
    assert reader.follow_metrics() == []  # each line read once
    with pytest.raises(ValueError, match="status.json has no field eta"):
        rd.update_status(eta=5)  # a misspelt field fails where it is written


def test_ema_smoothing():
    assert ema([1.0, 2.0, 3.0], 0) == [1.0, 2.0, 3.0]
    smoothed = ema([10.0, 0.0, 0.0], 0.5)
    assert smoothed[0] == 10.0  # debiased: the first value is kept
    assert smoothed[1] == pytest.approx(10 * 0.25 / 0.75)


# ---------------------------------------------------------------- drawing


def test_chart_draws_each_series_and_the_axes():
    points = [(float(s), 10.0 - s) for s in range(10)]
    text = render_chart(ChartData([Series("loss", points, "cyan")]), width=40, height=8)
    lines = text.plain.splitlines()
    assert len(lines) == 8
    assert lines[0].strip().startswith("10.") and "┤" in lines[0]
    assert lines[-1].split()[:2] == ["step", "0"] and lines[-1].split()[-1] == "9"
    # a falling line: dots in the first plotted column sit higher than those in the last
    plot = [line[8:] for line in lines[:-1]]
    first_col_row = next(i for i, line in enumerate(plot) if line[0] != " ")
    last_col_row = next(i for i, line in enumerate(plot) if line[31] != " ")
    assert first_col_row == 0 and last_col_row == len(plot) - 1
    assert render_chart(ChartData([], empty_message="nothing"), 40, 8).plain == "nothing"


def test_spark_scales_between_min_and_max():
    assert spark([0, 5, 10], 10) == "▁▅█"
    assert spark([1, 2, 3, 4], 2) == "▁█"  # the last values only
    assert spark([], 5) == ""


@pytest.mark.slow
def test_hardware_panel_on_unified_memory_shows_no_invented_total(tiny_runs, tmp_path):
    run = copy_run(tiny_runs.finished, tmp_path / "logs")
    gpu = {"index": 0, "name": "NVIDIA GB10", "temp_c": 91.0, "power_w": None, "util_pct": 97,
           "sm_clock_mhz": 2405, "mem_used_b": 8 * 1024**3, "mem_total_b": None, "unified_memory": True,
           "throttle": ["thermal"]}
    with open(run / "system.jsonl", "a") as f:
        f.write(json.dumps({"t": 1.0, "cpu_pct": 12.0, "ram_used_b": 1, "ram_total_b": 2, "gpus": [gpu]}) + "\n")
    view = RunWatcher(run).poll()
    (g,) = view.gpus
    assert fmt_gpu_memory(g) == "8.0 GiB used (unified memory)"
    assert view.hot_gpus == [g]  # 91 > the profile's thermal.warn_c of 85
    text = hardware_text(view).plain
    assert "N/A" in text  # power not reported
    assert "%" not in text.split("mem")[1].splitlines()[0]
    assert "above 85°C" in text and "thermal" in text
    assert fmt_throttle(None) == "N/A" and fmt_throttle([]) == "none"


@pytest.mark.slow
def test_frozen_runs_keep_the_real_structure(tiny_runs, frozen_runs):
    real = read_jsonl(tiny_runs.finished / "metrics.jsonl")
    frozen = read_jsonl(frozen_runs.finished / "metrics.jsonl")
    assert [r["step"] for r in real] == [r["step"] for r in frozen]
    assert [sorted(r) for r in real] == [sorted(r) for r in frozen]
    config = tomllib.loads((frozen_runs.finished / "run.toml").read_text())
    assert config["run_id"] == frozen_runs.finished.name
    assert os.getpid() == json.loads((frozen_runs.running / "status.json").read_text())["pid"]
    assert Path(frozen_runs.profiles / "tiny-cpu.toml").exists()


@pytest.mark.slow
def test_scanner_reports_a_quiet_live_run_as_stalled(tiny_runs, tmp_path):
    from engine.runs.lock import RunLock

    run = copy_run(tiny_runs.finished, tmp_path / "logs")
    status = json.loads((run / "status.json").read_text())
    status.update(state="running", phase="training", pid=os.getpid(), update_every_s=1.0,
                  updated_at="2020-01-01T00:00:00Z")
    (run / "status.json").write_text(json.dumps(status))
    os.utime(run / "status.json", (1577836800, 1577836800))
    lock = RunLock.acquire(run)  # alive, but silent since 2020
    try:
        (row,) = RunsScanner(tmp_path / "logs").scan().rows
        assert row.state == "stalled" and row.status.stalled_s > 86400
    finally:
        lock.release()


def test_the_memory_line_shows_the_runs_own_ram_what_is_free_and_the_floor(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "status.json").write_text(json.dumps({"state": "running", "memory_floor_b": 3 * 1024**3}))
    (run / "system.jsonl").write_text(json.dumps({"t": 1.0, "ram_used_b": 5 * 1024**3, "ram_total_b": 8 * 1024**3,
                                                  "ram_available_b": 3.5 * 1024**3, "run_rss_b": 1.25 * 1024**3,
                                                  "gpus": []}) + "\n")
    view = RunWatcher(run).poll()
    assert memory_line(view) == "RAM of the run 1.2 GiB · free 3.5 GiB · stops below 3.0 GiB"
    (run / "status.json").write_text(json.dumps({"state": "running", "memory_floor_b": 0}))
    (run / "system.jsonl").write_text(json.dumps({"t": 1.0, "gpus": []}) + "\n")  # an older run: no such fields
    assert memory_line(RunWatcher(run).poll()) == "RAM of the run N/A · free N/A · off"


def test_a_live_run_shows_its_heartbeat_and_an_ended_one_labels_its_last_readings(tmp_path):
    from dataclasses import replace

    from engine.formatting import parse_time
    from sparknet_tui.screens.live import status_text

    run = tmp_path / "run"
    run.mkdir()
    (run / "system.jsonl").write_text(json.dumps({"t": 1.0, "cpu_pct": 97.0, "gpus": []}) + "\n")
    polled = RunWatcher(run).poll()
    updated = "2026-12-01T12:00:00Z"
    # as a reader sees a run whose trainer holds its lock, and one whose trainer has ended
    live = replace(polled, status=RunStatus({"state": "running", "updated_at": updated, "step": 3, "steps": 9}),
                   problems=[])
    ended = replace(live, status=RunStatus({**live.status.fields, "state": "finished"}))
    assert "status updated 3s ago" in status_text(live, parse_time(updated) + 3).plain
    assert "last readings" not in hardware_text(live).plain
    assert "status updated" not in status_text(ended, parse_time(updated) + 3).plain
    assert hardware_text(ended).plain.startswith("last readings (run finished)")


def test_ratios_read_in_plain_figures_never_in_exponent_notation():
    from engine.formatting import fmt_ratio

    assert [fmt_ratio(r) for r in (1.5134, 0.998, 17.46, 1750.4, None)] == ["×1.51", "×1.00", "×17.5", "×1,750", "N/A"]


def test_progress_and_the_thermal_pause_are_derived_once_for_the_cli_and_the_panel():
    from engine.cli.runs import runs_table_rows
    from engine.runs.reader import RunInfo
    from engine.runs.status import State

    halfway = {"state": "running", "step": 5, "steps": 10, "tokens": 500, "total_tokens": 1000, "paused": "GPU 0 hot"}
    assert RunStatus(halfway).progress == 0.5 and RunStatus(halfway).paused == "GPU 0 hot"
    assert RunStatus({"state": "running", "step": 3, "steps": 4}).progress == 0.75  # tokens unknown: by steps
    assert RunStatus({"state": "finished"}).progress == 1.0 and RunStatus({}).progress is None
    assert RunStatus({"state": "odd"}).state is State.UNKNOWN and RunStatus({"paused": ""}).paused is None
    (row,) = runs_table_rows([RunInfo("r", Path("r"), RunStatus(halfway), {})], now=0.0)
    assert row[1] == "running (thermal pause)" and row[2] == "5/10 50%"
    assert RunRow("r", Path("r"), "p", "m", RunStatus(halfway), {}).progress == 0.5
