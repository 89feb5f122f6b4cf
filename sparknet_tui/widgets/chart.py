"""A braille line chart and one-line sparklines, drawn as rich Text (no plotting dependency)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from engine.formatting import is_number

# Braille dot bits by (x in 0..1, y in 0..3), y counted from the top of the cell.
_DOTS = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))
_BARS = "▁▂▃▄▅▆▇█"
GUTTER = 8  # columns for the y-axis labels


@dataclass
class Series:
    label: str
    points: list[tuple[float, float]]
    style: str
    markers: bool = False  # draw each point as a dot instead of joining them
    spiky: bool = False  # raw, noisy values: its rare extremes do not stretch the y axis (they are clipped)


@dataclass
class ChartData:
    series: list[Series] = field(default_factory=list)
    x_label: str = "step"
    empty_message: str = "no data yet"
    x_log: bool = False  # the x axis on a log scale (labels stay in the x's own units)
    recent: float = 1.0  # the share of the x range shown, ending at the newest point; its own y range


def _quantile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))]


def visible(data: ChartData) -> list[Series]:
    """The series cut to the recent share of the x range the chart shows."""
    xs = [x for s in data.series for x, y in s.points if is_number(x) and is_number(y)]
    if not xs or data.recent >= 1:
        return data.series
    lo, hi = min(xs), max(xs)
    start = hi - (hi - lo) * data.recent
    return [Series(s.label, [(x, y) for x, y in s.points if is_number(x) and x >= start], s.style, s.markers,
                   s.spiky) for s in data.series]


def y_span(series: list[Series]) -> tuple[float, float] | None:
    """The y values the axis must hold: every point, except a noisy series' rarest 1% at either end."""
    lows, highs = [], []
    for s in series:
        ys = sorted(y for x, y in s.points if is_number(x) and is_number(y))
        if not ys:
            continue
        cut = 0.01 if s.spiky and len(ys) >= 50 else 0.0
        lows.append(_quantile(ys, cut))
        highs.append(_quantile(ys, 1 - cut))
    return (min(lows), max(highs)) if lows else None


