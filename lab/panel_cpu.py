"""How much CPU the control panel uses while it watches a live run.

Starts a tiny-cpu run detached (or watches the run given with --run), opens
the panel headless on its Live screen for --seconds (default 30), and prints
the panel process's CPU time over that window as a percentage of one core
(user + system, all its threads, from resource.getrusage). The target is
under 5 %.

    python lab/panel_cpu.py
    python lab/panel_cpu.py --run RUN_ID --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

from engine.runs.rundir import LIVE_STATES, effective_status, logs_dir, resolve_run  # noqa: E402
from sparknet_tui.app import SparkNetApp  # noqa: E402
from sparknet_tui.commands import start_training, stop_run  # noqa: E402
from sparknet_tui.screens.live import LiveScreen  # noqa: E402

WARMUP_S = 3.0  # the first compose and reading of the run are not what "watching" costs


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def wait_until_running(run_dir: Path, timeout: float = 300) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        status = effective_status(run_dir)
        if status.get("state") == "running" and status.get("step", 0) > 0:
            return
        if status.get("state") not in LIVE_STATES:
            raise SystemExit(f"run {run_dir.name} is {status.get('state')}: {status.get('error')}")
        time.sleep(0.5)
    raise SystemExit(f"run {run_dir.name} did not log a step within {timeout:.0f} s")


async def watch(run_dir: Path, seconds: float, size: tuple[int, int]) -> dict:
    app = SparkNetApp(open_run=run_dir)
    async with app.run_test(size=size) as pilot:
        await pilot.pause(WARMUP_S)
        screen = app.screen
        assert isinstance(screen, LiveScreen), f"expected the Live screen, got {screen!r}"
        points_before = len(screen.view.loss_points) if screen.view else 0
        cpu0, wall0 = cpu_seconds(), time.monotonic()
        await asyncio.sleep(seconds)
        cpu1, wall1 = cpu_seconds(), time.monotonic()
        points_after = len(screen.view.loss_points) if screen.view else 0
    return {"cpu_s": cpu1 - cpu0, "wall_s": wall1 - wall0, "points_before": points_before,
            "points_after": points_after}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", help="watch this live run instead of starting one")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--profile", default="tiny-cpu")
    ap.add_argument("--tokens", type=int, default=2_048_000, help="tokens of the run started (long enough to watch)")
    ap.add_argument("--size", default="120x40", help="terminal size the panel draws, WxH")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args(argv)
    width, height = (int(x) for x in args.size.lower().split("x"))

    started = None
    if args.run:
        run_dir = resolve_run(args.run)
    else:
        if "SPARKNET_LOGS" not in os.environ:
            os.environ["SPARKNET_LOGS"] = tempfile.mkdtemp(prefix="sparknet-panel-cpu-")
        result = start_training(args.profile, None, [f"run.tokens={args.tokens}"], name="panel-cpu")
        if not result.ok:
            print(f"could not start a run: {result.message}", file=sys.stderr)
            return 1
        run_dir = started = logs_dir() / result.run_id
    try:
        wait_until_running(run_dir)
        figures = asyncio.run(watch(run_dir, args.seconds, (width, height)))
    finally:
        if started is not None:
            stop_run(started)
    pct = 100.0 * figures["cpu_s"] / figures["wall_s"]
    report = {"run": run_dir.name, "cpu_percent_of_one_core": round(pct, 2), **figures,
              "size": args.size, "python": sys.version.split()[0]}
    if args.json:
        print(json.dumps(report))
    else:
        print(f"panel CPU: {pct:.2f}% of one core over {figures['wall_s']:.1f} s watching {run_dir.name} "
              f"at {args.size} (loss points {figures['points_before']} -> {figures['points_after']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
