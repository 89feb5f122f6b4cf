"""Evaluation: eval.json against GPT-2 and CodeLion 70M, a table per protocol, with sources, notes and deltas."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.widgets import DataTable, Footer, Header, Static

from engine.formatting import (
    CARD_MODELS,
    NA,
    baseline_figure,
    baseline_notes,
    fmt_float,
    fmt_int,
    fmt_perplexity,
    fmt_protocol_title,
    fmt_ratio,
    is_number,
    raw_bytes_note,
    within_two_stderr,
)
from engine.runs.eval_progress import progress_line, read_progress
from engine.runs.lock import EVAL_LOCK_NAME, lock_held
from sparknet_tui.context import PanelContext
from sparknet_tui.evalfile import read_eval
from sparknet_tui.messages import EvalLoaded, EvaluateRun, OpenLive, StopEvaluation
from sparknet_tui.screens.common import PanelScreen, fill_table

# narrow enough for 80 columns; what is longer (notes, a published figure's protocol) is written below, wrapped
EVAL_COLUMNS = [(name, name) for name in ("model", "source", "loss", "perplexity", "bits/byte", "tokens")]
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
    text.append(fmt_protocol_title(protocol) + "\n", style="bold")
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
    return [
        Text(str(result.get("model") or NA), style="bold" if source == "measured" else ""),
        Text(source, style="green" if source == "measured" else "italic dim"),
        fmt_float(result.get("loss"), 4),
        fmt_perplexity(result.get("perplexity")),
        fmt_float(result.get("bits_per_byte"), 3),
        fmt_int(result.get("tokens_scored")),
    ]


def result_notes(result: dict, protocol_name: Any) -> list[str]:
    """What a row's cells cannot say: its own protocol when not the table's, a tokenizer that differs, notes."""
    notes = []
    if result.get("protocol") and result.get("protocol") != protocol_name:
        notes.append(f"protocol: {result['protocol']}")
    if result.get("tokenizer_matches") is False:
        notes.append("tokenizer differs: per-token figures do not compare")
    notes += [str(n) for n in (result.get("deviation"), raw_bytes_note(result), result.get("note")) if n]
    return notes


def what_is_normal(result: dict) -> str | None:
    """A plain word where a measured figure would surprise."""
    ppl, vocab = result.get("perplexity"), result.get("vocab_size")
    if result.get("source") == "measured" and is_number(ppl) and is_number(vocab) and ppl > vocab:
        return (f"perplexity {fmt_perplexity(ppl)} is above the vocabulary size ({vocab:,}): the model still does "
                f"worse than a uniform guess over its tokens; expected after a short demo run, a sign of a broken "
                f"pipeline after a long one")
    return None


def section_notes(section: dict) -> Text:
    """Below a protocol's table: each row's notes, the deltas, the section's own note."""
    text = Text()
    results = section.get("results") if isinstance(section.get("results"), list) else []
    name = (section.get("protocol") or {}).get("name") if isinstance(section.get("protocol"), dict) else None
    for result in (r for r in results if isinstance(r, dict)):
        normal = what_is_normal(result)
        if normal:
            text.append(f"{normal}\n", style="yellow")
        notes = result_notes(result, name)
        if notes:
            text.append(f"{result.get('model') or NA}: ", style="bold")
            text.append("; ".join(notes) + "\n", style="dim")
    text.append_text(deltas_text(section.get("deltas")))
    if section.get("note"):
        text.append(f"\n{section['note']}" if text.plain.strip() else str(section["note"]), style="dim")
    text.rstrip()
    return text


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
    items = deltas if isinstance(deltas, list) else []
    if items:
        text.append("deltas\n", style="bold")
    for delta in items:
        text.append("  ")
        text.append_text(delta_text(delta))
        text.append("\n")
    text.rstrip()
    return text


# short headers, so the table fits 80 columns; the notes under it name the models and the source
BENCHMARK_COLUMNS = [(name, name) for name in ("task", "shots", "this run", "± se", "CodeLion", "GPT-2", "chance")]


def benchmark_cells(row: dict, benchmarks: dict) -> list[Text | str]:
    """One task: this run's score, the card's two models' (measured here, or published: italic), each marked ≈
    when within two of this run's standard errors."""
    cells: list[Text | str] = [Text(str(row.get("task") or NA), style="bold"), fmt_int(row.get("num_fewshot")),
                               Text(fmt_float(row.get("value"), 2), style="green"), fmt_float(row.get("stderr"), 2)]
    for name in CARD_MODELS:
        other, source = baseline_figure(benchmarks, name, row.get("task"))
        near = within_two_stderr(row.get("value"), row.get("stderr"), other)
        cells.append(Text(fmt_float(other, 2) + (" ≈" if near else ""),
                          style="green" if source == "measured" else "italic dim"))
    cells.append(fmt_float(row.get("chance"), 2) if is_number(row.get("chance")) else "varies")
    return cells


