"""Pieces shared by the screens: state colours, the progress bar, explicitly sized tables, reading off the UI thread."""

from __future__ import annotations

from typing import Callable

from rich.cells import cell_len
from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable

from sparknet_tui.context import PanelContext
from sparknet_tui.messages import PanelProblem

STATE_STYLES = {
    "preparing": "yellow",
    "running": "bold green",
    "stopping": "yellow",
    "stalled": "bold yellow reverse",
    "stopped": "cyan",
    "finished": "bold blue",
    "failed": "bold red",
    "unknown": "dim",
}


def state_text(state: str, paused: str | None = None) -> Text:
    if paused:
        return Text(f"paused ({paused})", style="bold yellow reverse")
    return Text(state, style=STATE_STYLES.get(state, ""))


def bar_text(fraction: float | None, width: int = 20) -> Text:
    if fraction is None:
        return Text("░" * width + "   N/A", style="dim")
    filled = fraction * width
    whole = int(filled)
    part = " ▏▎▍▌▋▊▉"[int((filled - whole) * 8)] if whole < width else ""
    text = Text()
    text.append("█" * whole + part, style="green")
    text.append(" " * (width - whole - len(part)), style="on grey23")
    text.append(f" {fraction:4.0%}")
    return text


Cell = Text | str


def cell_width(cell: Cell) -> int:
    return cell.cell_len if isinstance(cell, Text) else cell_len(cell)


def column_widths(labels: list[str], rows: list[list[Cell]]) -> list[int]:
    return [max([len(label)] + [cell_width(row[i]) for row in rows]) for i, label in enumerate(labels)]


CELL_PADDING = 2  # a DataTable pads each cell by one column on either side


def columns_that_fit(keys: list[str], widths: list[int], room: int, dropped_first: tuple[str, ...]) -> list[int]:
    """Indexes of the columns that fit in `room` terminal columns, giving up those in `dropped_first` in order."""
    kept = list(range(len(keys)))
    for key in dropped_first:
        if sum(widths[i] + CELL_PADDING for i in kept) <= room:
            break
        kept.remove(keys.index(key))
    return kept


def fill_table(table: DataTable, columns: list[tuple[str, str]], rows: list[tuple[str, list[Cell]]]) -> None:
    """Replace a table's columns and rows, with widths computed here.

    A DataTable left to size its columns itself (on idle, after the rows
    arrive) can keep drawing stale, narrow columns; explicit widths cannot.
    """
    widths = column_widths([label for _, label in columns], [cells for _, cells in rows])
    table.clear(columns=True)
    for (key, label), width in zip(columns, widths):
        table.add_column(label, key=key, width=width)
    for key, cells in rows:
        table.add_row(*cells, key=key)


class PanelScreen(Screen):
    """A screen of the SparkNet panel: the panel's context, its help, and reading files off the UI thread."""

    BINDINGS = [Binding("question_mark,f1", "app.help", "Help", key_display="?")]
    HELP_TOPIC = "runs"  # which of the help screen's glossaries explains this screen

    def __init__(self, context: PanelContext) -> None:
        super().__init__()
        self.context = context
        self._busy: set[str] = set()

    def in_thread(self, key: str, read: Callable[[], Message]) -> None:
        """Run `read` in a worker thread and post the message it returns.

        A call while the previous one under the same key still runs is
        skipped, so a slow disk never piles up threads and one reader
        object is never used by two threads at once.
        """
        if key in self._busy:
            return
        self._busy.add(key)

        def job() -> None:
            try:
                message: Message = read()
            except Exception as e:  # a bug while reading must show as a message, not end the panel
                message = PanelProblem(f"{e.__class__.__name__}: {e}")
            finally:
                self._busy.discard(key)
            self.post_message(message)

        self.run_worker(job, thread=True, group=key, exit_on_error=False)
