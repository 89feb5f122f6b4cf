"""The loss chart for long runs (zoom, log steps, smoothing a spike cannot pull), Compare's settings, Runs' columns."""

from __future__ import annotations

import math
from types import SimpleNamespace

from engine.runs.records import MetricRow
from sparknet_tui.screens.compare import differences_text
from sparknet_tui.screens.live import chart_data
from sparknet_tui.screens.runs import COLUMNS, fitting_columns
from sparknet_tui.series import smooth
from sparknet_tui.widgets.chart import ChartData, Series, render_chart, y_span


def y_labels(text: str) -> list[float]:
    return [float(line.split("┤")[0]) for line in text.splitlines() if "┤" in line]


def long_run_loss(steps: int = 2000) -> list[tuple[float, float]]:
    """11 -> 5 in the first tenth, then 3.2 -> 2.9 over the rest: a 1B-token run's shape."""
    points = []
    for step in range(1, steps + 1):
        early = 5 + 6 * math.exp(-step / 40)
        late = 3.2 - 0.3 * (step / steps)
        points.append((float(step), max(late, early) if step < steps // 10 else late))
    return points


def test_a_single_spike_does_not_pull_the_smoothed_curve():
    values = [3.0] * 100
    values[60] = 50.0
    smoothed = smooth(values, 0.9)
    assert max(smoothed) < 3.01
    assert smooth(values, 0) == values  # no smoothing shows the raw values, spike included
    # a real change of level does come through
    shifted = smooth([3.0] * 50 + [2.0] * 50, 0.6)
    assert shifted[-1] < 2.01


def test_a_rare_spike_of_the_raw_loss_does_not_stretch_the_y_axis():
    points = [(float(i), 3.0 + 0.01 * (i % 7)) for i in range(1, 500)]
    points[300] = (301.0, 40.0)
    lo, hi = y_span([Series("loss", points, "cyan", spiky=True)])
    assert hi < 3.1
    lo, hi = y_span([Series("val", points, "yellow")])  # a series that is not noisy keeps every point
    assert hi == 40.0


def test_zooming_to_the_recent_steps_gives_them_their_own_y_range():
    points = long_run_loss()
    whole = y_labels(render_chart(ChartData([Series("loss", points, "cyan")]), 60, 10).plain)
    assert max(whole) > 10
    recent = render_chart(ChartData([Series("loss", points, "cyan")], recent=0.2), 60, 10).plain
    labels = y_labels(recent)
    assert 2.8 < min(labels) and max(labels) < 3.0
    assert "step 1,601" in recent.splitlines()[-1]  # the x axis starts in the last fifth of the steps


def test_log_steps_keep_the_axis_labels_in_steps():
    text = render_chart(ChartData([Series("loss", long_run_loss(), "cyan")], x_log=True), 60, 10).plain
    last = text.splitlines()[-1]
    assert "(log)" in last and "1" in last and "2,000" in last


def test_the_reference_curve_follows_the_zoom():
    # the parts of a run's view the chart reads
    view = SimpleNamespace(state="running", config={"profile_name": "codelion-70m"}, loss_points=long_run_loss(130),
                           val_points=[], wikitext_points=[], last_metric=MetricRow(step=130, tokens=130 * 122_880))
    data = chart_data(view, 0.6, recent=0.2)
    reference = next(s for s in data.series if "reference" in s.label)
    assert len(reference.points) > 2  # the whole reference is in the data; the chart cuts every series alike
    assert data.recent == 0.2 and "last 20%" in data.x_label


def test_compare_lists_each_differing_setting_as_one_line():
    a = {"profile": {"optim": {"lr": 0.001}}, "mix": {"name": "m", "sources": [
        {"name": "stories", "weight": 0.8, "hf": "", "path": "a.jsonl"},
        {"name": "towns", "weight": 0.2, "path": "b.jsonl"}]}}
    b = {"profile": {"optim": {"lr": 0.002}}, "mix": {"name": "m", "sources": [
        {"name": "stories", "weight": 0.6, "hf": "", "path": "a.jsonl"},
        {"name": "wiki", "weight": 0.4, "path": "c.jsonl"}]}}
    lines = differences_text(SimpleNamespace(config=a), SimpleNamespace(config=b)).plain.splitlines()
    assert lines[1:] == ["  mix.sources.stories.weight: 0.8 → 0.6", "  mix.sources.towns: weight 0.2 → N/A",
                         "  mix.sources.wiki: N/A → weight 0.4", "  profile.optim.lr: 0.001 → 0.002"]


def test_runs_keeps_the_columns_that_fit():
    widths = [len(label) + 4 for _, label in COLUMNS]
    every = sum(w + 2 for w in widths)
    assert fitting_columns(widths, every) == list(range(len(COLUMNS)))
    kept = [COLUMNS[i][0] for i in fitting_columns(widths, 80)]
    assert kept[:3] == ["run", "state", "progress"] and "mix" not in kept and "profile" not in kept
    assert sum(widths[i] + 2 for i in fitting_columns(widths, 80)) <= 80


def test_an_lr_range_test_is_drawn_against_the_rate_with_its_suggestion():
    rates = [1e-5 * 1.2 ** i for i in range(60)]
    view = SimpleNamespace(state="finished", config={"profile": {"schedule": {"decay": "range"}}},
                           lr_points=[(r, 7 - math.log10(r) if r < 1e-2 else 7 + 10 * r) for r in rates],
                           lr_find={"suggested_lr": 1e-3}, loss_points=[], val_points=[], wikitext_points=[],
                           last_metric=None)
    data = chart_data(view, 0.6)
    assert data.x_log and data.x_label == "rate"
    assert any(s.label == "suggested 1.00e-03" and s.markers for s in data.series)
    last = render_chart(data, 60, 10).plain.splitlines()[-1]
    assert "rate (log) 1.0e-05" in last
