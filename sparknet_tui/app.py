"""The SparkNet control panel: `sparknet` with no arguments opens it.

The panel never trains in its own process. It reads run directories
(engine.rundir, incrementally) and acts on runs only through the `sparknet`
CLI, run as subprocesses from worker threads that post messages back.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from functools import partial
from pathlib import Path
from typing import Callable, Iterable

from textual.app import App, SystemCommand
from textual.screen import Screen

from engine import SparkNetError
from engine.config.paths import checked_folder
from engine.runs.lock import EVAL_LOCK_NAME, lock_held
from engine.runs.rundir import LIVE_STATES, delete_run, logs_dir, resolve_run
from sparknet_tui.commands import (
    CliResult,
    evaluate_run,
    resume_run,
    run_cli,
    start_training,
    stop_evaluation,
    stop_run,
)
from sparknet_tui.context import POLL_INTERVAL_S, PanelContext
from sparknet_tui.messages import (
    CliCommand,
    CommandDone,
    DeleteRun,
    EvaluateRun,
    OpenCompare,
    OpenEvaluation,
    OpenLive,
    OpenNewRun,
    OpenSweeps,
    PanelProblem,
    ResumeRun,
    StartRun,
    StopEvaluation,
    StopRun,
)
from sparknet_tui.screens.compare import CompareScreen
from sparknet_tui.screens.confirm import ConfirmScreen
from sparknet_tui.screens.evaluation import EvaluationScreen
from sparknet_tui.screens.help import HelpScreen
from sparknet_tui.screens.live import LiveScreen
from sparknet_tui.screens.new_run import NewRunScreen
from sparknet_tui.screens.runs import RunsScreen
from sparknet_tui.screens.sweeps import SweepsScreen


class SparkNetApp(App):
    TITLE = "SparkNet"
    CSS_PATH = "panel.tcss"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]

    def __init__(self, *, clock: Callable[[], float] = time.time, poll_interval: float = POLL_INTERVAL_S,
                 open_run: Path | None = None) -> None:
        super().__init__()
        self.context = PanelContext(clock=clock, poll_interval=poll_interval)
        self.open_run = open_run

    def on_mount(self) -> None:
        self.push_screen(RunsScreen(self.context))
        if self.open_run is not None:
            self.open_live(self.open_run)

    # ------------------------------------------------------------ navigation

    def action_back(self) -> None:
        if len(self.screen_stack) > 2:  # the default screen and Runs stay
            self.pop_screen()

    def action_show_runs(self) -> None:
        while len(self.screen_stack) > 2:
            self.pop_screen()

    def open_live(self, run_dir: Path) -> None:
        if isinstance(self.screen, LiveScreen) and self.screen.run_dir == Path(run_dir):
            return
        self.push_screen(LiveScreen(self.context, run_dir))

    def open_evaluation(self, run_dir: Path) -> None:
        self.push_screen(EvaluationScreen(self.context, run_dir))

    def open_new_run(self) -> None:
        self.push_screen(NewRunScreen(self.context))

    def open_compare(self, run_a: Path, run_b: Path) -> None:
        self.push_screen(CompareScreen(self.context, run_a, run_b))

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.screen))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        # Textual's own "Keys" panel lists generic widget keys; the panel's help says what its keys do
        yield from (c for c in super().get_system_commands(screen) if c.title != "Keys")
        seen = set()
        # every key, in the footer or only in the help, is also a command palette entry
        for active in screen.active_bindings.values():
            binding = active.binding
            if not binding.description or binding.action in seen:
                continue
            seen.add(binding.action)
            key = binding.key_display or binding.key.split(",")[0]
            yield SystemCommand(binding.description, f"{binding.description} (key {key})",
                                partial(self.run_action, binding.action, active.node))

    # ------------------------------------------------------------ acting on runs (through the CLI)

    def start_run(self, profile: str, mix: str, overrides: list[str], name: str | None) -> None:
        self.notify(f"starting {profile} with mix {mix}…")
        self._run_command("train", None, partial(start_training, profile, mix, overrides, name))

    def stop_run(self, run_dir: Path, state: str) -> None:
        if state not in LIVE_STATES:
            self.notify(f"{run_dir.name} is {state}: nothing to stop", severity="warning")
            return
        self.notify(f"stopping {run_dir.name} (it checkpoints first)…")
        self._run_command("stop", run_dir, partial(stop_run, run_dir))

    def resume_run(self, run_dir: Path, state: str) -> None:
        if state not in ("stopped", "failed"):
            self.notify(f"{run_dir.name} is {state}: only a stopped or failed run resumes", severity="warning")
            return
        self.notify(f"resuming {run_dir.name}…")
        self._run_command("resume", run_dir, partial(resume_run, run_dir))

    def evaluate_run(self, run_dir: Path) -> None:
        if Path(run_dir) in self.context.evaluating or lock_held(run_dir, EVAL_LOCK_NAME):
            self.notify(f"{run_dir.name} is being evaluated already; its table appears when that ends",
                        severity="warning")
            return
        self.context.evaluating.add(Path(run_dir))
        self.notify(f"evaluating {run_dir.name} (this can take minutes)…")
        self._run_command("eval", run_dir, partial(evaluate_run, run_dir))

    def delete_run(self, run_dir: Path, state: str) -> None:
        if state in LIVE_STATES:
            self.notify(f"{run_dir.name} is {state}: stop it before deleting", severity="warning")
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._run_command("delete", run_dir, partial(_delete, run_dir))

        self.push_screen(ConfirmScreen(f"Delete run {run_dir.name} and all its files (checkpoints, model)?",
                                       yes_label="Delete"), answered)

    # ------------------------------------------------------------ what the screens ask for

    def on_open_live(self, message: OpenLive) -> None:
        self.open_live(message.run_dir)

    def on_open_evaluation(self, message: OpenEvaluation) -> None:
        self.open_evaluation(message.run_dir)

    def on_open_new_run(self, message: OpenNewRun) -> None:
        self.open_new_run()

    def on_open_compare(self, message: OpenCompare) -> None:
        self.open_compare(message.run_a, message.run_b)

    def on_start_run(self, message: StartRun) -> None:
        self.start_run(message.profile, message.mix, message.overrides, message.name)

    def on_stop_run(self, message: StopRun) -> None:
        self.stop_run(message.run_dir, message.state)

    def on_resume_run(self, message: ResumeRun) -> None:
        self.resume_run(message.run_dir, message.state)

    def on_evaluate_run(self, message: EvaluateRun) -> None:
        self.evaluate_run(message.run_dir)

    def on_stop_evaluation(self, message: StopEvaluation) -> None:
        self._run_command("stop eval", message.run_dir, partial(stop_evaluation, message.run_dir))

    def on_open_sweeps(self, message: OpenSweeps) -> None:
        self.push_screen(SweepsScreen(self.context))

    def on_cli_command(self, message: CliCommand) -> None:
        self.notify(f"sparknet {' '.join(message.args)}…")
        self._run_command(message.args[0], None, partial(run_cli, *message.args))

    def on_delete_run(self, message: DeleteRun) -> None:
        self.delete_run(message.run_dir, message.state)

    def _run_command(self, verb: str, run_dir: Path | None, command: Callable[[], CliResult]) -> None:
        def job() -> None:
            try:
                result = command()
            except Exception as e:  # a bug here must show as a message, not end the panel
                result = CliResult(False, f"{verb} failed inside the panel: {e.__class__.__name__}: {e}")
            self.post_message(CommandDone(verb, run_dir, result))

        self.run_worker(job, thread=True, group="cli", exit_on_error=False)

    def on_panel_problem(self, message: PanelProblem) -> None:
        self.notify(message.text, severity="error", timeout=12)

    def on_command_done(self, message: CommandDone) -> None:
        result = message.result
        if message.verb == "eval" and message.run_dir is not None:
            self.context.evaluating.discard(Path(message.run_dir))
        self.notify(result.message, severity="information" if result.ok else "error",
                    timeout=5 if result.ok else 12)
        if message.verb == "train" and result.ok and result.run_id:
            from engine.runs.rundir import logs_dir

            if isinstance(self.screen, NewRunScreen):
                self.pop_screen()
            self.open_live(logs_dir() / result.run_id)
        refresh = getattr(self.screen, "refresh_data", None)
        if callable(refresh):
            refresh()


def _delete(run_dir: Path) -> CliResult:
    try:
        delete_run(run_dir)
    except SparkNetError as e:
        return CliResult(False, str(e))
    except OSError as e:
        return CliResult(False, f"{run_dir}: cannot delete ({e.strerror or e})")
    return CliResult(True, f"deleted {run_dir.name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sparknet", description="The SparkNet control panel.")
    parser.add_argument("--run", help="open this run (id or directory) on the Live screen")
    parser.add_argument("--logs", help="folder of run directories (default: logs/, or $SPARKNET_LOGS)")
    args = parser.parse_args(argv)
    if args.logs:
        os.environ["SPARKNET_LOGS"] = str(Path(args.logs).expanduser().resolve())
    open_run = None
    try:
        if args.logs:
            checked_folder(Path(args.logs).expanduser(), "--logs")
        logs_dir()  # a folder that is a file is said here, not on an empty Runs screen
        if args.run:
            open_run = resolve_run(args.run)
    except SparkNetError as e:
        print(f"sparknet: error: {e}", file=sys.stderr)
        return 2
    if not (sys.stdin.isatty() and sys.stdout.isatty()):  # else it draws into a pipe and waits for keys forever
        print("sparknet: error: the panel needs a terminal; over SSH use `ssh -t HOST sparknet`, and in a script "
              "a verb such as `sparknet runs` (`sparknet --help` lists them)", file=sys.stderr)
        return 2
    app = SparkNetApp(open_run=open_run)
    app.run()
    return app.return_code or 0


if __name__ == "__main__":
    sys.exit(main())
