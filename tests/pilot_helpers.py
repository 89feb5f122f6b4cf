"""Driving the real panel with Textual's Pilot: an app on a fixed clock, waiting for it, reading its widgets."""

from __future__ import annotations

import io

from frozen_runs import FROZEN_NOW
from rich.console import Console
from rich.text import Text
from textual.widgets import DataTable

from sparknet_tui.app import SparkNetApp
from sparknet_tui.screens.new_run import NewRunScreen

POLL = 0.25  # a quarter second: faster polling keeps the app busy, and every key the Pilot presses waits for it


def make_app() -> SparkNetApp:
    return SparkNetApp(clock=lambda: FROZEN_NOW, poll_interval=POLL)


def plain(widget) -> str:
    content = widget.content
    if isinstance(content, Text):
        return content.plain
    if isinstance(content, str):
        return content
    console = Console(width=200, file=io.StringIO(), record=True)
    console.print(content)
    return console.export_text()


async def settle(pilot, app) -> None:
    await pilot.pause()
    await app.workers.wait_for_complete()
    await pilot.pause()


async def wait_until(pilot, app, predicate, timeout: float = 10.0) -> None:
    loops = int(timeout / 0.05)
    for _ in range(loops):
        await settle(pilot, app)
        if predicate():
            return
        await pilot.pause(0.05)
    assert predicate(), "condition not reached in time"


def table_rows(table: DataTable) -> dict[str, list[str]]:
    rows = {}
    for key in table.rows:
        rows[key.value] = [str(c.plain if isinstance(c, Text) else c) for c in table.get_row(key)]
    return rows


async def select_row(pilot, app, run_id: str) -> None:
    table = app.screen.query_one(DataTable)
    keys = [k.value for k in table.rows]
    table.move_cursor(row=keys.index(run_id))
    await settle(pilot, app)


async def open_new_run(pilot, app) -> NewRunScreen:
    await settle(pilot, app)
    await pilot.press("n")
    await wait_until(pilot, app, lambda: isinstance(app.screen, NewRunScreen))
    return app.screen
