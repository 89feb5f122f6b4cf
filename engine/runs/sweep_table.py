"""The sweep's ranked table as the CLI prints it (`sparknet sweep show NAME`, and at the end of a sweep)."""

from __future__ import annotations

from engine.formatting import NA, fmt_count, fmt_duration, fmt_float, fmt_perplexity, terminal_console
from engine.runs.sweep import SweepState, ranked_rows


def _with_spread(value, spread, fmt) -> str:
    if value is None:
        return NA
    return fmt(value) + (f" ± {fmt(spread)}" if spread else "")


def table_cells(row: dict) -> list[str]:
    return [
        str(row["rank"] or "—"), row["variant"], " ".join(row["set"]) or "(base)",
        _with_spread(row["final_val_loss"], row["final_val_loss_spread"], lambda v: fmt_float(v, 4)),
        _with_spread(row["best_val_loss"], row["best_val_loss_spread"], lambda v: fmt_float(v, 4)),
        _with_spread(row["wikitext_ppl"], row["wikitext_ppl_spread"], fmt_perplexity),
        _with_spread(row["tokens_per_s"], row["tokens_per_s_spread"], fmt_count),
        fmt_duration(row["wall_s"]) if row["wall_s"] is not None else NA,
        _with_spread(row["loss_spike"], None, lambda v: fmt_float(v, 3)),
        _with_spread(row["max_grad_norm"], None, lambda v: fmt_float(v, 2)),
        ",".join(row["states"]),
    ]


HEADERS = ["rank", "variant", "settings", "val loss", "best val", "WikiText ppl", "tok/s", "wall", "spike", "grad",
           "state"]


def print_sweep(state: SweepState) -> None:
    from rich.table import Table

    spec = state.spec
    metric = spec.get("metric", "val_loss")
    table = Table(box=None, header_style="bold", pad_edge=False)
    for header in HEADERS:
        table.add_column(header, overflow="fold", justify="right" if header in ("rank", "tok/s", "wall") else "left")
    for row in ranked_rows(state.entries, metric):
        table.add_row(*table_cells(row))
    console = terminal_console()
    console.print(f"sweep {state.folder.name} ({state.state}): {spec.get('profile')} on {spec.get('mix')}, "
                  f"{spec.get('tokens', 0):,} tokens a run, ranked by {metric}", markup=False, highlight=False)
    console.print(table)
    notes = ["val loss and best val: the last and lowest held-out loss; a variant of several seeds shows their "
             "mean ± half their range", "spike: the largest rise of the training loss above its lowest value so "
             "far, after warm-up; grad: the largest gradient norm after warm-up"]
    if state.parallel > 1:
        notes.append(f"{state.parallel} runs shared the device at once: their tokens/s and wall times are not "
                     "those of a run alone")
    for note in notes:
        console.print(note, markup=False, highlight=False, style="dim")
