"""Sweeps: one sweep's ranked table, live while it runs, its variants' curves overlaid by tokens; start, stop and
resume sweeps and save a variant as a profile, all through the `sparknet sweep` command."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import DataTable, Footer, Header, Input, Label, Select, Static

from engine import SparkNetError
from engine.config.loading import profiles_dir
from engine.files import read_jsonl
from engine.runs.sweep import DONE, SweepState, ranked_rows, sweeps_dir
from engine.runs.sweep_table import HEADERS, table_cells
from sparknet_tui.messages import CliCommand
from sparknet_tui.screens.common import PanelScreen, column_widths, columns_that_fit, fill_table
from sparknet_tui.widgets.chart import ChartData, LineChart, Series, legend

STYLES = ("bold cyan", "bold magenta", "bold yellow", "bold green", "bold blue", "bold red")
SHOWN_AT_FIRST = 3  # the best variants drawn before any is marked
# columns a narrow terminal gives up first; the line under the table gives them for the highlighted variant
DROPPED_FIRST = ("state", "grad", "spike", "wall", "best val", "tok/s", "settings")


def spec_files() -> list[Path]:
    return sorted((profiles_dir() / "sweeps").glob("*.toml"))


def sweep_names() -> list[str]:
    folder = sweeps_dir()
    return sorted(d.name for d in folder.iterdir() if (d / "sweep.json").exists()) if folder.is_dir() else []


def variant_curves(state: SweepState, variants: list[str]) -> list[Series]:
    """The training loss of each run of these variants against tokens seen, one colour a variant."""
    series = []
    for i, variant in enumerate(variants):
        for entry in (e for e in state.entries if e.variant == variant and e.run):
            rows = read_jsonl(state.folder / entry.run / "metrics.jsonl")
            points = [(r["tokens"], r["loss"]) for r in rows if isinstance(r.get("tokens"), (int, float))
                      and isinstance(r.get("loss"), (int, float))]
            series.append(Series(f"{variant} s{entry.seed}", points, STYLES[i % len(STYLES)]))
    return series


class SweepRead(Message):
    def __init__(self, state: SweepState | None, problem: str | None, names: list[str], curves: list[Series]):
        super().__init__()
        self.state, self.problem, self.names, self.curves = state, problem, names, curves


class SweepsScreen(PanelScreen):
    SUB_TITLE = "Sweeps"
    HELP_TOPIC = "sweeps"

    BINDINGS = [
        Binding("escape", "app.back", "Back"),
        Binding("m", "mark", "Mark", tooltip="draw the highlighted variant's curves (the best three at first)"),
        Binding("ctrl+s", "save", "Save as profile",
                tooltip="save the highlighted variant as a new profile, named in 'save as'"),
        Binding("ctrl+r", "start", "Start spec", tooltip="start the sweep spec chosen in 'spec' (profiles/sweeps/)"),
        Binding("x", "stop", "Stop", tooltip="stop the sweep: the run in hand checkpoints"),
        Binding("r", "resume", "Resume", tooltip="carry the sweep on; finished runs are never repeated"),
        Binding("q", "app.quit", "Quit", show=False),
    ]

    def __init__(self, context, name: str | None = None) -> None:
        super().__init__(context)
        self.wanted = name
        self.state: SweepState | None = None
        self.marked: list[str] = []
        self.shown: tuple | None = None
        self.rows: list[dict] = []

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="sweeps-pick"):
            yield Label("sweep", classes="pick-label")
            yield Select([(n, n) for n in sweep_names()], id="sweep-select", prompt="sweep", compact=True,
                         value=self.wanted if self.wanted in sweep_names() else Select.NULL)
            yield Label("spec", classes="pick-label")
            yield Select([(p.stem, str(p)) for p in spec_files()], id="spec-select", prompt="spec", compact=True)
        with VerticalScroll(id="sweeps-body"):
            yield Static(id="sweep-heading")
            yield DataTable(id="sweep-table", cursor_type="row", zebra_stripes=True)
            yield Static(id="sweep-detail")
            yield Static(id="sweep-legend")
            yield LineChart(id="sweep-chart", empty_message="no curves yet")
            yield Static(id="sweep-notes")
        with Horizontal(id="sweeps-save"):
            yield Label("save as", classes="pick-label")
            yield Input(id="save-as", placeholder="new profile name", compact=True)
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        names = sweep_names()
        select = self.query_one("#sweep-select", Select)
        if select.value is Select.NULL and names:
            select.value = names[-1]
        self.refresh_data()
        self.set_interval(self.context.poll_interval * 2, self.refresh_data)

    def chosen(self) -> str | None:
        value = self.query_one("#sweep-select", Select).value
        return None if value is Select.NULL else str(value)

    def refresh_data(self) -> None:
        name, marked = self.chosen(), list(self.marked)
        self.in_thread("sweep", lambda: self.read(name, marked))

    def read(self, name: str | None, marked: list[str]) -> SweepRead:
        names = sweep_names()
        if name is None:
            return SweepRead(None, None, names, [])
        try:
            state = SweepState.load(sweeps_dir() / name)
        except SparkNetError as e:
            return SweepRead(None, str(e), names, [])
        rows = ranked_rows(state.entries, state.spec.get("metric", "val_loss"))
        drawn = marked or [r["variant"] for r in rows if r["rank"] is not None][:SHOWN_AT_FIRST]
        return SweepRead(state, None, names, variant_curves(state, drawn))

    @on(Select.Changed, "#sweep-select")
    def _sweep_changed(self) -> None:
        self.marked, self.shown = [], None
        self.refresh_data()

    def on_sweep_read(self, message: SweepRead) -> None:
        select = self.query_one("#sweep-select", Select)
        if [str(v) for _, v in select._options if v is not Select.NULL] != message.names:
            with self.prevent(Select.Changed):
                select.set_options([(n, n) for n in message.names])
                if self.chosen() is None and message.names:
                    select.value = message.names[-1]
        state = message.state
        key = (message.problem, state and (state.state, [(e.state, e.run, e.summary) for e in state.entries]),
               [s.points[-1:] for s in message.curves], tuple(self.marked))
        if key == self.shown:
            return
        self.shown, self.state = key, state
        self.show(message)

    def show(self, message: SweepRead) -> None:
        heading = Text()
        state = message.state
        if message.problem:
            heading.append(message.problem, style="bold red")
        elif state is None:
            heading.append("No sweep yet: choose a spec and press ctrl+r, or run `sparknet sweep SPEC.toml`.",
                           style="dim")
        else:
            spec = state.spec
            done = sum(e.state in DONE for e in state.entries)
            heading.append(f"{state.folder.name}", style="bold")
            heading.append(f"  {state.state} · {done}/{len(state.entries)} runs · {spec.get('profile')} on "
                           f"{spec.get('mix')} · {spec.get('tokens', 0):,} tokens a run · ranked by "
                           f"{spec.get('metric', 'val_loss')}")
            if state.parallel > 1:
                heading.append(f"\n{state.parallel} runs at once on one device: tokens/s are not a run's alone",
                               style="yellow")
        self.query_one("#sweep-heading", Static).update(heading)
        self.rows = ranked_rows(state.entries, state.spec.get("metric", "val_loss")) if state else []
        self.show_table()
        self.query_one("#sweep-legend", Static).update(legend(message.curves))
        self.query_one(LineChart).data = ChartData(message.curves, x_label="tokens",
                                                   empty_message="no curves yet")
        self.query_one("#sweep-notes", Static).update(Text(
            "val loss: the last held-out loss (mean ± half the range over seeds); spike: the largest rise of the "
            "loss above its lowest so far, after warm-up; grad: the largest gradient norm after warm-up",
            style="dim"))

    def show_table(self) -> None:
        cells = [[("◆ " if r["variant"] in self.marked else "") + c if j == 1 else c
                  for j, c in enumerate(table_cells(r))] for r in self.rows]
        kept = columns_that_fit(HEADERS, column_widths(HEADERS, cells), self.size.width - 3, DROPPED_FIRST)
        table = self.query_one("#sweep-table", DataTable)
        cursor = table.cursor_row
        fill_table(table, [(HEADERS[i], HEADERS[i]) for i in kept],
                   [(r["variant"], [c[i] for i in kept]) for r, c in zip(self.rows, cells)])
        if self.rows:
            table.move_cursor(row=min(cursor, len(self.rows) - 1))
        self.show_detail()

    def show_detail(self) -> None:
        variant = self.highlighted()
        row = next((r for r in self.rows if r["variant"] == variant), None)
        text = Text()
        if row is not None:
            text.append(variant, style="bold")
            text.append("  " + " · ".join(f"{h} {c}" for h, c in zip(HEADERS[2:], table_cells(row)[2:])))
        self.query_one("#sweep-detail", Static).update(text)

    @on(DataTable.RowHighlighted)
    def _highlighted(self) -> None:
        self.show_detail()

    def on_resize(self) -> None:
        self.show_table()

    def highlighted(self) -> str | None:
        table = self.query_one("#sweep-table", DataTable)
        if table.row_count == 0:
            return None
        return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

    def action_mark(self) -> None:
        variant = self.highlighted()
        if variant is None:
            self.notify("No variant to mark yet", severity="warning")
            return
        self.marked = [v for v in self.marked if v != variant] if variant in self.marked else self.marked + [variant]
        self.refresh_data()

    def _ask(self, *args: str) -> None:
        self.post_message(CliCommand(["sweep", *args]))

    def action_save(self) -> None:
        name, variant = self.query_one("#save-as", Input).value.strip(), self.highlighted()
        if self.chosen() is None or variant is None:
            self.notify("No sweep variant to save", severity="warning")
        elif not name:
            self.notify("Type the new profile's name in 'save as' first", severity="warning")
        else:
            self._ask("save", self.chosen(), "--variant", variant, "--as", name)

    def action_start(self) -> None:
        spec = self.query_one("#spec-select", Select).value
        if spec is Select.NULL:
            self.notify("Choose a spec (profiles/sweeps/*.toml) first", severity="warning")
        else:
            self._ask(str(spec), "--detach")

    def action_stop(self) -> None:
        if self.chosen() is None:
            self.notify("No sweep to stop", severity="warning")
        else:
            self._ask("stop", self.chosen())

    def action_resume(self) -> None:
        if self.chosen() is None:
            self.notify("No sweep to resume", severity="warning")
        else:
            self._ask("resume", self.chosen(), "--detach")
