"""`sparknet lr-find`: an LR range test. The rate rises exponentially from 1/1000 to 100 times the profile's over a
few hundred steps, the run ends where the loss runs away, and the smoothed curve gives a rate to use.

Each test is an ordinary run (schedule.decay = "range"), so the panel and every verb work on it; its reading is
kept in the run's lr-find.json. A Muon profile has two rates: each is tested with the other held at its value.
"""

from __future__ import annotations

import subprocess
import sys

from engine import SparkNetError
from engine.config.loading import PROJECT_ROOT, load_profile, load_run_inputs
from engine.config.schema import Profile
from engine.files import read_jsonl, write_json_atomic
from engine.runs.lr_range import read_range
from engine.runs.rundir import effective_status, logs_dir, runs_named

RATE_KEYS = {"all": "optim.lr", "adamw": "optim.lr", "muon": "optim.muon_lr"}
ROWS_SHOWN = 12


def range_overrides(profile: Profile, group: str, steps: int) -> list[str]:
    """The settings that make a run the range test of `group`: steps of the profile's batch, every step logged,
    no warm-up, no evaluation but the held-out loss of one batch at the end, no checkpoint but the last."""
    return ['schedule.decay="range"', f'schedule.range_group="{group}"', "schedule.warmup=0",
            f"run.tokens={steps * profile.tokens_per_step}", "run.log_every=1", f"run.eval_every={steps}",
            f"run.eval_tokens={profile.tokens_per_step}", f"run.checkpoint_every={steps}", "run.final_eval=false",
            "run.spike_factor=4", "run.wikitext_every=0"]


def lr_find_command(args) -> int:
    from engine.train.preflight import check_run, check_surroundings

    if args.from_run:
        return save_from_run(args.from_run, args.save_as)
    if not args.profile:
        raise SparkNetError("--profile P is needed (or --from-run RUN --save-as NAME to save a finished test's rate)")
    if args.steps < 20:
        raise SparkNetError(f"--steps must be at least 20 for a curve worth reading, got {args.steps}")
    profile, _ = load_run_inputs(args.profile, args.mix, args.overrides)
    if args.save_as is not None:  # known before minutes of range tests, not after them
        from engine.config.saving import new_profile_path

        new_profile_path(args.save_as)
    if args.group == "muon" and profile.optim.name != "muon":
        raise SparkNetError(f"--group muon: profile {profile.name} has no Muon rate (optim.name = "
                            f"\"{profile.optim.name}\"); leave --group out")
    groups = [args.group] if args.group else (["adamw", "muon"] if profile.optim.name == "muon" else ["all"])
    plans = []
    for group in groups:  # every test is checked before the first starts
        settings = range_overrides(profile, group, args.steps)
        tested, mix = load_run_inputs(args.profile, args.mix, list(args.overrides), settings)
        check_run(tested, mix)
        plans.append((group, tested, list(args.overrides) + settings))
    check_surroundings()
    readings = []
    for group, tested, overrides in plans:
        run_dir = run_test(args.profile, args.mix, group, overrides)
        found = read_test(run_dir, group, tested)
        print_reading(run_dir.name, group, tested, found)
        readings.append((run_dir.name, found))
    if args.save_as:
        save_suggestion(profile, args.mix, args.overrides, readings, args.save_as)
    return 0


def save_from_run(run: str, name: str | None) -> int:
    """The suggestion of a range test already run, saved as a profile (the panel's Live screen asks for this)."""
    from engine.files import read_json
    from engine.runs.rundir import load_run, resolve_run

    if not name:
        raise SparkNetError("--from-run needs --save-as NAME: the name of the new profile")
    run_dir = resolve_run(run)
    found = read_json(run_dir / "lr-find.json")
    if not isinstance(found, dict) or "key" not in found:
        raise SparkNetError(f"{run_dir.name} is not a finished LR range test (no lr-find.json); run `sparknet "
                            "lr-find --profile P` first")
    profile, mix, _ = load_run(run_dir)
    base = load_profile(profile.name)  # the saved profile, without the range test's own settings
    save_suggestion(base, mix.name, [], [(run_dir.name, found)], name)
    return 0


