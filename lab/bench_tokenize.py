"""Tokenization throughput of `sparknet prepare` on the stand-in corpora, and what 1B tokens would take.

    python lab/bench_tokenize.py --corpora DIR [--tokenizer DIR] [--mb 6] [--workers N]

Measures, on this machine:
  1. one process: tokens/s of the tokenizer alone, per corpus (no reading, no writing);
  2. reading: gzip + JSON parsing in the main process, as tokens/s (it feeds every worker, so it caps the total);
  3. total: a real prepare of a 50/30/20 mix of the three corpora into a temporary cache, all workers.
Then projects the time to prepare 1B tokens on a DGX Spark (20 cores), assuming a Spark core tokenizes
as fast as a core here.

DIR holds textbooks.jsonl.gz, web.jsonl.gz and educational.jsonl.gz (or set SPARKNET_CORPORA); the tokenizer is
--tokenizer, else "gpt2" as the engine finds it (SPARKNET_TOKENIZER, the local cache, the hub).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # one process = one core, as in prepare's workers
PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

import engine.data as data  # noqa: E402
from engine.config.loading import load_mix  # noqa: E402
from engine.data.tokenizer import load_tokenizer  # noqa: E402

CORPORA = {"textbooks": 0.5, "web": 0.3, "educational": 0.2}
SPARK_CORES = 20
TARGET_TOKENS = 1_000_000_000


def read_texts(path: Path, max_chars: int) -> list[str]:
    texts, chars = [], 0
    with gzip.open(path, "rb") as f:
        for line in f:
            text = json.loads(line)["text"]
            texts.append(text)
            chars += len(text)
            if chars >= max_chars:
                break
    return texts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    corpora = os.environ.get("SPARKNET_CORPORA")
    ap.add_argument("--corpora", type=Path, default=Path(corpora) if corpora else None, required=not corpora,
                    help="folder of the three stand-in corpora (default: SPARKNET_CORPORA)")
    ap.add_argument("--tokenizer", default=None, help="tokenizer folder or name (default: see module doc)")
    ap.add_argument("--mb", type=float, default=6.0, help="MB of text per corpus for the one-process test")
    ap.add_argument("--tokens", type=int, default=6_000_000, help="tokens to prepare in the total test")
    ap.add_argument("--workers", default=f"1,{os.cpu_count() or 1}",
                    help="comma-separated worker counts for the total test (1 = in-process)")
    args = ap.parse_args()

    spec = args.tokenizer or "gpt2"
    tok = load_tokenizer(spec)
    files = {name: args.corpora / f"{name}.jsonl.gz" for name in CORPORA}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        print(f"error: corpora not found: {', '.join(missing)}; pass --corpora DIR", file=sys.stderr)
        return 2
    print(f"machine: {os.cpu_count() or 1} cores; tokenizer {tok.name} ({tok.origin}); corpora {args.corpora}")
    max_chars = int(args.mb * 1e6)
    per_process, chars_per_token = one_process_rate(tok, files, max_chars)
    read_rate = reading_rate(files, max_chars, chars_per_token)
    totals = prepare_rates(spec, files, args.tokens, sorted({max(1, int(w)) for w in args.workers.split(",")}))
    print_projection(per_process, read_rate, totals)
    return 0


def one_process_rate(tok, files: dict[str, Path], max_chars: int) -> tuple[float, float]:
    """1. The tokenizer alone in one process: tokens/s over all corpora, and the mean characters per token."""
    print("\none process, tokenizer only:")
    total_tokens = total_s = 0.0
    chars_per_token = []
    for name in CORPORA:
        texts = read_texts(files[name], max_chars)
        start = time.perf_counter()
        flat, _ = data.encode_documents(tok, texts)
        seconds = time.perf_counter() - start
        total_tokens += len(flat)
        total_s += seconds
        chars_per_token.append(sum(map(len, texts)) / len(flat))
        print(f"  {name:<12} {len(flat):>11,} tokens in {seconds:6.2f}s  {len(flat) / seconds:>11,.0f} tokens/s")
    per_process = total_tokens / total_s
    print(f"  {'all':<12} {int(total_tokens):>11,} tokens in {total_s:6.2f}s  {per_process:>11,.0f} tokens/s "
          "per process")
    return per_process, sum(chars_per_token) / len(chars_per_token)


def reading_rate(files: dict[str, Path], max_chars: int, chars_per_token: float) -> float:
    """2. The main process's reading rate (gzip + JSON), in tokens/s: it feeds every worker, so it caps the total."""
    start = time.perf_counter()
    chars = sum(sum(map(len, read_texts(files[name], max_chars))) for name in CORPORA)
    rate = chars / chars_per_token / (time.perf_counter() - start)
    print(f"\nreading (gzip + JSON, main process): {rate:,.0f} tokens/s")
    return rate


