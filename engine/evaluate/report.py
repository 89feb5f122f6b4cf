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


def tokenizer_name(spec) -> str:
    """A tokenizer as a table shows it: its name, or a folder's name (the path goes in a note below the table)."""
    text = str(spec or "—")
    return Path(text).name if "/" in text else text


def tokenizer_paths(results: list[dict]) -> list[str]:
    paths = sorted({str(r["tokenizer"]) for r in results if "/" in str(r.get("tokenizer") or "")})
    return [f"tokenizer {tokenizer_name(p)}: {p}" for p in paths]


def print_section(section: dict, console) -> None:
    """One protocol's table, narrow enough for 80 columns: a model's name wraps at its words, the figures never;
    what does not fit (another protocol a published figure used, deviations, tokenizer paths) goes below it."""
    from rich import box
    from rich.table import Table

    table = Table(title=fmt_protocol_title(section["protocol"]), title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("model", justify="left")
    for col in ("loss", "perplexity", "bits/byte", "tokens", "tokenizer"):
        table.add_column(col, justify="left" if col == "tokenizer" else "right", no_wrap=True, min_width=len(col))
    for r in section["results"]:
        tok = tokenizer_name(r["tokenizer"]) + ("" if r["tokenizer_matches"] else " (differs)")
        table.add_row(f"{r['model']} ({r['source']})", _num(r["loss"], ".4f"), _num(r["perplexity"], ".2f"),
                      _num(r["bits_per_byte"], ".4f"), _num(r["tokens_scored"], ","), tok,
                      style="italic" if r["source"] == "published" else None)
    console.print(table)
    own = section["protocol"].get("name")
    lines = []
    for r in section["results"]:
        other = r.get("protocol") if r.get("protocol") not in (None, own) else None
        notes = [n for n in (other, r.get("deviation"), raw_bytes_note(r), r.get("note")) if n]
        if notes:
            lines.append(f"  {r['model']} ({r['source']}): {'; '.join(notes)}")
    lines += [delta_line(d) for d in section["deltas"]]
    if section.get("note"):
        lines.append(section["note"])
    for line in lines:
        console.print(line, markup=False, highlight=False)
    for line in tokenizer_paths(section["results"]):  # a path is never broken: a terminal folds it whole
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def print_benchmarks(benchmarks: dict, console) -> None:
    """This run's score per task beside the card's published ones, the chance level and the standard error."""
    from rich.table import Table

    published = {p["task"]: p for p in benchmarks.get("published", [])}
    table = Table(title=f"downstream benchmarks ({benchmarks.get('harness')})", title_justify="left")
    longest = max([len(row["task"]) for row in benchmarks.get("tasks", [])] + [4])
    table.add_column("task", no_wrap=True, min_width=longest)  # a task's name is never cut: it is what to look up
    for col in ("metric", "shots", "this run", "± stderr", "CodeLion 70M", "GPT-2 (124M)", "chance", "examples"):
        table.add_column(col, justify="left" if col == "metric" else "right")
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
                      "them); ≈ marks one within two standard errors of this run's", markup=False, highlight=False)
    for note in baseline_notes(benchmarks):  # they name folders: printed whole, for a terminal to fold
        console.print(note, markup=False, highlight=False, soft_wrap=True)
    if benchmarks.get("limit"):
        console.print(f"capped at {benchmarks['limit']} examples per task: a quick look, not the card's protocol",
                      markup=False, highlight=False)


def print_report(doc: dict, console, written_to: Path | None = None) -> None:
    for section in doc["evaluations"]:
        print_section(section, console)
    if doc.get("benchmarks"):
        print_benchmarks(doc["benchmarks"], console)
    for s in doc["samples"]:
        console.print(f"» {s['prompt']}{s['continuation']}", markup=False, highlight=False)
    if written_to is not None:
        console.print(f"wrote {written_to}", markup=False, highlight=False, soft_wrap=True)
