"""`sparknet bench --to-quality`: the wall seconds of training at which a profile first reaches the loss another
(the reference, `codelion-70m` unless `--against` names one) ends on, both trained on the same mix for the same
tokens. It is the speed a user gets from a recipe: tokens/s times how much each token teaches.

Each profile trains in this process as `sparknet train` would (its own schedule over the whole budget), and its
held-out loss is measured at evenly spaced points. Only training counts: the first step (which compiles the model)
counts as one steady step, and the evaluations are left out."""

from __future__ import annotations

import json
import sys
import time

from engine import SparkNetError
from engine.config.loading import load_run_inputs
from engine.config.schema import Profile
from engine.hardware.device import synchronize


def eval_steps(steps: int, points: int) -> list[int]:
    """The steps (1-based, the last included) after which the loss is measured: `points` of them, evenly spaced."""
    return sorted({max(1, round(steps * (i + 1) / points)) for i in range(points)})


def train_curve(profile: Profile, mix, points: int) -> dict:
    """Train `profile` on `mix` for its run.tokens; the held-out loss at `points` steps against training seconds."""
    from engine.cli.throughput import _trainer_facts, private_trainer
    from engine.train.schedule import lr_factor

    steps = profile.steps
    marks = set(eval_steps(steps, points))
    with private_trainer(profile, mix) as trainer:
        device, curve = trainer.device, []
        trainer.model.train()
        trained_s, first_step_s = 0.0, 0.0
        synchronize(device)
        clock = time.perf_counter()
        for step in range(steps):
            trainer.train_step(lr_factor(step, profile))
            if step == 0 or step + 1 in marks:
                synchronize(device)  # the GPU's queue drained: the clock holds every step's work up to here
                now = time.perf_counter()
                if step == 0:
                    first_step_s = now - clock
                else:
                    trained_s += now - clock
                clock = now
            if step + 1 in marks:
                steady = trained_s / step if step else first_step_s  # the compiling step counts as a steady one
                curve.append({"step": step + 1, "tokens": (step + 1) * profile.tokens_per_step,
                              "train_s": round(trained_s + steady, 3),
                              "val_loss": trainer.held_out(evaluate=True, wikitext=False)["val_loss"]})
                synchronize(device)
                clock = time.perf_counter()  # the evaluation is not training time
        return {"profile": profile.name, "steps": steps, "tokens_per_step": profile.tokens_per_step,
                "first_step_s": round(first_step_s, 3), "curve": curve, **_trainer_facts(trainer)}


def first_reaching(curve: list[dict], target: float) -> dict | None:
    """Where `curve` first comes down to `target`: between the last point above it and the first at or below it,
    tokens and seconds taken in proportion to the loss (linearly); None when no point reaches it."""
    above = None
    for point in curve:
        if point["val_loss"] <= target:
            if above is None:
                return {"tokens": point["tokens"], "train_s": point["train_s"]}
            share = (above["val_loss"] - target) / (above["val_loss"] - point["val_loss"])
            return {key: above[key] + share * (point[key] - above[key]) for key in ("tokens", "train_s")}
        above = point
    return None


def to_quality(args) -> dict:
    from engine.train.preflight import check_run

    points = args.eval_points
    if points < 2:
        raise SparkNetError(f"--eval-points must be at least 2, got {points}")
    against, contender = (load_run_inputs(name, args.mix, list(args.overrides))
                          for name in (args.against, args.profile))
    if against[1].source != contender[1].source:
        raise SparkNetError(f"{args.against} trains on mix {against[1].name} and {args.profile} on mix "
                            f"{contender[1].name}: held-out losses compare on one mix; pass --mix NAME")
    check_run(*contender)  # before the reference trains for minutes; each is checked again as its training starts
    reference = train_curve(*against, points)
    target = reference["curve"][-1]["val_loss"]
    candidate = train_curve(*contender, points)
    result = {"mix": against[1].name, "tokens": against[0].steps * against[0].tokens_per_step, "target_loss": target,
              "device": candidate["device"], "runs": [reference, candidate]}
    for run in result["runs"]:
        run["reached"] = first_reaching(run["curve"], target)
    ref_s = reference["reached"]["train_s"]
    got = candidate["reached"]
    result["speedup"] = round(ref_s / got["train_s"], 3) if got else None
    return result


def to_quality_command(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from engine.cli.throughput import write_json_out

    result = to_quality(args)
    line = json.dumps(result)
    print(line)
    write_json_out(args.json_out, line)
    table = Table(title=f"sparknet bench --to-quality on {result['device']}: held-out loss {result['target_loss']:.4f}"
                        f" ({result['runs'][0]['profile']}'s final, {result['tokens']:,} tokens of {result['mix']})",
                  box=None)
    for column in ("profile", "reaches it at", "training seconds", "tokens/s", "final loss"):
        table.add_column(column, justify="left" if column == "profile" else "right")
    for run in result["runs"]:
        reached, curve = run["reached"], run["curve"]
        rate = curve[-1]["tokens"] / curve[-1]["train_s"]
        table.add_row(run["profile"], f"{reached['tokens']:,.0f} tokens" if reached else "not within the budget",
                      f"{reached['train_s']:.1f}" if reached else "N/A", f"{rate:,.0f}", f"{curve[-1]['val_loss']:.4f}")
    speedup = result["speedup"]
    names = [run["profile"] for run in result["runs"]]
    table.caption = (f"time to {names[0]}'s final loss: {names[1]} {speedup:.2f}x as fast" if speedup else
                     f"{names[1]} does not reach it within the budget")
    Console(file=sys.stderr).print(table)
    return 0
