"""Live: one run as it trains: loss curve, speed, progress, hardware, events and log."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.reactive import reactive
from textual.widgets import Footer, Header, Static

from engine.formatting import (
    NA,
    fmt_age,
    fmt_count,
    fmt_duration,
    fmt_float,
    fmt_int,
    fmt_percent,
    fmt_perplexity,
    perplexity,
)
from engine.runs.records import MetricRow
from engine.runs.status import State
from sparknet_tui.context import PanelContext
from sparknet_tui.messages import CliCommand, OpenEvaluation, ResumeRun, RunPolled, StopRun
from sparknet_tui.reference_curve import REFERENCE_LABEL, reference_points
from sparknet_tui.screens.common import PanelScreen, bar_text, state_text
from sparknet_tui.screens.confirm import NameScreen
from sparknet_tui.series import log_points, smooth
from sparknet_tui.watch import LOG_LINES, RunView, RunWatcher, config_section
from sparknet_tui.widgets.chart import ChartData, LineChart, Series, legend, spark
from sparknet_tui.widgets.hardware import HardwarePanel, memory_line

EVENT_STYLES = {
    "error": "bold red",
    "warning": "yellow",
    "thermal_pause": "bold yellow",
    "thermal_resume": "green",
    "finished": "bold blue",
    "stopped": "cyan",
    "started": "green",
    "resumed": "green",
}
EVENTS_SHOWN = 6
LOG_SHOWN = 6
LOG_SHOWN_FAILED = 15
VIEWS = ("chart", "events", "log")  # l goes to the next; events and the log then fill the screen
EVENTS_IN_LOG_VIEW = 40


def status_text(view: RunView, now: float) -> Text:
    s = view.status
    text = Text()  # wraps: an error's last words are often its fix
    text.append(view.run_id, style="bold")
    text.append("  ")
    text.append_text(state_text(view.state))
    if s.phase:
        text.append(f"  {s.phase}", style="dim")
    if view.paused:
        text.append(f"  ⏸ PAUSED ({view.paused})", style="bold yellow reverse")
    if view.hot_gpus:
        hottest = max(g.temp_c or 0 for g in view.hot_gpus)
        text.append(f"  ⚠ GPU {hottest:.0f}°C > {view.warn_c:.0f}°C", style="bold red")
    text.append("\n")
    text.append_text(bar_text(s.progress))
    text.append(f"  step {fmt_int(s.number('step'))}/{fmt_int(s.steps)}")
    text.append(f" · {fmt_count(s.number('tokens'))}/{fmt_count(s.number('total_tokens'))} tokens")
    if s.live:
        text.append(" · ETA ")
        text.append(fmt_duration(s.eta_s), style="bold")
    elapsed = view.last_metric.elapsed_s if view.last_metric else None
    text.append(f"\nelapsed {fmt_duration(elapsed) if elapsed is not None else NA}")
    if s.live:
        # the heartbeat: a run that still writes its status is alive, however slow its steps
        text.append(f" · status updated {fmt_age(s.fields.get('updated_at'), now)}", style="dim")
    for problem in view.problems:
        text.append(f"\n{problem}", style="bold red")
    if s.state == State.FAILED:
        error = s.error or "the run failed without a message; see the log below"
        text.append(f"\nerror: {error}", style="bold red")
    if s.state == State.STALLED:
        text.append(f"\nstalled: no progress for {fmt_duration(s.stalled_s)} in phase "
                    f"'{s.phase or 'training'}'; the log below may say why", style="bold yellow")
    if s.fields.get("evaluating"):
        text.append("\nevaluation in progress…", style="bold blue")
    if view.eval is not None:
        text.append("\nevaluation ready: press e", style="bold blue")
    return text


def figures_text(view: RunView) -> Text:
    m = view.last_metric or MetricRow(step=0)
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append("tok/s ")
    text.append(f"{fmt_count(view.tokens_per_s[-1]) if view.tokens_per_s else NA:>6}", style="bold")
    text.append(f" {spark(view.tokens_per_s, 16):<16}", style="green")
    text.append("  MFU ")
    text.append(fmt_percent(view.mfu[-1] * 100, 1) if view.mfu else NA, style="bold")
    text.append(f" {spark(view.mfu, 16)}", style="green")
    text.append("\nloss ")
    text.append(fmt_float(m.loss), style="bold")
    if view.val_points:
        val = view.val_points[-1][1]
        text.append("  val ")
        text.append(fmt_float(val), style="bold yellow")
        text.append(f" (ppl {fmt_perplexity(perplexity(val))})")
    if view.wikitext_points:
        text.append("  WikiText ppl ")
        text.append(fmt_perplexity(view.wikitext_points[-1][1]), style="bold magenta")
    text.append(f"  lr {m.lr:.2e}" if m.lr is not None else "")
    text.append(f"  grad {fmt_float(m.grad_norm, 2)}" if m.grad_norm is not None else "")
    val_ppl = perplexity(view.val_points[-1][1]) if view.val_points else None
    if val_ppl is not None and view.vocab_size and val_ppl > view.vocab_size:
        text.append(f"\nval ppl above the {view.vocab_size:,}-token vocabulary: worse than a uniform guess",
                    style="yellow")
    return text


def events_text(view: RunView, events_shown: int = EVENTS_SHOWN, log_shown: int | None = None) -> Text:
    text = Text()  # wraps: a warning or a log line is read whole
    if events_shown:
        text.append_text(event_lines(view, events_shown))
    if log_shown != 0:
        text.append_text(log_lines(view, log_shown))
    text.rstrip()
    return text


def event_lines(view: RunView, shown: int) -> Text:
    text = Text()
    text.append("events\n", style="bold")
    events = view.events[-shown:]
    if not events:
        text.append("none yet\n", style="dim")
    for ev in events:
        clock = ev.t[11:19] if len(ev.t) >= 19 else "        "
        text.append(f"{clock} ", style="dim")
        text.append(f"{ev.event:<9}", style=EVENT_STYLES.get(ev.event, "bold"))
        text.append(f" {ev.message}\n")
    return text


def log_lines(view: RunView, shown: int | None) -> Text:
    text = Text()
    shown = shown or (LOG_SHOWN_FAILED if view.state == "failed" else LOG_SHOWN)
    text.append("log ", style="bold")
    text.append("(end of train.log)\n", style="dim")
    lines = view.log_tail[-shown:]
    if not lines:
        text.append("empty\n", style="dim")
    for line in lines:
        text.append(line + "\n", style="red" if view.state == "failed" else "dim")
    text.rstrip()
    return text


ZOOMS = (1.0, 0.5, 0.2, 0.05)  # the share of the run the chart shows, newest steps last


def range_test_chart(view: RunView, smoothing: float) -> ChartData:
    """An LR range test's curve: the loss against the rate, on a log scale, with the finder's suggestion."""
    rates = [x for x, _ in view.lr_points]
    series = [Series("loss", view.lr_points, "grey42", spiky=True),
              Series(f"smoothed {smoothing:.2f}", list(zip(rates, smooth([y for _, y in view.lr_points],
                                                                          smoothing))), "bold cyan")]
    found = view.lr_find or {}
    if isinstance(found.get("suggested_lr"), (int, float)) and view.lr_points:
        low = min(y for _, y in view.lr_points)
        series.append(Series(f"suggested {found['suggested_lr']:.2e}", [(found["suggested_lr"], low)],
                             "bold green", markers=True))
    return ChartData(series, x_label="rate", empty_message="waiting for the first step", x_log=True)


def chart_data(view: RunView, smoothing: float, recent: float = 1.0, x_log: bool = False) -> ChartData:
    if str(config_section(view.config, "profile", "schedule").get("decay")) == "range":
        return range_test_chart(view, smoothing)
    steps = [x for x, _ in view.loss_points]
    losses = [y for _, y in view.loss_points]
    series = []
    if smoothing > 0:
        series.append(Series("loss", view.loss_points, "grey42", spiky=True))
        series.append(Series(f"smoothed {smoothing:.2f}", list(zip(steps, smooth(losses, smoothing))), "bold cyan"))
    else:
        series.append(Series("loss", view.loss_points, "bold cyan", spiky=True))
    if view.wikitext_points:
        series.append(Series("WikiText ln(ppl)", log_points(view.wikitext_points), "magenta"))
    if view.val_points:
        series.append(Series("val loss", view.val_points, "bold yellow", markers=True))
    m = view.last_metric
    per_step = m.tokens / m.step if m is not None and m.tokens is not None and m.step else None
    reference = reference_points(str(view.config.get("profile_name") or ""), per_step, steps[-1] if steps else None)
    if len(reference) > 1:
        series.insert(0, Series(REFERENCE_LABEL, reference, "grey30"))
    waiting = "waiting for the first logged step" if view.state in ("preparing", "running") else "no metrics"
    label = "step" if recent >= 1 else f"last {recent:.0%} · step"
    return ChartData(series, x_label=label, empty_message=waiting, x_log=x_log, recent=recent)


class LiveScreen(PanelScreen):
    SUB_TITLE = "Live"
    HELP_TOPIC = "live"

    BINDINGS = [
        Binding("escape", "app.show_runs", "Runs"),
        Binding("s", "stop", "Stop"),
        Binding("r", "resume", "Resume"),
        Binding("e", "evaluation", "Eval"),
        # one footer entry for the pair; the help lists each
        Binding("left_square_bracket", "smoothing(-0.1)", "Smooth", key_display="[ ]", tooltip="less smoothing ([)"),
        Binding("right_square_bracket", "smoothing(0.1)", "Smooth+", key_display="]", show=False,
                tooltip="more smoothing"),
        Binding("z", "zoom", "Zoom", tooltip="zoom to the recent part of the run: all, 50%, 20%, 5%"),
        Binding("x", "log_steps", "Log x", tooltip="steps on a log scale, or back"),
        Binding("l", "next_view", "Events, log", tooltip="the chart, then all events, then the log"),
        Binding("ctrl+s", "save_rate", "Save rate", show=False,
                tooltip="an LR range test: save the profile with its suggested rate as a new profile"),
        Binding("q", "app.quit", "Quit", show=False),
    ]

    smoothing: reactive[float] = reactive(0.6)
    zoom: reactive[int] = reactive(0)  # index into ZOOMS
    x_log: reactive[bool] = reactive(False)
    view_shown: reactive[int] = reactive(0)  # index into VIEWS: the chart and figures, the events, the log

    def __init__(self, context: PanelContext, run_dir: Path) -> None:
        super().__init__(context)
        self.run_dir = Path(run_dir)
        self.watcher = RunWatcher(self.run_dir)
        self.view: RunView | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="live-body"):
            yield Static(id="live-status")
            with Horizontal(id="live-main"):
                with Vertical(id="live-left"):
                    yield Static(id="chart-legend")
                    yield LineChart(id="loss-chart", empty_message="reading the run…")
                    yield Static(id="live-figures")
                with Vertical(id="live-right"):
                    yield HardwarePanel(id="hardware")
                    yield Static(id="live-memory")  # wraps rather than cut: the floor is what a user must read
                    yield Static(id="live-events")
            yield Static(id="live-log")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.sub_title = f"Live · {self.run_dir.name}"
        self.refresh_data()
        self.set_interval(self.context.poll_interval, self.refresh_data)

    def refresh_data(self) -> None:
        self.in_thread("poll", lambda: RunPolled(self.watcher.poll()))

    def on_run_polled(self, message: RunPolled) -> None:
        if message.view == self.view:
            self.show_status()  # nothing new but the heartbeat's age
            return
        self.view = message.view
        self.show()

    def show_status(self) -> None:
        if self.view is not None:
            self.query_one("#live-status", Static).update(status_text(self.view, self.context.clock()))

    def show(self) -> None:
        view = self.view
        if view is None:
            return
        self.show_status()
        data = chart_data(view, self.smoothing, ZOOMS[self.zoom], self.x_log)
        self.query_one("#chart-legend", Static).update(legend(data.series))
        self.query_one(LineChart).data = data
        self.query_one("#live-figures", Static).update(figures_text(view))
        self.query_one(HardwarePanel).show(view)
        self.query_one("#live-memory", Static).update(memory_line(view))
        self.query_one("#live-events", Static).update(events_text(view))
        shown = VIEWS[self.view_shown]
        if shown == "events":
            self.query_one("#live-log", Static).update(events_text(view, EVENTS_IN_LOG_VIEW, 0))
        elif shown == "log":
            self.query_one("#live-log", Static).update(events_text(view, 0, LOG_LINES))

    def watch_smoothing(self) -> None:
        self.show()

    def watch_zoom(self) -> None:
        self.show()

    def watch_x_log(self) -> None:
        self.show()

    def watch_view_shown(self, index: int) -> None:
        self.set_class(index > 0, "-log-view")
        self.show()
        body = self.query_one("#live-body", VerticalScroll)
        # the log is read from its newest line up; the chart and the events from the top
        self.call_after_refresh(body.scroll_end if VIEWS[index] == "log" else body.scroll_home, animate=False)

    def action_zoom(self) -> None:
        self.zoom = (self.zoom + 1) % len(ZOOMS)

    def action_log_steps(self) -> None:
        self.x_log = not self.x_log

    def action_next_view(self) -> None:
        self.view_shown = (self.view_shown + 1) % len(VIEWS)

    def action_smoothing(self, delta: float) -> None:
        self.smoothing = round(min(0.95, max(0.0, self.smoothing + delta)), 2)

    def _state(self) -> str:
        return self.view.state if self.view else "unknown"

    def action_stop(self) -> None:
        self.post_message(StopRun(self.run_dir, self._state()))

    def action_resume(self) -> None:
        self.post_message(ResumeRun(self.run_dir, self._state()))

    def action_evaluation(self) -> None:
        self.post_message(OpenEvaluation(self.run_dir))

    def action_save_rate(self) -> None:
        found = self.view.lr_find if self.view is not None else None
        if not found or found.get("suggested_lr") is None:
            self.notify("Only a finished LR range test with a suggested rate can be saved (sparknet lr-find)",
                        severity="warning")
            return

        def named(name: str | None) -> None:
            if name:
                self.post_message(CliCommand(["lr-find", "--from-run", str(self.run_dir), "--save-as", name]))

        self.app.push_screen(NameScreen(f"Save {found['key']} = {found['suggested_lr']:.3g} as a new profile named:",
                                        "new profile name"), named)