def prepare_rates(spec: str, files: dict[str, Path], tokens: int, worker_counts: list[int]) -> dict[int, float]:
    """3. A real prepare of the 50/30/20 mix into a temporary cache per worker count: tokens/s of each."""
    totals = {}
    print()
    for workers in worker_counts:
        with tempfile.TemporaryDirectory() as tmp:
            mix_path = Path(tmp) / "bench.toml"
            lines = [f'tokenizer = "{spec}"', "validation_share = 0.005", "seed = 42"]
            for name, weight in CORPORA.items():
                lines += ["[[sources]]", f'name = "{name}"', f"weight = {weight}", f'path = "{files[name]}"']
            mix_path.write_text("\n".join(lines) + "\n")
            mix = load_mix(str(mix_path))
            data.prepare.POOL_MIN_TOKENS = 0  # measure the worker pool even on a small budget
            start = time.perf_counter()
            report = data.prepare_mix(mix, tokens, cache_dir=Path(tmp) / "cache", workers=workers)
            seconds = time.perf_counter() - start
        prepared = sum(r["train_tokens"] + r["val_tokens"] for r in report.values())
        totals[workers] = prepared / seconds
        how = "in this process" if workers == 1 else f"{workers} worker processes"
        print(f"total: prepare of {prepared:,} tokens, {how}: {seconds:.1f}s, {totals[workers]:,.0f} tokens/s "
              "(reading, tokenizing, writing; pool start included)")
    if len(totals) > 1 and 1 in totals:
        print(f"scaling here: {totals[max(totals)] / totals[1]:.2f}x from 1 to {max(totals)} processes "
              f"on {os.cpu_count() or 1} cores")
    return totals


def print_projection(per_process: float, read_rate: float, totals: dict[int, float]) -> None:
    cores = os.cpu_count() or 1
    best_workers = max(totals, key=totals.get)
    need = TARGET_TOKENS * 1.005  # plus the validation share
    by_cores = min(per_process * SPARK_CORES, read_rate)
    by_total = totals[best_workers] * SPARK_CORES / min(cores, best_workers)
    print(f"\nprojected time to prepare 1B tokens on a {SPARK_CORES}-core DGX Spark "
          "(a Spark core assumed as fast as a core here):")
    print(f"  from one-process speed x {SPARK_CORES} (capped by reading at {read_rate:,.0f} tokens/s): "
          f"{by_cores:,.0f} tokens/s, {need / by_cores / 60:.0f} min")
    processes = f"{best_workers} process" + ("es" if best_workers > 1 else "")
    print(f"  from this machine's best total ({processes}) x {SPARK_CORES}/{min(cores, best_workers)}: "
          f"{by_total:,.0f} tokens/s, {need / by_total / 60:.0f} min")
    print("  (hub sources also stream over the network: at ~4 bytes per token, 1B tokens is ~4 GB of text)")


if __name__ == "__main__":
    sys.exit(main())
