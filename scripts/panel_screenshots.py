"""Pictures of every panel screen for the manual, rendered from the real app over real runs.

    .venv/bin/python scripts/panel_screenshots.py docs/panel            # SVG files at 120x40
    .venv/bin/python scripts/panel_screenshots.py OUT --size 80x24 --text   # also print each screen as text

It trains two tiny runs on the offline demo mix with the real `sparknet` command,
evaluates one and runs a two-variant sweep (about a minute on two CPU cores), then drives the panel
with Textual's Pilot and saves Runs, New run, Live, Evaluation, Compare, Sweeps and Help.
Nothing outside a temporary folder and OUT is touched.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

# small and quick, with enough logged steps and validation points to draw curves
RUN_SETTINGS = ["model.n_layer=2", "model.n_embd=64", "model.n_head=4", "model.context=128", "batch.micro_batch=8",
                "batch.grad_accum=2", "optim.min_lr=3e-4", "run.tokens=40960", "run.log_every=1",
                "run.eval_every=4", "run.eval_tokens=2048", "run.final_eval_tokens=2048"]
SCREENS = ("runs", "new-run", "live", "evaluation", "compare", "sweeps", "help")
SWEEP_SPEC = """name = "demo-rates"
profile = "tiny-cpu"
mix = "demo"
tokens = 20480
set = ["run.eval_every=5", "run.final_eval=false"]
[grid]
"optim.lr" = [1e-3, 1e-2]
"""


def sparknet(*args: str, env: dict) -> None:
    done = subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=PROJECT, env=env, capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise SystemExit(f"sparknet {' '.join(args)} failed:\n{done.stderr[-2000:]}")


def make_runs(logs: Path) -> tuple[Path, Path]:
    """Two finished tiny runs that differ in their learning rate; the first is evaluated."""
    env = dict(os.environ, SPARKNET_LOGS=str(logs))
    settings = [a for s in RUN_SETTINGS for a in ("--set", s)]
    for name, lr in (("lr-3e-3", "3e-3"), ("lr-1e-3", "1e-3")):
        sparknet("train", "--profile", "tiny-cpu", "--mix", "demo", "--name", name, *settings,
                 "--set", f"optim.lr={lr}", env=env)
    first, second = (next(logs.glob(f"*-{name}")) for name in ("lr-3e-3", "lr-1e-3"))
    sparknet("eval", str(first), "--no-samples", env=env)
    spec = logs.parent / "demo-rates.toml"
    spec.write_text(SWEEP_SPEC)
    sparknet("sweep", str(spec), env=env)
    return first, second


def screen_rows(svg: str) -> list[str]:
    """The text of an SVG screenshot, row by row, each piece at its own column."""
    pieces = []
    for m in re.finditer(r'<text class="[^"]*" x="([\d.]+)" y="([\d.]+)" textLength="([\d.]+)"[^>]*>(.*?)</text>', svg):
        text = html.unescape(re.sub("<[^>]+>", "", m.group(4))).replace("\xa0", " ")
        pieces.append((float(m.group(2)), float(m.group(1)), float(m.group(3)), text))
    widths = [length / len(text) for _, _, length, text in pieces if text and text.isascii()]
    cell = min(widths) if widths else 1.0
    rows: dict[float, list[str]] = {}
    for y, x, _, text in pieces:
        row = rows.setdefault(y, [])
        column = round(x / cell)
        row.extend(" " * (column - len(row)))
        row[column:column + len(text)] = list(text)
    return ["".join(chars).rstrip() for _, chars in sorted(rows.items())]


async def capture(size: tuple[int, int], first: Path, second: Path) -> dict[str, str]:
    from sparknet_tui.app import SparkNetApp

    app = SparkNetApp()
    shots: dict[str, str] = {}
    async with app.run_test(size=size) as pilot:
        async def settled() -> None:
            for _ in range(3):
                await app.workers.wait_for_complete()
                await pilot.pause(0.2)

        async def shoot(name: str) -> None:
            await settled()
            shots[name] = app.export_screenshot(title=f"SparkNet · {name}")

        await shoot("runs")
        await pilot.press("question_mark")
        await shoot("help")
        await pilot.press("escape")
        await pilot.press("n")
        await settled()
        await asyncio.sleep(1.0)  # the New run screen's engine check answers from a subprocess
        await shoot("new-run")
        await pilot.press("escape")
        app.open_live(first)
        await shoot("live")
        app.action_show_runs()
        app.open_evaluation(first)
        await shoot("evaluation")
        app.action_show_runs()
        app.open_compare(first, second)
        await shoot("compare")
        app.action_show_runs()
        await pilot.press("w")
        await shoot("sweeps")
    return shots


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for the SVG files")
    parser.add_argument("--size", default="120x40", help="terminal size, COLUMNSxROWS (default 120x40)")
    parser.add_argument("--text", action="store_true", help="also print each screen as text")
    args = parser.parse_args(argv)
    columns, rows = (int(n) for n in args.size.split("x"))
    with tempfile.TemporaryDirectory() as folder:
        logs = Path(folder) / "logs"
        logs.mkdir()
        os.environ["SPARKNET_LOGS"] = str(logs)
        first, second = make_runs(logs)
        shots = asyncio.run(capture((columns, rows), first, second))
    args.out.mkdir(parents=True, exist_ok=True)
    for name in SCREENS:
        (args.out / f"{name}.svg").write_text(shots[name], encoding="utf-8")
        if args.text:
            print(f"--- {name} ({args.size})")
            print("\n".join(row.rstrip() for row in screen_rows(shots[name])))
    print(f"wrote {len(SCREENS)} screenshots to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
