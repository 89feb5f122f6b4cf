"""Plain-text formatting of run figures for the CLI and the panel. A value that was not reported is N/A, never 0."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

NA = "N/A"


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def fmt_count(value: Any) -> str:
    """12_345_678 -> '12.3M'."""
    if not is_number(value):
        return NA
    v = float(value)
    for limit, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= limit * 0.9995:  # 999,600 rounds to 1.00M, never to 1000k
            return f"{v / limit:.3g}{suffix}" if abs(v) / limit < 100 else f"{v / limit:.0f}{suffix}"
    return f"{v:.0f}"


def fmt_int(value: Any) -> str:
    return f"{int(value):,}" if is_number(value) else NA


def fmt_steps(value: Any) -> str:
    """A number of steps with its noun: '1 step', '147 steps'."""
    return f"{fmt_int(value)} step" + ("" if value == 1 else "s")


def fmt_float(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if is_number(value) else NA


def fmt_percent(value: Any, digits: int = 0) -> str:
    return f"{value:.{digits}f}%" if is_number(value) else NA


def fmt_perplexity(value: Any) -> str:
    if not is_number(value):
        return NA
    return f"{value:,.2f}" if value < 10_000 else f"{value:,.0f}"


def perplexity(loss: Any) -> float | None:
    """exp(loss) for a finite loss; None when there is none or it would overflow."""
    if not is_number(loss) or loss > 700:
        return None
    return math.exp(loss)


def fmt_duration(seconds: Any) -> str:
    """3725 -> '1h02m'; 59 -> '59s'."""
    if not is_number(seconds) or seconds < 0:
        return NA
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    if h < 48:
        return f"{h}h{m:02d}m"
    d, h = divmod(h, 24)
    return f"{d}d{h:02d}h"


def fmt_bytes(value: Any) -> str:
    if not is_number(value):
        return NA
    v = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(v) < 1024 or unit == "TiB":
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:,.1f} {unit}"
        v /= 1024
    return NA  # unreachable


def parse_time(value: Any) -> float | None:
    """UTC ISO-8601 text or epoch seconds -> epoch seconds; None when unreadable."""
    if is_number(value):
        return float(value)
    if not isinstance(value, str) or not value:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def fmt_ratio(value: Any) -> str:
    """A ratio of two figures, e.g. two perplexities: ×1.51, ×17.5, ×1,750; never in exponent notation."""
    if not is_number(value):
        return NA
    r = float(value)
    return f"×{r:,.0f}" if r >= 100 else f"×{r:.1f}" if r >= 10 else f"×{r:.2f}"


def fmt_age(then: Any, now: float) -> str:
    """How long ago, from an injected clock so screens render the same for the same files."""
    t = parse_time(then)
    if t is None:
        return NA
    return fmt_duration(max(0.0, now - t)) + " ago"


def fmt_protocol_title(protocol: Any) -> str:
    """What an evaluation section scored: 'WikiText-2 (standard protocol, test split)', or a mix's held-out text."""
    if not isinstance(protocol, dict):
        return "evaluation"
    if protocol.get("name") == "held-out":
        return f"held-out text of mix '{protocol.get('mix')}' (held-out protocol)"
    return f"WikiText-2 ({protocol.get('name')} protocol, {protocol.get('split')} split)"


def raw_bytes_note(result: dict) -> str | None:
    """The standard protocol's bits per byte over the split's own file, where the whole split was scored."""
    bpb, n = result.get("bits_per_raw_byte"), result.get("raw_bytes")
    if not is_number(bpb) or not is_number(n):
        return None
    return f"bits per byte of the raw file: {bpb:.4f} (its {n:,} bytes; the blank lines joining the rows not counted)"


CARD_MODELS = ("CodeLion GPT-2 70M", "GPT-2 (124M)")


def _baselines(benchmarks: dict) -> dict:
    """eval.json's benchmarks.baselines: per card model, how it was measured here (empty where it was not)."""
    baselines = benchmarks.get("baselines")
    return baselines if isinstance(baselines, dict) else {}


def baseline_figure(benchmarks: dict, name: str, task: Any) -> tuple[Any, str]:
    """A card model's score on a task: measured here when it was (eval.json's benchmarks.baselines), else the
    card's published one; and which of the two it is."""
    entry = _baselines(benchmarks).get(name)
    entry = entry if isinstance(entry, dict) else {}
    if entry.get("source") == "measured" and isinstance(entry.get("tasks"), dict):
        row = entry["tasks"].get(task)
        return (row.get("value") if isinstance(row, dict) else None), "measured"
    for p in benchmarks.get("published") or []:
        if isinstance(p, dict) and p.get("task") == task:
            return p.get(name), "published"
    return None, "published"


def baseline_notes(benchmarks: dict) -> list[str]:
    """How each card model's column came to be, where it was asked to be measured."""
    notes = []
    for name, entry in _baselines(benchmarks).items():
        if isinstance(entry, dict) and entry.get("source") == "measured":
            notes.append(f"{name}: measured here, from {entry.get('path')}")
        elif isinstance(entry, dict):
            notes.append(f"{name}: not measured ({entry.get('reason')}); the card's published figures")
    return notes


def within_two_stderr(value: Any, stderr: Any, other: Any) -> bool:
    """Whether `other` lies within two standard errors of a measured `value` (False when a figure is missing)."""
    return is_number(value) and is_number(stderr) and is_number(other) and abs(value - other) <= 2 * stderr


def terminal_console():
    """A rich Console of the terminal's width; where there is none (a pipe, a log file), COLUMNS when set, else
    160 columns, since 80 would squeeze the tables of a log file for nothing."""
    import os

    from rich.console import Console

    console = Console()
    if console.is_terminal:
        return console
    columns = os.environ.get("COLUMNS", "")
    return Console(width=int(columns) if columns.isdigit() and int(columns) > 0 else 160)
