"""Messages from worker threads to the screens: workers read files or run the CLI, then post one of these."""

from __future__ import annotations

from pathlib import Path

from textual.message import Message

from sparknet_tui.commands import CliResult
from sparknet_tui.scan import ScanResult
from sparknet_tui.watch import RunView


class RunsScanned(Message):
    def __init__(self, result: ScanResult) -> None:
        super().__init__()
        self.result = result


class CeilingsRead(Message):
    def __init__(self, saved: dict) -> None:
        super().__init__()
        self.saved = saved


class RunPolled(Message):
    def __init__(self, view: RunView) -> None:
        super().__init__()
        self.view = view


class EvalLoaded(Message):
    def __init__(self, run_dir: Path, data: dict | None, problem: str | None, progress: dict | None = None) -> None:
        super().__init__()
        self.run_dir = run_dir
        self.data = data
        self.problem = problem
        self.progress = progress  # eval-progress.json of an evaluation running now


class CommandDone(Message):
    """A `sparknet` verb returned. verb: train | stop | resume | eval | delete."""

    def __init__(self, verb: str, run_dir: Path | None, result: CliResult) -> None:
        super().__init__()
        self.verb = verb
        self.run_dir = run_dir
        self.result = result


class RunInputsChecked(Message):
    """`sparknet train --check` answered for the form's profile, mix and overrides (`key`)."""

    def __init__(self, key: tuple, result: CliResult) -> None:
        super().__init__()
        self.key = key
        self.result = result


# ---------------------------------------------------------------- intents: a screen asks, the app acts


class RunIntent(Message):
    """Something a screen asks the app to do with one run; `state` is the state the screen showed."""

    def __init__(self, run_dir: Path, state: str = "") -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self.state = state


class OpenLive(RunIntent):
    pass


class OpenEvaluation(RunIntent):
    pass


class StopRun(RunIntent):
    pass


class ResumeRun(RunIntent):
    pass


class EvaluateRun(RunIntent):
    pass


class StopEvaluation(RunIntent):
    pass


class DeleteRun(RunIntent):
    pass


class OpenNewRun(Message):
    pass


class OpenCompare(Message):
    def __init__(self, run_a: Path, run_b: Path) -> None:
        super().__init__()
        self.run_a, self.run_b = Path(run_a), Path(run_b)


class StartRun(Message):
    def __init__(self, profile: str, mix: str, overrides: list[str], name: str | None) -> None:
        super().__init__()
        self.profile, self.mix, self.overrides, self.name = profile, mix, list(overrides), name


class CliCommand(Message):
    """Run `sparknet ARGS` for a screen (a sweep's start, stop, resume or save; saving a range test's rate)."""

    def __init__(self, args: list[str]) -> None:
        super().__init__()
        self.args = list(args)


class OpenSweeps(Message):
    pass


class PanelProblem(Message):
    """Something went wrong inside the panel itself; shown as a notification."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
