"""Snapshots of every screen (Runs, New run, Live, Evaluation, Compare, Help) at 80x24 and 120x40 (pytest-textual-snapshot).

The runs are frozen copies of this session's real tiny-cpu runs (see
tests/tui_fixtures.py) and the panel's clock is fixed, so the pictures do
not depend on when or where the tests run. After a deliberate change of the
panel, review and accept new pictures with `pytest tests/test_tui_snapshots.py
--snapshot-update`; they are kept in tests/snapshots/.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import pytest_textual_snapshot
from frozen_runs import FROZEN_NOW
from textual.widgets import DataTable

from sparknet_tui.app import SparkNetApp

pytest_plugins = ["tui_fixtures", "frozen_runs"]


def _screenshot_script():
    path = Path(__file__).resolve().parents[1] / "scripts" / "panel_screenshots.py"
    spec = importlib.util.spec_from_file_location("panel_screenshots", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


screen_rows = _screenshot_script().screen_rows  # the text of a screenshot, row by row

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 40), id="120x40")]


class PanelSnapshots(pytest_textual_snapshot.SVGImageExtension):
    @classmethod
    def dirname(cls, *, test_location) -> str:
        return str(Path(test_location.filepath).parent / "snapshots" / test_location.basename)


@pytest.fixture(autouse=True)
def snapshots_in_tests_snapshots(monkeypatch):
    # the plugin stores pictures in __snapshots__; this project keeps them in tests/snapshots
    monkeypatch.setattr(pytest_textual_snapshot, "SVGImageExtension", PanelSnapshots)


@pytest.fixture
def frozen_env(monkeypatch, frozen_runs, tmp_path):
    monkeypatch.setenv("SPARKNET_LOGS", str(frozen_runs.logs))
    monkeypatch.setenv("SPARKNET_PROFILES", str(frozen_runs.profiles))
    # the memory a New run's check reports free: the same 16 GiB on every machine
    (tmp_path / "meminfo").write_text(f"MemTotal: {32 << 20} kB\nMemAvailable: {16 << 20} kB\n")
    monkeypatch.setenv("SPARKNET_MEMINFO", str(tmp_path / "meminfo"))
    return frozen_runs


def still_app(**kwargs) -> SparkNetApp:
    # a poll interval longer than the test: the picture is of the first reading, nothing moves
    return SparkNetApp(clock=lambda: FROZEN_NOW, poll_interval=3600, **kwargs)


async def settled(pilot) -> None:
    for _ in range(3):
        await pilot.app.workers.wait_for_complete()
        # a short sleep lets the app go idle, when tables size their columns to new rows
        await pilot.pause(0.05)


async def open_new_run(pilot) -> None:
    await settled(pilot)
    await pilot.press("n")
    await settled(pilot)


def open_evaluation_of(run: Path):
    async def open_evaluation(pilot) -> None:
        await settled(pilot)
        pilot.app.open_evaluation(run)
        await settled(pilot)
    return open_evaluation


@pytest.mark.parametrize("size", SIZES)
def test_runs_screen(snap_compare, frozen_env, size):
    assert snap_compare(still_app(), terminal_size=size, run_before=settled)


@pytest.mark.slow
@pytest.mark.parametrize("size", SIZES)
def test_new_run_screen(snap_compare, frozen_env, size):
    assert snap_compare(still_app(), terminal_size=size, run_before=open_new_run)


@pytest.mark.parametrize("size", SIZES)
def test_live_screen(snap_compare, frozen_env, size):
    assert snap_compare(still_app(open_run=frozen_env.running), terminal_size=size, run_before=settled)


@pytest.mark.parametrize("size", SIZES)
def test_live_screen_of_a_failed_run(snap_compare, frozen_env, size):
    assert snap_compare(still_app(open_run=frozen_env.failed), terminal_size=size, run_before=settled)


@pytest.mark.parametrize("size", SIZES)
def test_evaluation_screen(snap_compare, frozen_env, size):
    assert snap_compare(still_app(), terminal_size=size, run_before=open_evaluation_of(frozen_env.finished))


def open_benchmarks_of(run: Path):
    async def open_benchmarks(pilot) -> None:
        await open_evaluation_of(run)(pilot)
        pilot.app.screen.query_one("#eval-benchmark-notes").scroll_visible(animate=False)
        await settled(pilot)
    return open_benchmarks


@pytest.mark.parametrize("size", SIZES)
def test_evaluation_screen_benchmark_table(snap_compare, frozen_env, size):
    assert snap_compare(still_app(), terminal_size=size, run_before=open_benchmarks_of(frozen_env.finished))


def open_compare_of(a: Path, b: Path):
    async def open_compare(pilot) -> None:
        await settled(pilot)
        pilot.app.open_compare(a, b)
        await settled(pilot)
    return open_compare


async def open_help(pilot) -> None:
    await settled(pilot)
    await pilot.press("question_mark")
    await settled(pilot)


@pytest.mark.parametrize("size", SIZES)
def test_compare_screen(snap_compare, frozen_env, size):
    assert snap_compare(still_app(), terminal_size=size,
                        run_before=open_compare_of(frozen_env.finished, frozen_env.running))


async def open_sweeps(pilot) -> None:
    await settled(pilot)
    await pilot.press("w")
    await settled(pilot)
    await settled(pilot)


@pytest.mark.parametrize("size", SIZES)
def test_sweeps_screen(snap_compare, frozen_env, frozen_sweep, monkeypatch, size):
    monkeypatch.setenv("SPARKNET_LOGS", str(frozen_sweep))
    assert snap_compare(still_app(), terminal_size=size, run_before=open_sweeps)


@pytest.mark.parametrize("size", SIZES)
def test_help_screen(snap_compare, frozen_env, size):
    assert snap_compare(still_app(), terminal_size=size, run_before=open_help)


@pytest.mark.slow
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("screen", ["runs", "new run", "live", "failed live", "evaluation", "benchmarks", "compare",
                                    "help", "sweeps"])
async def test_no_line_is_cut(frozen_env, frozen_sweep, monkeypatch, size, screen):
    """Errors, events, log lines, notes and the plan wrap, and tables keep the columns that fit: nothing on these
    screens ends in an ellipsis or needs scrolling sideways."""
    open_run = {"live": frozen_env.running, "failed live": frozen_env.failed}.get(screen)
    opener = {"new run": open_new_run, "evaluation": open_evaluation_of(frozen_env.finished),
              "benchmarks": open_benchmarks_of(frozen_env.finished),
              "compare": open_compare_of(frozen_env.finished, frozen_env.running), "help": open_help,
              "sweeps": open_sweeps}.get(screen, settled)
    if screen == "sweeps":
        monkeypatch.setenv("SPARKNET_LOGS", str(frozen_sweep))
    app = still_app(open_run=open_run)
    async with app.run_test(size=size) as pilot:
        await opener(pilot)
        rows = screen_rows(app.export_screenshot())
        # nor does a table reach past its window, where it would have to be scrolled sideways
        wide = [t.id for t in app.screen.query(DataTable) if t.display and t.virtual_size.width > t.size.width]
    assert not wide, wide
    assert len(rows) >= 10, rows  # the screenshot was read
    cut = [row for row in rows if "…" in row]
    assert not cut, "\n".join(rows)
