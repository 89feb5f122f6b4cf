"""Runs: every run in logs/, live; open, stop, resume, delete, compare."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, Static

from engine.formatting import NA, fmt_age, fmt_count, fmt_duration, fmt_float, fmt_int, fmt_perplexity
from sparknet_tui.context import PanelContext
from sparknet_tui.messages import (
    DeleteRun,
    OpenCompare,
    OpenEvaluation,
    OpenLive,
    OpenNewRun,
    OpenSweeps,
    ResumeRun,
    RunsScanned,
    StopRun,
)
from sparknet_tui.scan import RunRow, RunsScanner
from sparknet_tui.screens.common import PanelScreen, column_widths, columns_that_fit, fill_table, state_text

COLUMNS = [
    ("run", "run"),
    ("state", "state"),
    ("progress", "progress"),
    ("loss", "loss"),
    ("val_ppl", "val ppl"),
    ("eta", "ETA"),
    ("tok_s", "tok/s"),
    ("temp", "GPU °C"),
    ("started", "started"),
    ("profile", "profile"),
    ("mix", "mix"),
]

# Columns a narrow terminal gives up first; the details line under the table carries what they said.
DROPPED_FIRST = ("mix", "profile", "started", "temp", "eta", "tok_s", "loss")


def fitting_columns(widths: list[int], room: int) -> list[int]:
    """Indexes of the COLUMNS that fit in `room` terminal columns."""
    return columns_that_fit([key for key, _ in COLUMNS], widths, room, DROPPED_FIRST)


def row_cells(row: RunRow, now: float, marked: bool) -> list[Text | str]:
    s = row.status
    progress = row.progress
    eta = s.eta_s if row.live else None
    if row.max_temp_c is None:
        temp = Text(NA, style="dim")
    elif row.hot:
        temp = Text(f"⚠ {row.max_temp_c:.0f}", style="bold red reverse")
    else:
        temp = Text(f"{row.max_temp_c:.0f}")
    return [
        Text(("◆ " if marked else "") + row.run_id, style="bold" if marked else ""),
        state_text(row.state, row.paused),
        f"{progress:4.0%}" if progress is not None else NA,
        fmt_float(s.number("loss")),
        fmt_perplexity(row.val_perplexity),
        fmt_duration(eta) if row.live else ("done" if row.state == "finished" else "—"),
        fmt_count(row.tokens_per_s),
        temp,
        fmt_age(s.fields.get("started_at") or row.config.get("created_at"), now),
        row.profile,
        row.mix,
    ]


class RunsScreen(PanelScreen):
    TITLE = "SparkNet"
    SUB_TITLE = "Runs"
    HELP_TOPIC = "runs"

    BINDINGS = [
        Binding("o", "open", "Open", tooltip="open the run's Live screen (Enter too)"),
        Binding("n", "new_run", "New", tooltip="start a new run from a saved profile and mix"),
        Binding("s", "stop", "Stop", tooltip="stop the run; it saves a checkpoint first"),
        Binding("r", "resume", "Resume", tooltip="resume a stopped or failed run from its newest checkpoint"),
        Binding("d", "delete", "Delete", tooltip="delete the run and all its files (asks first)"),
        Binding("m", "mark", "Mark", tooltip="mark the run for compare (two at most)"),
        Binding("c", "compare", "Compare", tooltip="compare the two marked runs"),
        Binding("e", "evaluation", "Eval", tooltip="the run's evaluation: perplexity, benchmarks, samples"),
        Binding("w", "sweeps", "Sweeps", tooltip="sweeps: ranked variants, their curves, saving the best"),
        Binding("q", "app.quit", "Quit", show=False),
    ]

    def __init__(self, context: PanelContext) -> None:
        super().__init__(context)
        self.scanner = RunsScanner()
        self.rows: list[RunRow] = []
        self.marked: list[str] = []
        self.scan_error: str | None = None
        self.rows_shown_at: int | None = None
        self.shown_widths: list[int] = []
        self.shown_columns: list[int] = []  # indexes of COLUMNS the table has now

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="runs-alert")
        yield DataTable(id="runs-table", cursor_type="row", zebra_stripes=True)
        yield Static(id="run-detail")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.refresh_data()
        self.set_interval(self.context.poll_interval * 2, self.refresh_data)

    def on_screen_resume(self) -> None:
        self.refresh_data()

    # ------------------------------------------------------------ data

    def refresh_data(self) -> None:
        self.in_thread("scan", lambda: RunsScanned(self.scanner.scan()))

    def on_runs_scanned(self, message: RunsScanned) -> None:
        minute = int(self.context.clock() // 60)  # the "started" ages change once a minute
        if (message.result.rows, message.result.error, minute) == (self.rows, self.scan_error, self.rows_shown_at):
            return  # nothing new: no redraw
        self.rows_shown_at = minute
        self.rows = message.result.rows
        self.scan_error = message.result.error
        self.marked = [m for m in self.marked if any(r.run_id == m for r in self.rows)]
        self.show_rows()

    def on_resize(self) -> None:
        self.shown_widths = []  # the columns that fit change with the width
        self.show_rows()

    def show_rows(self) -> None:
        table = self.query_one(DataTable)
        now = self.context.clock()
        current = self.current_row()
        keys = [r.run_id for r in self.rows]
        all_cells = [row_cells(row, now, row.run_id in self.marked) for row in self.rows]
        kept = fitting_columns(column_widths([label for _, label in COLUMNS], all_cells), self.size.width - 1)
        columns = [COLUMNS[i] for i in kept]
        cells = [[row[i] for i in kept] for row in all_cells]
        widths = column_widths([label for _, label in columns], cells)
        if [k.value for k in table.rows] != keys or widths != self.shown_widths or kept != self.shown_columns:
            self.shown_widths, self.shown_columns = widths, kept
            fill_table(table, columns, list(zip(keys, cells)))
            if current is not None and current.run_id in keys:
                table.move_cursor(row=keys.index(current.run_id))
        else:
            for row, row_values in zip(self.rows, cells):
                for (col, _), value in zip(columns, row_values):
                    table.update_cell(row.run_id, col, value)
        self.show_alert()
        self.show_detail()

    def show_alert(self) -> None:
        text = Text()
        if self.scan_error:
            text.append(self.scan_error + "\n", style="bold red")
        for row in self.rows:
            if row.paused:
                text.append(f"⏸ {row.run_id} is paused ({row.paused}): waiting for the GPU to cool\n",
                            style="bold yellow")
            elif row.hot:
                text.append(f"⚠ {row.run_id}: GPU at {row.max_temp_c:.0f}°C, above the {row.warn_c:.0f}°C "
                            "warning\n", style="bold red")
        if not self.rows and not self.scan_error:
            from engine.runs.rundir import logs_dir

            text.append(f"No runs in {logs_dir()} yet. Press n to start one.", style="dim")
        text.rstrip()
        alert = self.query_one("#runs-alert", Static)
        alert.update(text)
        alert.display = bool(text.plain)

    def show_detail(self) -> None:
        row = self.current_row()
        detail = self.query_one("#run-detail", Static)
        if row is None:
            detail.update("")
            return
        s = row.status
        text = Text(no_wrap=False)
        text.append(row.run_id, style="bold")
        text.append(f"  profile {row.profile} · mix {row.mix}")
        text.append(f" · step {fmt_int(s.number('step'))}/{fmt_int(s.steps)}")
        text.append(f" · tokens {fmt_count(s.number('tokens'))}/{fmt_count(s.number('total_tokens'))}")
        if s.phase:
            text.append(f" · {s.phase}")
        if row.live:
            text.append(f" · ETA {fmt_duration(s.eta_s)}")
        text.append(f" · {fmt_count(row.tokens_per_s)} tok/s")
        if row.max_temp_c is not None:
            text.append(f" · GPU {row.max_temp_c:.0f} °C", style="bold red" if row.hot else "")
        started = fmt_age(s.fields.get("started_at") or row.config.get("created_at"), self.context.clock())
        text.append(f" · started {started}")
        if row.problem:
            text.append(f"\n{row.problem}", style="bold red")
        if row.state == "failed" and s.error:
            text.append(f"\nerror: {s.error}", style="bold red")
        if self.marked:
            text.append(f"\nmarked for compare: {', '.join(self.marked)}", style="dim")
        detail.update(text)

    @on(DataTable.RowHighlighted)
    def _highlighted(self) -> None:
        self.show_detail()

    @on(DataTable.RowSelected)
    def _selected(self) -> None:
        self.action_open()

    def current_row(self) -> RunRow | None:
        table = self.query_one(DataTable)
        if not self.rows or table.row_count == 0:
            return None
        try:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        except Exception:  # the cursor is outside a table being rebuilt
            return None
        return next((r for r in self.rows if r.run_id == key), None)

    def _need_row(self) -> RunRow | None:
        row = self.current_row()
        if row is None:
            self.notify("No run selected: start one with n", severity="warning")
        return row

    # ------------------------------------------------------------ actions

    def action_open(self) -> None:
        row = self._need_row()
        if row:
            self.post_message(OpenLive(row.path))

    def action_sweeps(self) -> None:
        self.post_message(OpenSweeps())

    def action_new_run(self) -> None:
        self.post_message(OpenNewRun())

    def action_evaluation(self) -> None:
        row = self._need_row()
        if row:
            self.post_message(OpenEvaluation(row.path))

    def action_stop(self) -> None:
        row = self._need_row()
        if row:
            self.post_message(StopRun(row.path, row.state))

    def action_resume(self) -> None:
        row = self._need_row()
        if row:
            self.post_message(ResumeRun(row.path, row.state))

    def action_delete(self) -> None:
        row = self._need_row()
        if row:
            self.post_message(DeleteRun(row.path, row.state))

    def action_mark(self) -> None:
        row = self._need_row()
        if row is None:
            return
        if row.run_id in self.marked:
            self.marked.remove(row.run_id)
        else:
            self.marked = (self.marked + [row.run_id])[-2:]
        self.show_rows()

    def action_compare(self) -> None:
        picked = list(self.marked)
        row = self.current_row()
        if len(picked) == 1 and row is not None and row.run_id not in picked:
            picked.append(row.run_id)
        if len(picked) != 2:
            self.notify("Mark two runs with m, then press c", severity="warning")
            return
        paths = [next(r.path for r in self.rows if r.run_id == run_id) for run_id in picked]
        self.post_message(OpenCompare(paths[0], paths[1]))
