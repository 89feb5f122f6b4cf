"""The `sparknet` command. Every verb exits non-zero with one line on a user error."""

from __future__ import annotations

import os
import sys

from engine import SparkNetError, one_line, send_to_devnull
from engine.cli.launch import cmd_resume, cmd_stop, cmd_train, cmd_worker
from engine.cli.models import cmd_eval, cmd_export
from engine.cli.parser import build_parser
from engine.cli.runs import cmd_runs


def cmd_prepare(args) -> int:
    from engine.cli.prepare import prepare_command

    return prepare_command(args.mix, args.tokens)


def cmd_bench(args) -> int:
    from engine.cli.throughput import bench_command, json_out_target
    from engine.cli.to_quality import to_quality_command

    args.json_out = json_out_target(args.json_out)  # checked before anything trains
    return to_quality_command(args) if args.to_quality else bench_command(args)


def cmd_sweep(args) -> int:
    from engine.cli.sweep import sweep_command

    return sweep_command(args)


def cmd_lr_find(args) -> int:
    from engine.cli.lr_find import lr_find_command

    return lr_find_command(args)


def cmd_doctor(args) -> int:
    from engine.cli.doctor import doctor_command

    return doctor_command(args)


VERBS = {
    "prepare": cmd_prepare, "train": cmd_train, "runs": cmd_runs, "stop": cmd_stop, "resume": cmd_resume,
    "eval": cmd_eval, "bench": cmd_bench, "export": cmd_export, "doctor": cmd_doctor, "sweep": cmd_sweep,
    "lr-find": cmd_lr_find, "_run": cmd_worker,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verb is None:  # the `sparknet` command opens the panel before it gets here
        print("sparknet: no verb given; `sparknet` alone opens the control panel, `sparknet --help` lists the "
              "verbs", file=sys.stderr)
        return 2
    try:
        return VERBS[args.verb](args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (`sparknet runs | head -3`): nothing is left to say, nor anyone to say it to
        send_to_devnull(sys.stdout)
        return 1
    except Exception as e:
        if os.environ.get("SPARKNET_DEBUG") == "1":
            raise
        code, line = error_line(e)
        print(f"sparknet {args.verb}: error: {line}", file=sys.stderr)
        return code


def error_line(e: Exception) -> tuple[int, str]:
    """The one error boundary: the exit code and the one line a failure is told in. A user's mistake (a
    SparkNetError, naming the file or field and the fix) exits 2; what the machine refused (an OSError: a full
    disk, a read-only or missing place) exits 1 with the path and the reason; anything else exits 1 with what was
    raised, and SPARKNET_DEBUG=1 shows the traceback."""
    if isinstance(e, SparkNetError):
        return 2, str(e)
    if isinstance(e, OSError):
        where = f"{e.filename}: " if e.filename else ""
        return 1, f"{where}{e.strerror or one_line(e)}"
    return 1, f"{one_line(e)} (an unexpected failure: SPARKNET_DEBUG=1 shows where it happened)"
