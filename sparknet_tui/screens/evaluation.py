"""Evaluation: eval.json against GPT-2 and CodeLion 70M, with protocols, sources, deltas and samples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Footer, Header, Static

from engine.runlock import EVAL_LOCK_NAME, lock_held
from engine.formatting import NA, fmt_float, fmt_int, fmt_perplexity, fmt_ratio, is_number
from sparknet_tui.context import PanelContext
from sparknet_tui.messages import EvalLoaded, EvaluateRun, OpenLive
from sparknet_tui.screens.common import PanelScreen, fill_table
from sparknet_tui.evalfile import read_eval

EVAL_COLUMNS = [(name, name) for name in
                ("model", "source", "loss", "perplexity", "bits/byte", "tokens", "protocol", "note")]
# shown on their own (description) or said by the description already (joined_with)
PROTOCOL_KEYS_LEFT_OUT = ("description", "joined_with")


def fmt_value(value: Any) -> str:
    if value is None:
        return NA
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt_value(v) for v in value)
    text = str(value)
    return repr(text) if any(c in text for c in "\n\r\t") else text


def protocol_text(protocol: Any) -> Text:
    text = Text()
    text.append("protocol  ", style="bold")
    if isinstance(protocol, dict):
        text.append(" · ".join(f"{k} {fmt_value(v)}" for k, v in protocol.items()
                               if v is not None and v != "" and k not in PROTOCOL_KEYS_LEFT_OUT))
        if protocol.get("description"):
            text.append(f"\n{protocol['description']}", style="dim")
    elif protocol:
        text.append(fmt_value(protocol))
    else:
        text.append(NA, style="dim")
    return text


def result_cells(result: dict) -> list[Text | str]:
    source = str(result.get("source") or NA)
    notes = [str(n) for n in (result.get("deviation"), result.get("note")) if n]
    if result.get("tokenizer_matches") is False:
        notes.insert(0, "tokenizer differs: per-token figures do not compare")
    note = "; ".join(notes)
    return [
        Text(str(result.get("model") or NA), style="bold" if source == "measured" else ""),
        Text(source, style="green" if source == "measured" else "italic dim"),
        fmt_float(result.get("loss"), 4),
        fmt_perplexity(result.get("perplexity")),
        fmt_float(result.get("bits_per_byte"), 3),
        fmt_int(result.get("tokens_scored")),
        fmt_value(result.get("protocol")),
        note,
    ]


def delta_text(delta: Any) -> Text:
    """'vs GPT-2 (published): loss +0.41 · perplexity ×1.51 · bits/byte +0.10  comparable: approximate; note'."""
    text = Text()
    if not isinstance(delta, dict):
        return Text(fmt_value(delta))
    text.append(f"vs {delta.get('against', '?')}", style="bold")
    text.append(f" ({delta.get('source', '?')}): ", style="dim")
    parts = []
    if is_number(delta.get("loss_delta")):
        parts.append(f"loss {delta['loss_delta']:+.4f}")
    if is_number(delta.get("perplexity_ratio")):
        parts.append(f"perplexity {fmt_ratio(delta['perplexity_ratio'])}")
    if is_number(delta.get("bits_per_byte_delta")):
        parts.append(f"bits/byte {delta['bits_per_byte_delta']:+.4f}")
    text.append(" · ".join(parts) or "no figure to compare")
    comparable = delta.get("comparable")
    if comparable:
        style = {"yes": "green", "approximate": "yellow"}.get(str(comparable), "red")
        text.append("  comparable: ", style="dim")
        text.append(str(comparable), style=style)
    if delta.get("note"):
        text.append(f"; {delta['note']}", style="dim")
    return text


def deltas_text(deltas: Any) -> Text:
    text = Text()
    text.append("deltas\n", style="bold")
    items = deltas if isinstance(deltas, list) else []
    if not items:
        text.append("none\n", style="dim")
    for delta in items:
        text.append("  ")
        text.append_text(delta_text(delta))
        text.append("\n")
    text.rstrip()
    return text


def samples_text(samples: Any) -> Text:
    text = Text()
    text.append("samples\n", style="bold")
    items = samples if isinstance(samples, list) else []
    if not items:
        text.append("none\n", style="dim")
    for sample in items:
        if not isinstance(sample, dict):
            continue
        text.append(f"  {sample.get('prompt', '')}", style="bold cyan")
        # one line per sample: the model's own line breaks show as ⏎
        text.append(f"{str(sample.get('continuation', '')).replace(chr(10), ' ⏎ ')}\n")
    text.rstrip()
    return text


class EvaluationScreen(PanelScreen):
    SUB_TITLE = "Evaluation"

    BINDINGS = [
        Binding("escape", "app.back", "Back"),
        Binding("l", "live", "Live"),
        Binding("v", "evaluate", "Evaluate"),
        Binding("q", "app.quit", "Quit"),
    ]

    def __init__(self, context: PanelContext, run_dir: Path) -> None:
        super().__init__(context)
        self.run_dir = Path(run_dir)
        self.data: dict | None = None
        self.problem: str | None = None
        self.loaded = False

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="eval-body"):
            yield Static(id="eval-heading")
            yield DataTable(id="eval-table", cursor_type="row", zebra_stripes=True)
            yield Static(id="eval-deltas")
            yield Static(id="eval-samples")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.sub_title = f"Evaluation · {self.run_dir.name}"
        self.refresh_data()
        self.set_interval(self.context.poll_interval * 2, self.refresh_data)

    def refresh_data(self) -> None:
        self.in_thread("eval", lambda: EvalLoaded(self.run_dir, *read_eval(self.run_dir)))

    def on_eval_loaded(self, message: EvalLoaded) -> None:
        if self.loaded and message.data == self.data and message.problem == self.problem:
            return
        self.loaded, self.data, self.problem = True, message.data, message.problem
        self.show()

    def show(self) -> None:
        heading = Text()
        heading.append(self.run_dir.name, style="bold")
        data = self.data or {}
        table = self.query_one(DataTable)
        if self.run_dir in self.context.evaluating or lock_held(self.run_dir, EVAL_LOCK_NAME):
            heading.append("\nevaluation in progress: the table below updates when it ends", style="bold blue")
        if self.problem:
            heading.append(f"\n{self.problem}", style="bold red")
        elif self.data is None:
            heading.append("\nNo evaluation yet: a finished run writes eval.json; press v to run "
                           "`sparknet eval` now.", style="dim")
        else:
            heading.append("\n")
            if data.get("final") is False:
                heading.append(f"checkpoint of step {data.get('checkpoint_step')}, not the final model\n",
                               style="bold yellow")
            heading.append_text(protocol_text(data.get("protocol")))
            heading.append("\nmeasured = computed here on this machine; published = reported by the model's "
                           "authors or earlier runs, not re-measured", style="dim")
        self.query_one("#eval-heading", Static).update(heading)
        results = data.get("results") if isinstance(data.get("results"), list) else []
        rows = [(str(i), result_cells(r)) for i, r in enumerate(results) if isinstance(r, dict)]
        fill_table(table, EVAL_COLUMNS, rows)
        table.display = bool(rows)
        self.query_one("#eval-deltas", Static).update(deltas_text(data.get("deltas")) if self.data else "")
        self.query_one("#eval-samples", Static).update(samples_text(data.get("samples")) if self.data else "")

    def action_live(self) -> None:
        self.post_message(OpenLive(self.run_dir))

    def action_evaluate(self) -> None:
        self.post_message(EvaluateRun(self.run_dir))
