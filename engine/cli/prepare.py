"""`sparknet prepare`: progress lines while it works, then a table of what the cache holds."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from engine.config.loading import load_mix
from engine.config.paths import cache_root, writable_folder
from engine.data.prepare import DEFAULT_PREPARE_TOKENS, prepare_mix
from engine.formatting import fmt_duration


def _fmt_tokens(n) -> str:
    return "whole" if n is None else f"{n:,}"


class _PlainProgressPrinter:
    """One line per tokenizing source every few seconds: readable on a terminal and in train.log."""

    def __init__(self, out, every_s: float = 2.0):
        self.out, self.every_s, self._last = out, every_s, 0.0

    def __call__(self, snap: dict) -> None:
        now = time.monotonic()
        if now - self._last < self.every_s:
            return
        self._last = now
        for row in snap["sources"]:
            if row["state"] == "tokenizing":
                rate = f"{row['tokens_per_s']:,} tok/s" if row["tokens_per_s"] else "starting"
                print(f"  {row['name']:<16} {row['tokens']:>14,} / {_fmt_tokens(row['quota']):>14} tokens  "
                      f"{rate:>16}  ETA {fmt_duration(row['eta_s'])}", file=self.out, flush=True)


def format_report(report: dict) -> str:
    header = f"{'source':<16} {'train tokens':>14} {'val tokens':>12} {'documents':>10} {'epochs':>7}  state"
    lines = [header, "-" * len(header)]
    for name, r in report.items():
        epochs = f"{r['epochs_needed']:.2f}" if r["epochs_needed"] else "-"
        state = r["state"] + ("" if r["complete"] else " (partial)")
        lines.append(f"{name:<16} {r['train_tokens']:>14,} {r['val_tokens']:>12,} {r['documents']:>10,} "
                     f"{epochs:>7}  {state}")
    return "\n".join(lines)


def prepare_command(mix_name: str, tokens: int | None, cache_dir: Path | None = None, *,
                    workers: int | None = None, out=None) -> int:
    """`sparknet prepare --mix M [--tokens N]`: tokenize and cache, print progress and a table; exit code."""
    out = out or sys.stdout
    try:
        mix = load_mix(mix_name)
        root = cache_root(cache_dir) if cache_dir else writable_folder(cache_root(), "SPARKNET_CACHE")
        budget = f"local sources whole, hub sources their share of {tokens or DEFAULT_PREPARE_TOKENS:,} tokens"
        print(f"preparing mix '{mix.name}' ({budget}) into {root}", file=out, flush=True)
        start = time.monotonic()
        report = prepare_mix(mix, tokens, cache_dir=root, workers=workers, progress=_PlainProgressPrinter(out))
    except KeyboardInterrupt:
        print("interrupted: run the same command again to continue where it stopped", file=sys.stderr)
        return 130
    print(format_report(report), file=out)
    for name, r in report.items():
        if r["repaired"]:
            print(f"warning: {r['repaired']}", file=out)
        if r["undecodable_bytes"]:
            print(f"warning: source '{name}': skipped {r['undecodable_bytes']:,} bytes that are not UTF-8",
                  file=out)
    print(f"done in {time.monotonic() - start:.1f}s", file=out, flush=True)
    return 0
