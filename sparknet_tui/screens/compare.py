"""Compare: two runs side by side: figures, the settings that differ, and both loss curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import Footer, Header, Static

from engine.formatting import NA, fmt_count, fmt_duration, fmt_float, fmt_int, fmt_perplexity, perplexity
from sparknet_tui.context import PanelContext
from sparknet_tui.screens.common import PanelScreen, state_text
from sparknet_tui.watch import RunView, RunWatcher
from sparknet_tui.widgets.chart import ChartData, LineChart, Series, legend

STYLES = ("bold cyan", "bold magenta")


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix.rstrip("."): data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def sources_by_name(mix: Any) -> Any:
    """A mix with its list of sources as a table keyed by each source's name, so differences read per source."""
    if not isinstance(mix, dict) or not isinstance(mix.get("sources"), list):
        return mix
    sources = {}
    for i, source in enumerate(mix["sources"]):
        name = source.get("name") if isinstance(source, dict) else None
        sources[str(name or f"#{i + 1}")] = source
    return {**mix, "sources": sources}


def _one_sided_sources(mix: Any, other: Any) -> Any:
    """The mix with each source the other mix lacks shown as one phrase, so it reads as one line, not one per
    field."""
    if not isinstance(mix, dict) or not isinstance(mix.get("sources"), dict):
        return mix
    theirs = other.get("sources") if isinstance(other, dict) and isinstance(other.get("sources"), dict) else {}
    sources = {name: (source if name in theirs else _source_phrase(source))
               for name, source in mix["sources"].items()}
    return {**mix, "sources": sources}


def _source_phrase(source: Any) -> str:
    weight = source.get("weight") if isinstance(source, dict) else None
    return f"weight {weight}" if weight is not None else "present"


def setting_differences(a: dict, b: dict) -> list[tuple[str, Any, Any]]:
    """Profile and mix settings that differ between two run.toml files, one key each."""
    mix_a, mix_b = sources_by_name(a.get("mix", {})), sources_by_name(b.get("mix", {}))
    only_a, only_b = _one_sided_sources(mix_a, mix_b), _one_sided_sources(mix_b, mix_a)
    fa = flatten({"profile": a.get("profile", {}), "mix": only_a})
    fb = flatten({"profile": b.get("profile", {}), "mix": only_b})
    return [(k, fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]


def final_eval_perplexity(view: RunView) -> str:
    """The run's measured perplexity under the first protocol of its evaluation, and which protocol that is."""
    sections = (view.eval or {}).get("evaluations")
    first = sections[0] if isinstance(sections, list) and sections and isinstance(sections[0], dict) else {}
    results = first.get("results") if isinstance(first.get("results"), list) else []
    for r in results:
        if isinstance(r, dict) and r.get("source") == "measured":
            protocol = first.get("protocol") if isinstance(first.get("protocol"), dict) else {}
            return f"{fmt_perplexity(r.get('perplexity'))} ({protocol.get('name', NA)})"
    return NA


def comparison_table(a: RunView, b: RunView) -> Table:
    table = Table(box=None, show_header=True, header_style="bold", pad_edge=False, expand=False)
    table.add_column("")
    table.add_column(Text("A " + a.run_id, style=STYLES[0]), overflow="fold")
    table.add_column(Text("B " + b.run_id, style=STYLES[1]), overflow="fold")

    def figures(v: RunView) -> list[Text | str]:
        s = v.status
        return [
            state_text(v.state, v.paused),
            str(v.config.get("profile_name", NA)),
            str(v.config.get("mix_name", NA)),
            f"{fmt_int(s.number('step'))}/{fmt_int(s.steps)}",
            f"{fmt_count(s.number('tokens'))}/{fmt_count(s.number('total_tokens'))}",
            fmt_float(v.loss_points[-1][1]) if v.loss_points else NA,
            fmt_float(v.val_points[-1][1]) if v.val_points else NA,
            fmt_perplexity(perplexity(v.val_points[-1][1])) if v.val_points else NA,
            final_eval_perplexity(v),
            fmt_count(v.tokens_per_s[-1]) if v.tokens_per_s else NA,
            fmt_duration(v.last_metric.elapsed_s if v.last_metric else None),
        ]

    labels = ["state", "profile", "mix", "step", "tokens", "loss", "val loss", "val ppl", "eval ppl",
              "tok/s", "elapsed"]
    for label, x, y in zip(labels, figures(a), figures(b)):
        table.add_row(label, x, y)
    return table


def setting_value(value: Any) -> str:
    return NA if value is None else str(value)


def differences_text(a: RunView, b: RunView) -> Text:
    diffs = setting_differences(a.config, b.config)
    text = Text()
    text.append("settings that differ\n", style="bold")
    if not diffs:
        text.append("none: same profile and mix\n", style="dim")
    for key, x, y in diffs[:30]:
        text.append(f"  {key}: ", style="dim")
        text.append(setting_value(x), style=STYLES[0])
        text.append(" → ")
        text.append(setting_value(y) + "\n", style=STYLES[1])
    if len(diffs) > 30:
        text.append(f"  … and {len(diffs) - 30} more\n", style="dim")
    text.rstrip()
    return text


class ComparePolled(Message):
    def __init__(self, a: RunView, b: RunView) -> None:
        super().__init__()
        self.a, self.b = a, b


class CompareScreen(PanelScreen):
    SUB_TITLE = "Compare"
    HELP_TOPIC = "compare"

    BINDINGS = [
        Binding("escape", "app.back", "Back"),
        Binding("q", "app.quit", "Quit", show=False),
    ]

    def __init__(self, context: PanelContext, run_a: Path, run_b: Path) -> None:
        super().__init__(context)
        self.watchers = (RunWatcher(run_a), RunWatcher(run_b))

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="compare-body"):
            yield Static(id="compare-table")
            yield Static(id="compare-legend")
            yield LineChart(id="compare-chart", empty_message="no metrics in either run")
            yield Static(id="compare-diffs")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.refresh_data()
        self.set_interval(self.context.poll_interval * 2, self.refresh_data)

    def refresh_data(self) -> None:
        a, b = self.watchers
        self.in_thread("poll", lambda: ComparePolled(a.poll(), b.poll()))

    def on_compare_polled(self, message: ComparePolled) -> None:
        a, b = message.a, message.b
        self.query_one("#compare-table", Static).update(comparison_table(a, b))
        series = [Series("A loss", a.loss_points, STYLES[0]), Series("B loss", b.loss_points, STYLES[1])]
        if a.val_points:
            series.append(Series("A val", a.val_points, "yellow", markers=True))
        if b.val_points:
            series.append(Series("B val", b.val_points, "green", markers=True))
        data = ChartData(series, empty_message="no metrics in either run")
        self.query_one("#compare-legend", Static).update(legend(series))
        self.query_one(LineChart).data = data
        self.query_one("#compare-diffs", Static).update(differences_text(a, b))