def benchmarks_notes(benchmarks: dict) -> Text:
    text = Text()
    rows = [r for r in benchmarks.get("tasks") or [] if isinstance(r, dict)]
    text.append(f"{benchmarks.get('harness') or 'lm-eval'}; ", style="dim")
    text.append("; ".join(f"{r.get('task')}: {r.get('metric')}, {fmt_int(r.get('examples'))} examples"
                          for r in rows), style="dim")
    sources = {p.get("source") for p in benchmarks.get("published") or [] if isinstance(p, dict)}
    if sources:
        text.append(f"\nCodeLion GPT-2 70M and GPT-2 (124M), published: {', '.join(sorted(s for s in sources if s))}; "
                    "± se is this run's standard error; ≈ marks a figure within two of them", style="dim")
    for note in baseline_notes(benchmarks):
        text.append(f"\n{note}", style="dim")
    if benchmarks.get("limit"):
        text.append(f"\ncapped at {benchmarks['limit']} examples per task: a quick look", style="yellow")
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
    HELP_TOPIC = "evaluation"

    BINDINGS = [
        Binding("escape", "app.back", "Back"),
        Binding("l", "live", "Live", tooltip="the run's Live screen"),
        Binding("v", "evaluate", "Evaluate", tooltip="run `sparknet eval` on the run now"),
        Binding("x", "stop_evaluation", "Stop eval", tooltip="stop the evaluation running"),
        Binding("q", "app.quit", "Quit", show=False),
    ]

    def __init__(self, context: PanelContext, run_dir: Path) -> None:
        super().__init__(context)
        self.run_dir = Path(run_dir)
        self.data: dict | None = None
        self.problem: str | None = None
        self.progress: dict | None = None
        self.loaded = False

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="eval-body"):
            yield Static(id="eval-heading")
            yield Vertical(id="eval-sections")
            yield Static(id="eval-samples")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.sub_title = f"Evaluation · {self.run_dir.name}"
        self.refresh_data()
        self.set_interval(self.context.poll_interval * 2, self.refresh_data)

    def refresh_data(self) -> None:
        self.in_thread("eval", lambda: EvalLoaded(self.run_dir, *read_eval(self.run_dir),
                                                  progress=read_progress(self.run_dir)))

    async def on_eval_loaded(self, message: EvalLoaded) -> None:
        if self.loaded and (message.data, message.problem, message.progress) == (self.data, self.problem,
                                                                                 self.progress):
            return
        self.loaded, self.data, self.problem, self.progress = True, message.data, message.problem, message.progress
        await self.show()

    def sections(self) -> list[dict]:
        found = (self.data or {}).get("evaluations")
        return [s for s in found if isinstance(s, dict)] if isinstance(found, list) else []

    async def show(self) -> None:
        heading = Text()
        heading.append(self.run_dir.name, style="bold")
        data = self.data or {}
        if self.progress is not None:
            heading.append(f"\nevaluating: {progress_line(self.progress)} · x stops it", style="bold blue")
        if self.run_dir in self.context.evaluating or lock_held(self.run_dir, EVAL_LOCK_NAME):
            heading.append("\nevaluation in progress: the tables below update when it ends", style="bold blue")
        if self.problem:
            heading.append(f"\n{self.problem}", style="bold red")
        elif self.data is None:
            heading.append("\nNo evaluation yet: a finished run writes eval.json; press v to run "
                           "`sparknet eval` now.", style="dim")
        else:
            if data.get("final") is False:
                heading.append(f"\ncheckpoint of step {data.get('checkpoint_step')}, not the final model",
                               style="bold yellow")
            heading.append("\nmeasured = computed here on this machine; published = reported by the model's "
                           "authors or earlier runs, not re-measured", style="dim")
        self.query_one("#eval-heading", Static).update(heading)
        await self.show_sections()
        self.query_one("#eval-samples", Static).update(samples_text(data.get("samples")) if self.data else "")

    async def show_sections(self) -> None:
        """A heading, a table and the notes below it for each protocol of eval.json. The old widgets are gone
        before the new ones, which reuse their ids, are mounted."""
        box = self.query_one("#eval-sections", Vertical)
        await box.remove_children()
        widgets = []
        for i, section in enumerate(self.sections()):
            results = section.get("results") if isinstance(section.get("results"), list) else []
            table = DataTable(id=f"eval-table-{i}", classes="eval-table", cursor_type="row", zebra_stripes=True)
            fill_table(table, EVAL_COLUMNS, [(str(j), result_cells(r)) for j, r in enumerate(results)
                                             if isinstance(r, dict)])
            widgets += [Static(protocol_text(section.get("protocol")), classes="eval-protocol"), table,
                        Static(section_notes(section), id=f"eval-notes-{i}", classes="eval-notes")]
        benchmarks = (self.data or {}).get("benchmarks")
        if isinstance(benchmarks, dict) and benchmarks.get("tasks"):
            table = DataTable(id="eval-benchmarks", classes="eval-table", cursor_type="row", zebra_stripes=True)
            fill_table(table, BENCHMARK_COLUMNS, [(str(i), benchmark_cells(r, benchmarks))
                                                  for i, r in enumerate(benchmarks["tasks"]) if isinstance(r, dict)])
            widgets += [Static(Text("downstream benchmarks", style="bold"), classes="eval-protocol"), table,
                        Static(benchmarks_notes(benchmarks), id="eval-benchmark-notes", classes="eval-notes")]
        if widgets:
            await box.mount_all(widgets)

    def action_live(self) -> None:
        self.post_message(OpenLive(self.run_dir))

    def action_evaluate(self) -> None:
        self.post_message(EvaluateRun(self.run_dir))

    def action_stop_evaluation(self) -> None:
        self.post_message(StopEvaluation(self.run_dir))
