"""The evaluation as the terminal shows it: a table per protocol, the notes, the deltas, the samples."""

from __future__ import annotations

from pathlib import Path

from engine.formatting import (
    CARD_MODELS,
    baseline_figure,
    baseline_notes,
    fmt_protocol_title,
    fmt_ratio,
    raw_bytes_note,
    within_two_stderr,
)


def _num(value, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def delta_line(d: dict) -> str:
    parts = []
    if d["loss_delta"] is not None:
        parts.append(f"loss {d['loss_delta']:+.4f}")
    if d["perplexity_ratio"] is not None:
        parts.append(f"perplexity {fmt_ratio(d['perplexity_ratio'])}")
    if d["bits_per_byte_delta"] is not None:
        parts.append(f"bits/byte {d['bits_per_byte_delta']:+.4f}")
    tail = f"; {d['note']}" if d["note"] else ""
    return f"vs {d['against']} ({d['source']}): {', '.join(parts) or '—'} [comparable: {d['comparable']}{tail}]"


def print_section(section: dict, console) -> None:
    from rich.table import Table

    table = Table(title=fmt_protocol_title(section["protocol"]), title_justify="left")
    for col, justify in (("model", "left"), ("source", "left"), ("protocol", "left"), ("loss", "right"),
                         ("perplexity", "right"), ("bits/byte", "right"), ("tokens", "right"),
                         ("tokenizer", "left")):
        table.add_column(col, justify=justify)
    for r in section["results"]:
        tok = r["tokenizer"] if r["tokenizer_matches"] else f"{r['tokenizer']} (differs)"
        table.add_row(r["model"], r["source"], r["protocol"], _num(r["loss"], ".4f"), _num(r["perplexity"], ".2f"),
                      _num(r["bits_per_byte"], ".4f"), _num(r["tokens_scored"], ","), tok,
                      style="italic" if r["source"] == "published" else None)
    console.print(table)
    lines = [f"  {r['model']} ({r['source']}): {'; '.join(notes)}" for r in section["results"]
             if (notes := [n for n in (r.get("deviation"), raw_bytes_note(r), r.get("note")) if n])]
    lines += [delta_line(d) for d in section["deltas"]]
    if section.get("note"):
        lines.append(section["note"])
    for line in lines:
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def print_benchmarks(benchmarks: dict, console) -> None:
    """This run's score per task beside the card's published ones, the chance level and the standard error."""
    from rich.table import Table

    published = {p["task"]: p for p in benchmarks.get("published", [])}
    table = Table(title=f"downstream benchmarks ({benchmarks.get('harness')})", title_justify="left")
    for col in ("task", "metric", "shots", "this run", "± stderr", "CodeLion 70M", "GPT-2 (124M)", "chance",
                "examples"):
        table.add_column(col, justify="left" if col in ("task", "metric") else "right")
    for row in benchmarks.get("tasks", []):
        cells = []
        for name in CARD_MODELS:
            other, _ = baseline_figure(benchmarks, name, row["task"])
            cells.append(_num(other, ".2f") + (" ≈" if within_two_stderr(row["value"], row["stderr"], other) else ""))
        table.add_row(row["task"], row["metric"], _num(row["num_fewshot"], "d"), _num(row["value"], ".2f"),
                      _num(row["stderr"], ".2f"), *cells, _num(row["chance"], ".0f"), _num(row["examples"], ","))
    console.print(table)
    if published:
        console.print(f"published figures: {next(iter(published.values()))['source']} (GPT-2's as the card gives "
                      "them); ≈ marks one within two standard errors of this run's", markup=False, highlight=False,
                      soft_wrap=True)
    for note in baseline_notes(benchmarks):
        console.print(note, markup=False, highlight=False, soft_wrap=True)
    if benchmarks.get("limit"):
        console.print(f"capped at {benchmarks['limit']} examples per task: a quick look, not the card's protocol",
                      markup=False, highlight=False, soft_wrap=True)


def print_report(doc: dict, console, written_to: Path | None = None) -> None:
    for section in doc["evaluations"]:
        print_section(section, console)
    if doc.get("benchmarks"):
        print_benchmarks(doc["benchmarks"], console)
    for s in doc["samples"]:
        console.print(f"» {s['prompt']}{s['continuation']}", markup=False, highlight=False, soft_wrap=True)
    if written_to is not None:
        console.print(f"wrote {written_to}", markup=False, highlight=False, soft_wrap=True)
