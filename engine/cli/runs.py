"""`sparknet runs`: every run, newest first, one line each."""

from __future__ import annotations

from engine.formatting import fmt_age, fmt_count, fmt_duration, fmt_float
from engine.runs.reader import list_runs
from engine.runs.rundir import logs_dir

RUNS_COLUMNS = ("run", "state", "progress", "loss", "val", "tok/s", "started")


def runs_table_rows(runs, now: float) -> list[list[str]]:
    """One row of plain text a run, newest first, as the panel lists them."""
    rows = []
    for r in sorted(runs, key=lambda r: r.run_id, reverse=True):  # run ids start with their creation time
        s = r.status
        state = s.state.value + (" (thermal pause)" if s.paused else "")
        if s.compiling:
            state += " (compiling)"  # the first step: minutes on a small GPU, and no speed yet
        if s.stalled_s:
            state += f" {fmt_duration(s.stalled_s)}"
        progress = f"{s.step}/{s.steps}" if s.steps else str(s.step)
        if s.steps and s.progress is not None:
            progress += f" {100 * s.progress:.0f}%"
        rows.append([r.run_id, state, progress, fmt_float(s.number("loss"), 3), fmt_float(s.number("val_loss"), 3),
                     fmt_count(s.number("tokens_per_s")), fmt_age(s.fields.get("started_at"), now)])
    return rows


def cmd_runs(args) -> int:
    import time

    runs = list_runs()
    if not runs:
        print(f"no runs in {logs_dir()}")
        return 0
    rows = [list(RUNS_COLUMNS)] + runs_table_rows(runs, time.time())
    # columns as wide as their widest cell: a run id is never cut, so it can be copied from here
    widths = [max(len(row[i]) for row in rows) for i in range(len(RUNS_COLUMNS))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0
