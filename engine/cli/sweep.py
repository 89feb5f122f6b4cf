"""`sparknet sweep`: short proxy runs of several variants of one recipe, one after another, ranked in one table.

Each variant at each seed is an ordinary run directory under logs/sweeps/NAME/, trained by the `sparknet train`
command in its own process, so every verb, guard and panel screen works on it. sweep.json records what each run
came to; `sparknet sweep resume NAME` carries on after a stop, a kill or a reboot, never repeating a finished run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from engine import SparkNetError
from engine.config.loading import PROJECT_ROOT, load_run_inputs
from engine.config.sweep import load_sweep_spec
from engine.files import read_json
from engine.runs.lock import LockHeld, RunLock, lock_held
from engine.runs.rundir import load_run, run_name_part, runs_named
from engine.runs.sweep import (
    DONE,
    LOCK_NAME,
    SWEEP_FILE,
    Entry,
    SweepState,
    outcome,
    ranked_rows,
    resolve_sweep,
    summarize_run,
    sweeps_dir,
)

POLL_S = 0.5
ACTIONS = ("resume", "show", "stop", "save")


def sweep_command(args) -> int:
    action, target = (args.target[0], args.target[1:]) if args.target[0] in ACTIONS else ("start", args.target)
    if len(target) != 1:
        raise SparkNetError("give one spec file (`sparknet sweep SPEC.toml`) or `resume|show|stop|save NAME`")
    if action == "save":
        path = save_best(SweepState.load(resolve_sweep(target[0])), args.save_as, args.variant)
        print(f"saved {path}: `sparknet train --profile {path.stem}` trains it")
        return 0
    if action == "show":
        from engine.runs.sweep_table import print_sweep

        print_sweep(SweepState.load(resolve_sweep(target[0])))
        return 0
    if action == "stop":
        return stop_sweep(resolve_sweep(target[0]))
    folder = create_sweep(Path(target[0]), args.parallel) if action == "start" else resolve_sweep(target[0])
    if args.detach:
        return detach(folder)
    try:
        lock = RunLock.acquire(folder, what="sweep", name=LOCK_NAME)
    except LockHeld:
        raise SparkNetError(f"sweep {folder.name} is already running; `sparknet sweep stop {folder.name}` stops "
                            "it") from None
    try:
        return SweepRunner(SweepState.load(folder)).run()
    finally:
        lock.release()


def create_sweep(spec_path: Path, parallel: int) -> Path:
    """Check every variant as its run would be checked, then write the sweep's folder. Raises before writing."""
    from engine.train.preflight import check_run, check_surroundings

    if parallel < 1:
        raise SparkNetError(f"--parallel must be at least 1, got {parallel}")
    spec = load_sweep_spec(spec_path)
    folder = sweeps_dir() / spec.name
    if (folder / SWEEP_FILE).exists():
        raise SparkNetError(f"sweep {spec.name} exists in {folder.parent}; `sparknet sweep resume {spec.name}` "
                            "carries it on, or give the spec another name")
    for variant in spec.variants:
        profile, mix = load_run_inputs(spec.profile, spec.mix, spec.run_overrides(variant, spec.seeds[0]))
        try:
            check_run(profile, mix)
        except SparkNetError as e:
            raise SparkNetError(f"{spec_path}: variant '{variant.name}': {e}") from None
    check_surroundings()
    entries = [Entry(v.name, seed, v.overrides) for v in spec.variants for seed in spec.seeds]
    state = SweepState(folder, spec.to_dict(), entries, parallel=parallel)
    folder.mkdir(parents=True, exist_ok=True)
    state.save()
    print(f"sweep {spec.name}: {len(spec.variants)} variants x {len(spec.seeds)} seeds of {spec.profile} on "
          f"{spec.mix}, {spec.tokens:,} tokens each, in {folder}")
    return folder


def save_best(state: SweepState, name: str | None, variant: str | None = None) -> Path:
    """The best-ranked variant (or the one named) as a profile of its own, remembering its sweep and rank."""
    from engine.config.loading import load_profile
    from engine.config.saving import save_variant
    from engine.formatting import fmt_float

    if not name:
        raise SparkNetError("--as NAME is needed: the name of the new profile")
    spec, metric = state.spec, state.spec.get("metric", "val_loss")
    rows = ranked_rows(state.entries, metric)
    ranked = [r for r in rows if r["rank"] is not None]
    row = next((r for r in rows if r["variant"] == variant), None) if variant else (ranked[0] if ranked else None)
    if row is None or row["rank"] is None:
        known = ", ".join(r["variant"] for r in ranked) or "none yet"
        raise SparkNetError(f"sweep {state.folder.name}: no finished variant {variant or 'to save'}; ranked: {known}")
    column = "final_val_loss" if metric == "val_loss" else metric
    spread = row[column + "_spread"]
    figure = fmt_float(row[column], 4) + (f" ± {fmt_float(spread, 4)}" if spread else "")
    measured = (f"rank {row['rank']} of {len(ranked)} in sweep {state.folder.name}: {metric} {figure} at "
                f"{spec['tokens']:,} tokens, {row['seeds']} seed{'s' if row['seeds'] != 1 else ''}")
    base = load_profile(spec["profile"])
    settings = " ".join(row["set"]) or "the base recipe"
    description = f"{base.description or base.name}; {settings} (variant {row['variant']} of sweep {state.folder.name})"
    return save_variant(spec["profile"], spec["mix"], row["set"], name, description, measured)