def spark(values: list[float], width: int) -> str:
    """The last `width` values as block characters scaled between their min and max."""
    values = [v for v in values if is_number(v)][-width:] if width > 0 else []
    if not values:
        return ""
    lo, hi = min(values), max(values)
    span = hi - lo
    if span <= 0:
        return _BARS[len(_BARS) // 2 - 1] * len(values)
    return "".join(_BARS[min(len(_BARS) - 1, int((v - lo) / span * len(_BARS)))] for v in values)


def _fmt_tick(value: float) -> str:
    if abs(value) >= 10_000:
        return f"{value:.3g}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _fmt_x(value: float) -> str:
    """Steps and tokens as whole numbers; rates, below one, in scientific notation."""
    return f"{value:,.0f}" if abs(value) >= 1 or value == 0 else f"{value:.1e}"


def _ranges(points: list[tuple[float, float]], y_lo: float, y_hi: float) -> tuple[float, float, float, float]:
    """x range of the points and the given y range, never empty, with 5% air above and below the curve."""
    xs = [p[0] for p in points]
    x_lo, x_hi = min(xs), max(xs)
    if x_hi <= x_lo:
        x_lo, x_hi = x_lo - 1, x_hi + 1
    if y_hi <= y_lo:
        y_lo, y_hi = y_lo - 1, y_hi + 1
    pad = (y_hi - y_lo) * 0.05
    return x_lo, x_hi, y_lo - pad, y_hi + pad


def render_chart(data: ChartData, width: int, height: int) -> Text:
    """Draw the series into width x height cells: y labels on the left, x range on the last line."""
    shown = visible(data)
    to_x = (lambda x: math.log10(max(x, 1e-30))) if data.x_log else (lambda x: x)
    points = [(to_x(x), y) for s in shown for x, y in s.points if is_number(x) and is_number(y)]
    span = y_span(shown)
    if width < GUTTER + 4 or height < 3 or not points or span is None:
        return Text(data.empty_message if not points else "", style="dim", justify="center")
    plot_w, plot_h = width - GUTTER, height - 1
    px_w, px_h = plot_w * 2, plot_h * 4
    x_lo, x_hi, y_lo, y_hi = _ranges(points, *span)

    cells = [[0] * plot_w for _ in range(plot_h)]
    styles: list[list[str | None]] = [[None] * plot_w for _ in range(plot_h)]

    def to_px(x: float, y: float) -> tuple[int, int]:
        px = round((x - x_lo) / (x_hi - x_lo) * (px_w - 1))
        py = round((y_hi - y) / (y_hi - y_lo) * (px_h - 1))
        return px, py

    def dot(px: int, py: int, style: str) -> None:
        if 0 <= px < px_w and 0 <= py < px_h:
            row, col = py // 4, px // 2
            cells[row][col] |= _DOTS[px % 2][py % 4]
            styles[row][col] = style

    for s in shown:
        pts = [to_px(to_x(x), y) for x, y in s.points if is_number(x) and is_number(y)]
        if s.markers:
            for px, py in pts:
                for dx in (0, 1):
                    for dy in (0, 1):
                        dot(px - (px % 2) + dx, py + dy - 1 if py > 0 else py + dy, s.style)
            continue
        if len(pts) == 1:
            dot(*pts[0], s.style)
        for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
            steps = max(abs(x1 - x0), abs(y1 - y0), 1)
            for i in range(steps + 1):
                dot(round(x0 + (x1 - x0) * i / steps), round(y0 + (y1 - y0) * i / steps), s.style)

    x_ends = (10 ** x_lo, 10 ** x_hi) if data.x_log else (x_lo, x_hi)
    return _compose(data, cells, styles, x_ends, (y_lo, y_hi))


def _compose(data: ChartData, cells: list[list[int]], styles: list[list[str | None]], x_range: tuple[float, float],
             y_range: tuple[float, float]) -> Text:
    """The drawn cells as text, with the y axis's labels on the left and the x range on the last line."""
    (x_lo, x_hi), (y_lo, y_hi) = x_range, y_range
    plot_h, plot_w = len(cells), len(cells[0])
    ticks = {0: y_hi, plot_h - 1: y_lo}
    if plot_h >= 5:
        ticks[(plot_h - 1) // 2] = (y_hi + y_lo) / 2
    text = Text(no_wrap=True, overflow="crop")
    for row in range(plot_h):
        label = _fmt_tick(ticks[row]) if row in ticks else ""
        text.append(f"{label:>{GUTTER - 2}} ", style="dim")
        text.append("┤" if row in ticks else "│", style="dim")
        for col in range(plot_w):
            bits = cells[row][col]
            text.append(chr(0x2800 + bits) if bits else " ", style=styles[row][col] or "")
        text.append("\n")
    scale = " (log)" if data.x_log else ""
    left, right = f"{data.x_label}{scale} {_fmt_x(x_lo)}", _fmt_x(x_hi)
    gap = max(1, plot_w - len(left) - len(right))
    text.append(" " * GUTTER + left + " " * gap + right, style="dim")
    return text


def legend(series: list[Series]) -> Text:
    text = Text(no_wrap=True, overflow="ellipsis")
    for i, s in enumerate(series):
        if i:
            text.append("  ")
        text.append("● " if s.markers else "━ ", style=s.style)
        text.append(s.label)
    return text


class LineChart(Widget):
    """Redraws only when given new data or resized."""

    DEFAULT_CSS = """
    LineChart { height: 10; }
    """

    data: reactive[ChartData] = reactive(ChartData, always_update=True)

    def render(self) -> Text:
        return render_chart(self.data, self.size.width, self.size.height)

    def __init__(self, *, id: str | None = None, classes: str | None = None, empty_message: str = "no data yet"):
        super().__init__(id=id, classes=classes)
        self.set_reactive(LineChart.data, ChartData(empty_message=empty_message))
