"""Training runs of the 16M-token quality protocol (docs/lab/quality.md), several at once on one GPU.

usage: python lab/quality_sweep.py MIX ROWS OUT [--parallel N] [--timeout S]

ROWS holds one run a line, `name|profile|--set key=value ...`; blank lines and lines starting with # are skipped.
Each row runs `sparknet train --profile P --mix MIX --set run.tokens=15974400 --set run.eval_every=130 SETS`
in its own logs folder under OUT, at most N at a time (runs sharing the GPU are slower, so their tokens/s is not
a speed figure: measure speed with `sparknet bench`, alone). OUT/summary.jsonl gets a line per finished row:
final and validation loss, the largest grad norm after step 10, the median tokens/s, and the WikiText-2 figures
of the run's own final evaluation, per protocol. SWEEP_PROTOCOL replaces the two protocol settings (a
shorter run to try the script).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from engine.files import read_json, read_jsonl

PROTOCOL = os.environ.get("SWEEP_PROTOCOL", "--set run.tokens=15974400 --set run.eval_every=130").split()


def read_rows(path: Path) -> list[tuple[str, str, list[str]]]:
    rows = []
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, profile, sets = (part.strip() for part in line.split("|", 2))
            rows.append((name, profile, sets.split()))
    return rows


def summarize(name: str, sets: list[str], run_dir: Path, rc: int, wall_s: float) -> dict:
    out = {"name": name, "rc": rc, "wall_s": round(wall_s), "sets": " ".join(sets)}
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    if metrics:
        rates = [m["tokens_per_s"] for m in metrics if m.get("tokens_per_s")]
        vals = [m["val_loss"] for m in metrics if "val_loss" in m]
        out.update(steps=metrics[-1]["step"], final_loss=metrics[-1]["loss"], val_loss=vals[-1] if vals else None,
                   tokens_per_s_median=statistics.median(rates) if rates else None,
                   max_grad_norm_after_10=max((m["grad_norm"] for m in metrics if m["step"] > 10), default=None))
    for section in (read_json(run_dir / "eval.json") or {}).get("evaluations", []):
        r = section["results"][0]
        out[section["protocol"]["name"]] = {"ppl": r["perplexity"], "loss": r["loss"], "bpb": r["bits_per_byte"]}
    return out


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    mix, rows, out = argv[0], read_rows(Path(argv[1])), Path(argv[2])
    parallel = int(argv[argv.index("--parallel") + 1]) if "--parallel" in argv else 1
    timeout = float(argv[argv.index("--timeout") + 1]) if "--timeout" in argv else None
    out.mkdir(parents=True, exist_ok=True)
    pending, running = list(rows), []
    started_all = time.monotonic()
    while pending or running:
        while pending and len(running) < parallel:
            name, profile, sets = pending.pop(0)
            logs = out / name
            env = dict(os.environ, SPARKNET_LOGS=str(logs))
            cmd = [sys.executable, "-m", "engine.cli", "train", "--profile", profile, "--mix", mix, "--name", name,
                   *PROTOCOL, *sets]
            with open(out / f"{name}.out", "w") as log:  # the child keeps its own copy of the handle
                proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
            running.append((name, sets, logs, time.monotonic(), proc))
        time.sleep(2)
        for item in list(running):
            name, sets, logs, started, proc = item
            late = timeout is not None and time.monotonic() - started_all > timeout
            if proc.poll() is None and not late:
                continue
            if proc.poll() is None:
                proc.kill()
            running.remove(item)
            run_dirs = [d for d in logs.iterdir() if d.is_dir()] if logs.exists() else []
            row = summarize(name, sets, run_dirs[0], proc.wait(), time.monotonic() - started) if run_dirs else \
                {"name": name, "rc": proc.returncode, "sets": " ".join(sets)}
            with open(out / "summary.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