def save_suggestion(profile: Profile, mix: str | None, overrides: list[str], readings: list, name: str) -> None:
    """The profile with each suggested rate, as a new profile that says where its rates came from."""
    from engine.config.saving import save_variant

    found = [(run, f) for run, f in readings if f["suggested_lr"] is not None]
    if not found:
        raise SparkNetError("no rate was suggested, so nothing was saved; see why above")
    rates = [f"{f['key']}={f['suggested_lr']:.3g}" for _, f in found]
    measured = "; ".join(f"lr-find run {run}: {f['key']} {f['suggested_lr']:.3g} ({f['rule']})" for run, f in found)
    path = save_variant(profile.name, mix or profile.mix, [*overrides, *rates], name,
                        f"{profile.description or profile.name}; {' '.join(rates)} from sparknet lr-find", measured)
    print(f"saved {path}: `sparknet train --profile {path.stem}` trains it")


def run_test(profile_ref: str, mix_ref: str | None, group: str, overrides: list[str]):
    """Train the range test as `sparknet train` does, in the foreground; the run's directory."""
    name = f"lr-find-{group}"
    earlier = set(runs_named(logs_dir(), name))
    command = [sys.executable, "-m", "engine.cli", "train", "--profile", profile_ref, "--name", name]
    command += ["--mix", mix_ref] if mix_ref else []
    command += [a for o in overrides for a in ("--set", o)]
    code = subprocess.call(command, cwd=PROJECT_ROOT, stdin=subprocess.DEVNULL)
    made = [d for d in runs_named(logs_dir(), name) if d not in earlier]
    if not made:
        raise SparkNetError(f"the range test of {RATE_KEYS[group]} did not start (exit code {code}); its own line "
                            "is above")
    run_dir = made[-1]
    status = effective_status(run_dir)
    if status.get("state") != "finished":
        raise SparkNetError(f"the range test {run_dir.name} ended {status.get('state')}: "
                            f"{status.get('error') or 'see its train.log'}")
    return run_dir


def read_test(run_dir, group: str, tested: Profile) -> dict:
    rows = read_jsonl(run_dir / "metrics.jsonl")
    points = [(r["lr"], r["loss"]) for r in rows if isinstance(r.get("lr"), (int, float))
              and isinstance(r.get("loss"), (int, float))]
    try:
        found = read_range(points, ended_early=len(points) < tested.steps)
    except ValueError as e:
        raise SparkNetError(f"{run_dir / 'metrics.jsonl'}: {e}") from None
    base = tested.optim.muon_lr if group == "muon" else tested.optim.lr
    found.update(group=group, key=RATE_KEYS[group], profile_rate=base, steps=len(points))
    write_json_atomic(run_dir / "lr-find.json", found)
    return found


def print_reading(run_id: str, group: str, tested: Profile, found: dict) -> None:
    curve = found["curve"]
    key = found["key"]
    ran_away = found["ran_away_at_lr"]
    print(f"\n{key}: {found['steps']} steps, rate {curve[0][0]:.2e} → {curve[-1][0]:.2e}"
          + (f"; the loss ran away at {ran_away:.2e}" if ran_away else "; the loss never ran away (raise "
             "schedule.range_to to see where it does)"))
    print(f"  {'rate':>9}  {'loss':>8}  {'smoothed':>8}")
    picks = sorted({round(i * (len(curve) - 1) / (ROWS_SHOWN - 1)) for i in range(ROWS_SHOWN)})
    low, high = min(s for _, _, s in curve), max(s for _, _, s in curve)
    for i in picks:
        rate, loss, smooth = curve[i]
        bar = "█" * (1 + round(24 * (smooth - low) / (high - low))) if high > low else "█"
        print(f"  {rate:9.2e}  {loss:8.4f}  {smooth:8.4f}  {bar}")
    if found["suggested_lr"] is None:
        print(f"no suggestion for {key}: {found['rule']} (lowest at {found['lowest_loss_lr']:.2e}, the profile has "
              f"{found['profile_rate']:.2e})")
    else:
        print(f"suggested {key} = {found['suggested_lr']:.2e} ({found['rule']}, {found['lowest_loss_lr']:.2e}); "
              f"steepest descent at {found['steepest_lr']:.2e}; the profile has {found['profile_rate']:.2e}")
    held = {"adamw": "optim.muon_lr", "muon": "optim.lr"}.get(group)
    if held:
        value = tested.optim.muon_lr if group == "adamw" else tested.optim.lr
        print(f"{held} was held at {value:.2e} during this test")
    print(f"run {run_id}: its curve and reading are in lr-find.json")