def detach(folder: Path) -> int:
    """Run the sweep in its own session, its output in sweep.log; print its name and return."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(folder / "sweep.log", "ab") as log:
        subprocess.Popen([sys.executable, "-m", "engine.cli", "sweep", "resume", str(folder)],
                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                         env=env, cwd=PROJECT_ROOT)
    print(folder.name)
    return 0


def stop_sweep(folder: Path) -> int:
    data = read_json(folder / SWEEP_FILE) or {}
    pid = data.get("pid")
    if not isinstance(pid, int) or not lock_held(folder, LOCK_NAME):
        print(f"sweep {folder.name} is not running (`sparknet sweep resume {folder.name}` carries it on)")
        return 0
    os.kill(pid, signal.SIGTERM)
    print(f"stopping sweep {folder.name}: the variant in hand checkpoints, then the sweep ends")
    return 0


class SweepRunner:
    """Runs the sweep's pending entries, `parallel` at a time, and records each outcome in sweep.json."""

    def __init__(self, state: SweepState):
        self.state = state
        self.spec = state.spec
        self.children: dict[int, subprocess.Popen | None] = {}  # entry index -> its process (None: another's)
        self.stopping = False

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        self.state.state, self.state.pid = "running", os.getpid()
        self.state.save()
        pending = [i for i, e in enumerate(self.state.entries) if e.state not in DONE]
        while (pending or self.children) and not (self.stopping and not self.children):
            while pending and len(self.children) < self.state.parallel and not self.stopping:
                self.start(pending.pop(0))
            time.sleep(POLL_S)
            self.poll()
        self.state.state = "stopped" if self.stopping or any(e.state == "stopped" for e in self.state.entries) \
            else "finished"
        self.state.pid = None
        self.state.save()
        from engine.runs.sweep_table import print_sweep

        print_sweep(self.state)
        return 130 if self.state.state == "stopped" else 0

    def run_name(self, entry: Entry) -> str:
        return run_name_part(f"{self.state.folder.name}-{entry.label}")

    def _stop(self, signum, frame) -> None:
        self.stopping = True
        for proc in self.children.values():
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # the variant checkpoints and ends stopped

    def start(self, index: int) -> None:
        entry = self.state.entries[index]
        run_dir = self.state.run_dir(entry)
        if run_dir is not None and (run_dir / "run.toml").exists():
            found = outcome(run_dir)
            if found == "running":  # left by a sweep that was killed: wait for its trainer
                self.children[index] = None
                return
            if found in ("finished", "diverged"):
                self.finish(index, None)
                return
            command = ["resume", str(run_dir)]  # stopped, or ended without saying so (a kill, a reboot)
        else:
            overrides = [f"run.tokens={self.spec['tokens']}", f"run.seed={entry.seed}", *self.spec.get("set", []),
                         *entry.overrides]
            command = ["train", "--profile", self.spec["profile"], "--mix", str(self.spec["mix"]), "--name",
                       self.run_name(entry), *(a for o in overrides for a in ("--set", o))]
        entry.state = "running"
        self.state.save()
        output = self.state.folder / "output"
        output.mkdir(exist_ok=True)
        with open(output / f"{entry.label}.log", "ab") as log:
            self.children[index] = subprocess.Popen(
                [sys.executable, "-m", "engine.cli", *command], stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, cwd=PROJECT_ROOT, env=dict(os.environ, SPARKNET_LOGS=str(self.state.folder)))
        print(f"[{index + 1}/{len(self.state.entries)}] {entry.label}: {command[0]} "
              f"{' '.join(entry.overrides) or '(the base recipe)'}", flush=True)

    def poll(self) -> None:
        for index, proc in list(self.children.items()):
            entry = self.state.entries[index]
            if entry.run is None:
                found = runs_named(self.state.folder, self.run_name(entry))
                if found:
                    entry.run = found[-1].name
                    self.state.save()
            if proc is None:
                run_dir = self.state.run_dir(entry)
                if run_dir is None or outcome(run_dir) != "running":
                    del self.children[index]
                    self.start(index)  # its trainer ended: go on as a resume would
                continue
            if proc.poll() is not None:
                del self.children[index]
                self.finish(index, proc.returncode)

    def finish(self, index: int, returncode: int | None) -> None:
        entry = self.state.entries[index]
        run_dir = self.state.run_dir(entry)
        if run_dir is None or not (run_dir / "run.toml").exists():
            entry.state = "failed"  # refused before the run existed; its one line is in output/
            log = self.state.folder / "output" / f"{entry.label}.log"
            lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
            entry.summary = {"error": lines[-1] if lines else f"exit code {returncode}"}
        else:
            entry.state = outcome(run_dir)
            if entry.state == "running":
                entry.state = "failed"
            entry.summary = summarize_run(run_dir, _warmup_steps(run_dir))
        if entry.state == "stopped":
            self.stopping = True  # a variant stopped by hand stops the sweep; resume carries on from it
        self.state.save()
        figure = entry.summary.get("final_val_loss")
        said = f", val loss {figure:.4f}" if isinstance(figure, float) else ""
        print(f"[{index + 1}/{len(self.state.entries)}] {entry.label}: {entry.state}{said}", flush=True)


def _warmup_steps(run_dir: Path) -> int:
    try:
        return load_run(run_dir)[0].warmup_steps
    except (SparkNetError, OSError):
        return 0
