"""A sweep's folder, logs/sweeps/NAME/: sweep.json (each variant's state and run, the ranked table) beside the
variants' own run directories. Pure Python: the CLI writes it, the CLI and the panel read it."""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

from engine import SparkNetError
from engine.files import read_json, read_jsonl, write_json_atomic
from engine.runs.rundir import effective_status, logs_dir

SWEEP_FILE = "sweep.json"
LOCK_NAME = ".sweep.lock"
DONE = ("finished", "failed", "diverged")  # a variant in one of these is never run again


def sweeps_dir() -> Path:
    return logs_dir() / "sweeps"


def resolve_sweep(name: str) -> Path:
    folder = Path(name).expanduser()
    if not (folder / SWEEP_FILE).exists():
        folder = sweeps_dir() / name
    if not (folder / SWEEP_FILE).exists():
        raise SparkNetError(f"sweep '{name}' not found in {sweeps_dir()}: give the name `sparknet sweep SPEC` "
                            "printed, or its folder")
    return folder


@dataclass
class Entry:
    """One run of the sweep: a variant at one seed."""
    variant: str
    seed: int
    overrides: list[str]
    state: str = "pending"  # pending | running | finished | failed | diverged | stopped
    run: str | None = None  # the run directory's name, once it exists
    summary: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.variant}-s{self.seed}"


@dataclass
class SweepState:
    folder: Path
    spec: dict
    entries: list[Entry]
    state: str = "pending"  # pending | running | stopped | finished
    parallel: int = 1
    pid: int | None = None

    @classmethod
    def load(cls, folder: Path) -> "SweepState":
        data = read_json(folder / SWEEP_FILE)
        if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
            raise SparkNetError(f"{folder / SWEEP_FILE}: not a sweep file SparkNet wrote; start the sweep again "
                                "from its spec")
        entries = [Entry(**{k: e[k] for k in ("variant", "seed", "overrides", "state", "run", "summary") if k in e})
                   for e in data["entries"] if isinstance(e, dict)]
        return cls(folder, data.get("spec", {}), entries, data.get("state", "pending"), data.get("parallel", 1),
                   data.get("pid"))

    def save(self) -> None:
        write_json_atomic(self.folder / SWEEP_FILE, {
            "name": self.folder.name, "state": self.state, "parallel": self.parallel, "pid": self.pid,
            "spec": self.spec, "entries": [asdict(e) for e in self.entries],
            "table": ranked_rows(self.entries, self.spec.get("metric", "val_loss"))})

    def run_dir(self, entry: Entry) -> Path | None:
        return self.folder / entry.run if entry.run else None


# ---------------------------------------------------------------- what one run measured


def _numbers(rows: list[dict], key: str) -> list[float]:
    return [r[key] for r in rows if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]


def wikitext_perplexity(run_dir: Path) -> float | None:
    """The run's measured WikiText-2 perplexity under the standard protocol (its final evaluation), if any."""
    for section in (read_json(run_dir / "eval.json") or {}).get("evaluations") or []:
        if isinstance(section, dict) and (section.get("protocol") or {}).get("name") == "standard":
            for result in section.get("results") or []:
                if isinstance(result, dict) and result.get("source") == "measured":
                    return result.get("perplexity")
    return None


def summarize_run(run_dir: Path, warmup_steps: int) -> dict:
    """The figures the sweep's table shows for one run."""
    rows = read_jsonl(run_dir / "metrics.jsonl")
    val = _numbers(rows, "val_loss")
    speeds = _numbers(rows[1:], "tokens_per_s")  # the first logged interval holds the compile
    after = [r for r in rows if isinstance(r.get("step"), int) and r["step"] > warmup_steps]
    losses, spike, lowest = _numbers(after, "loss"), 0.0, math.inf
    for loss in losses:  # the largest rise of the loss above its lowest value so far
        lowest = min(lowest, loss)
        spike = max(spike, loss - lowest)
    grads = _numbers(after, "grad_norm")
    elapsed = _numbers(rows, "elapsed_s")
    return {"final_val_loss": val[-1] if val else None, "best_val_loss": min(val) if val else None,
            "wikitext_ppl": wikitext_perplexity(run_dir),
            "tokens_per_s": statistics.median(speeds) if speeds else None,
            "wall_s": elapsed[-1] if elapsed else None, "loss_spike": spike if losses else None,
            "max_grad_norm": max(grads) if grads else None, "steps": rows[-1].get("step") if rows else None}


def outcome(run_dir: Path) -> str:
    """finished | stopped | diverged | failed | running, from the run's own status."""
    status = effective_status(run_dir)
    state = status.get("state")
    if state in ("preparing", "running", "stopping", "stalled"):
        return "running"
    if state == "failed":
        return "diverged" if status.get("diverged") else "failed"
    return state if state in ("finished", "stopped") else "failed"


# ---------------------------------------------------------------- the ranked table


def _mean_spread(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), (max(values) - min(values)) / 2 if len(values) > 1 else None


def ranked_rows(entries: list[Entry], metric: str) -> list[dict]:
    """One row per variant (its seeds as mean and half their range), best first by `metric`; variants with no
    figure for it (failed, diverged, not run yet) last."""
    keys = ("final_val_loss", "best_val_loss", "wikitext_ppl", "tokens_per_s", "wall_s", "loss_spike",
            "max_grad_norm")
    column = "final_val_loss" if metric == "val_loss" else metric
    rows = []
    for variant in dict.fromkeys(e.variant for e in entries):
        mine = [e for e in entries if e.variant == variant]
        done = [e for e in mine if e.state == "finished"]
        row = {"variant": variant, "set": mine[0].overrides, "seeds": len(mine),
               "states": sorted({e.state for e in mine})}
        for key in keys:
            row[key], row[key + "_spread"] = _mean_spread([e.summary[key] for e in done
                                                            if isinstance(e.summary.get(key), (int, float))])
        rows.append(row)
    ranked = sorted((r for r in rows if r[column] is not None), key=lambda r: r[column])
    for rank, row in enumerate(ranked, 1):
        row["rank"] = rank
    return ranked + [dict(r, rank=None) for r in rows if r[column] is None]
