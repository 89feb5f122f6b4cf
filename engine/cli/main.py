"""The `sparknet` command. Every verb exits non-zero with one line on a user error."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from engine import SparkNetError, __version__
from engine.config.loading import PROJECT_ROOT, load_mix, load_profile
from engine.files import read_json, wait_for
from engine.formatting import fmt_age, fmt_count, fmt_duration, fmt_float
from engine.runs.lock import ENV_FD, RunLock, lock_held
from engine.runs.rundir import (
    LIVE_STATES,
    RunDir,
    create_run,
    effective_status,
    list_runs,
    logs_dir,
    new_run_id,
    request_stop,
    resolve_run,
    sharing_warning,
)

# engine.evaluate.PROTOCOLS, spelled here so that `sparknet --help` does not import torch (a test holds them equal)
EVAL_PROTOCOLS = ("standard", "sparknet-2000", "held-out")


PROFILE_HELP = "a profile in profiles/ by name (e.g. tiny-cpu) or a .toml file"
SET_HELP = "change one profile key for this run, e.g. run.tokens=2_000_000 (repeatable)"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="sparknet", description="Pretrain a GPT-2-style model and watch it learn. With no verb, `sparknet` "
        "opens the control panel (`sparknet --run RUN` opens a run on its Live screen, `--logs DIR` reads runs "
        "from another folder).")
    ap.add_argument("--version", action="version", version=f"sparknet {__version__}")
    sub = ap.add_subparsers(dest="verb", metavar="VERB")

    p = sub.add_parser("prepare", help="tokenize and cache a mix's sources")
    p.add_argument("--mix", required=True)
    p.add_argument("--tokens", type=int, default=None, help="training tokens to prepare (default: see docs)")

    p = sub.add_parser("train", help="start a training run")
    p.add_argument("--profile", required=True, help=PROFILE_HELP)
    p.add_argument("--mix", default=None, help="overrides the profile's mix")
    p.add_argument("--name", default=None, help="a name for the run id")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help=SET_HELP)
    p.add_argument("--detach", action="store_true", help="print the run id and return; the run lives on")
    p.add_argument("--check", action="store_true",
                   help="check the profile, mix, sources and tokenizer, then exit without starting")
    p.add_argument("--nproc-per-node", type=int, default=None, help="processes (GPUs) on this node")
    p.add_argument("--nnodes", type=int, default=None, help="machines taking part (two linked DGX Sparks: 2)")
    p.add_argument("--node-rank", type=int, default=None, help="this machine's place among them, from 0")
    p.add_argument("--master-addr", default=None, help="address of the machine with node rank 0")
    p.add_argument("--master-port", type=int, default=None, help="a free port on that machine")

    sub.add_parser("runs", help="every run, newest first: state, progress, loss, speed, age")

    p = sub.add_parser("stop", help="checkpoint, then stop a run")
    p.add_argument("run")
    p.add_argument("--wait", type=float, default=120.0, help="seconds to wait for the checkpoint (0: do not wait)")

    p = sub.add_parser("resume", help="continue a run from its newest good checkpoint")
    p.add_argument("run")
    p.add_argument("--detach", action="store_true", help="return at once; the run lives on")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="change an optimizer, schedule, interval or thermal key from here on (recorded in run.toml)")

    _add_eval(sub)
    _add_bench(sub)
    _add_doctor(sub)

    p = sub.add_parser("export", help="write a run's model in Hugging Face format, or as a GGUF file")
    p.add_argument("run")
    p.add_argument("dir")
    p.add_argument("--format", choices=["hf", "gguf"], default="hf",
                   help="hf: config.json + model.safetensors for transformers (default); gguf: one file for "
                        "llama.cpp and Ollama, tokenizer inside")
    p.add_argument("--gguf-type", choices=["f16", "bf16", "q8_0"], default="f16",
                   help="the GGUF file's matrices: f16 (default), bf16 or q8_0 (8-bit, half the size)")

    p = sub.add_parser("_run")  # the training process itself; no help, so it is not listed
    p.add_argument("run_dir")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--log-to-file", action="store_true")
    return ap


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="WikiText-2 evaluation against the baselines")
    p.add_argument("target", help="run id, run directory or model folder")
    p.add_argument("--protocol", choices=EVAL_PROTOCOLS, default=None,
                   help="one protocol (default: standard and sparknet-2000 for a GPT-2-tokenized model, held-out "
                        "for a run with its own tokenizer, such as the demo's)")
    p.add_argument("--stride", type=int, default=None, help="sliding-window stride (default: half the context, at most 512)")
    p.add_argument("--wikitext", default=None, help="folder with wiki.test.raw and wiki.valid.raw")
    p.add_argument("--baselines", action="store_true", help="evaluate GPT-2 and CodeLion 70M live when they load")
    p.add_argument("--baseline-dir", action="append", default=[], metavar="NAME=DIR")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-samples", action="store_true")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=50)
    p.add_argument("--max-tokens", type=int, default=None, help="score at most this many tokens")
    p.add_argument("--tasks", default=None, metavar="T,...|card",
                   help="downstream benchmarks through lm-evaluation-harness instead of perplexity, e.g. "
                        "hellaswag,piqa; card = the codelion/gpt-2-70m card's six")
    p.add_argument("--task-path", default=None, metavar="DIR", help="a folder of lm-eval task YAML files of your own")
    p.add_argument("--limit", type=int, default=None, help="with --tasks: at most this many examples per task")


def _add_doctor(sub) -> None:
    p = sub.add_parser("doctor", help="check this machine before a long run: torch build, GPU, fast paths, ceiling")
    p.add_argument("--profile", default="codelion-70m", help=PROFILE_HELP + " whose fast paths to prove "
                   "(default codelion-70m)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="measure training throughput")
    p.add_argument("--profile", required=True, help=PROFILE_HELP)
    p.add_argument("--mix", default=None, help="overrides the profile's mix")
    p.add_argument("--steps", type=int, default=50, help="training steps to time (default 50)")
    p.add_argument("--warmup-steps", type=int, default=None,
                   help="first steps left out of the figures, compilation included (default: a third of --steps, at most 10)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
    p.add_argument("--baseline", choices=["hf-trainer"], default=None,
                   help="also time Hugging Face's Trainer on the same model, data and batch")
    p.add_argument("--baseline-micro-batch", type=int, default=None, metavar="N",
                   help="the Trainer's micro-batch (default: the largest divisor of the step's sequences up to 24)")
    p.add_argument("--eval", action="store_true", help="also report validation loss and WikiText-2 perplexity")
    p.add_argument("--json-out", default=None, metavar="FILE", help="write the figures as JSON to FILE too")


# ------------------------------------------------------------------ launching


def _dist_overrides(args) -> list[str]:
    out = []
    for opt, key in (("nproc_per_node", "dist.nproc_per_node"), ("nnodes", "dist.nnodes"),
                     ("node_rank", "dist.node_rank"), ("master_port", "dist.master_port")):
        if getattr(args, opt, None) is not None:
            out.append(f"{key}={getattr(args, opt)}")
    if getattr(args, "master_addr", None):
        out.append(f'dist.master_addr="{args.master_addr}"')
    return out


def worker_command(run_dir: Path, resume: bool, dist: dict, log_to_file: bool) -> list[str]:
    tail = ["_run", str(run_dir)] + (["--resume"] if resume else []) + (["--log-to-file"] if log_to_file else [])
    if dist["nproc_per_node"] * dist["nnodes"] <= 1:
        return [sys.executable, "-m", "engine.cli", *tail]
    return [
        sys.executable, "-m", "torch.distributed.run",
        f"--nproc_per_node={dist['nproc_per_node']}", f"--nnodes={dist['nnodes']}",
        f"--node_rank={dist['node_rank']}", f"--master_addr={dist['master_addr']}",
        f"--master_port={dist['master_port']}",
        "-m", "engine.cli", *tail,
    ]


def launch(run_dir: Path, resume: bool, detach: bool, lock: RunLock) -> int:
    """Start the training process for a run whose lock this process holds; the lock passes to the trainer."""
    from engine.config.loading import read_toml

    dist = read_toml(run_dir / "run.toml")["profile"].get("dist", {})
    dist = {"nproc_per_node": 1, "nnodes": 1, "node_rank": 0, "master_addr": "127.0.0.1", "master_port": 29500,
            **dist}
    single = dist["nproc_per_node"] * dist["nnodes"] <= 1
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env[ENV_FD] = str(lock.fd) if single else "parent"  # torchrun holds it for its workers
    project_root = str(PROJECT_ROOT)
    env["PYTHONPATH"] = project_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if detach:
        log = open(run_dir / "train.log", "ab")
        proc = subprocess.Popen(worker_command(run_dir, resume, dist, log_to_file=False), stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env,
                                cwd=project_root, pass_fds=(lock.fd,))
        log.close()
        rd = RunDir(run_dir)
        if rd.status().get("state") not in ("running",):
            rd.update_status(pid=proc.pid)
        print(run_dir.name)
        return 0
    if single:
        from engine.train.worker import run_training

        return run_training(run_dir, resume=resume, log_to_file=True, lock=lock)
    return subprocess.call(worker_command(run_dir, resume, dist, log_to_file=True), env=env, cwd=project_root,
                           pass_fds=(lock.fd,))


def cmd_train(args) -> int:
    from engine.train.preflight import check_run_inputs

    overrides = list(args.overrides) + _dist_overrides(args)
    profile = load_profile(args.profile, overrides)
    mix_name = args.mix or profile.mix
    if not mix_name:
        raise SparkNetError(f"{profile.source}: no mix given; add mix = \"NAME\" to the profile or pass --mix NAME")
    mix = load_mix(mix_name)
    run_id = new_run_id(profile.name, args.name)
    check_run_inputs(profile, mix)
    if args.check:
        print(f"ready: profile {profile.name}, mix {mix.name}, {profile.steps:,} steps")
        return 0
    warn_about_live_runs()
    lock = create_run(profile, mix, overrides, logs_dir() / run_id)
    try:
        return launch(logs_dir() / run_id, resume=False, detach=args.detach, lock=lock)
    finally:
        lock.release()


def warn_about_live_runs(but: str = "") -> None:
    """Two runs on one device each go at about half speed: say so before a second one starts."""
    live = [r.run_id for r in list_runs() if r.run_id != but and r.status.get("state") in LIVE_STATES]
    if live:
        print(f"sparknet: warning: {sharing_warning(live)}", file=sys.stderr)


def cmd_resume(args) -> int:
    from engine.runs.resume import apply_resume_overrides, checkpoint_size
    from engine.train.preflight import check_free_space

    run_dir = resolve_run(args.run)
    lock = RunLock.acquire(run_dir)  # refuses at once when a trainer owns the run
    try:
        state = (read_json(run_dir / "status.json") or {}).get("state")
        if state == "finished":
            raise SparkNetError(f"run {run_dir.name} already finished; start a new run to train further")
        check_free_space(run_dir, "a checkpoint of this run", checkpoint_size(run_dir))
        if args.overrides:
            apply_resume_overrides(run_dir, args.overrides)
        warn_about_live_runs(but=run_dir.name)
        rd = RunDir(run_dir)
        rd.update_status(state="preparing", phase="preparing data", pid=os.getpid(), error=None)
        rd.clear_stop()
        return launch(run_dir, resume=True, detach=args.detach, lock=lock)
    finally:
        lock.release()


def cmd_stop(args) -> int:
    run_dir = resolve_run(args.run)
    status = effective_status(run_dir)
    if status.get("state") not in LIVE_STATES:
        raise SparkNetError(f"run {run_dir.name} is {status.get('state')}, not running; nothing to stop")
    request_stop(run_dir)
    if args.wait <= 0:
        print(f"stop requested for {run_dir.name}")
        return 0
    # done when the state says so and the trainer has let go of the run, so a resume right after works
    done = wait_for(lambda: effective_status(run_dir).get("state") not in LIVE_STATES and not lock_held(run_dir),
                    args.wait, 0.2)
    final = effective_status(run_dir)
    if not done:
        raise SparkNetError(f"run {run_dir.name} did not stop within {args.wait:.0f} s; it will stop at its next step")
    print(f"{run_dir.name}: {final.get('state')} at step {final.get('step')}")
    return 0 if final.get("state") in ("stopped", "finished") else 1


RUNS_COLUMNS = ("run", "state", "progress", "loss", "val", "tok/s", "started")


def runs_table_rows(runs, now: float) -> list[list[str]]:
    """One row of plain text a run, newest first, as the panel lists them."""
    rows = []
    for r in sorted(runs, key=lambda r: r.run_id, reverse=True):  # run ids start with their creation time
        s = r.status
        steps, step = s.get("steps") or 0, s.get("step", 0)
        state = s.get("state", "?") + (" (thermal pause)" if s.get("paused") else "")
        if s.get("phase") == "compiling" and s.get("state") == "running":
            state += " (compiling)"  # the first step: minutes on a small GPU, and no speed yet
        if s.get("stalled_s"):
            state += f" {fmt_duration(s['stalled_s'])}"
        rows.append([r.run_id, state, f"{step}/{steps} {100 * step / steps:.0f}%" if steps else str(step),
                     fmt_float(s.get("loss"), 3), fmt_float(s.get("val_loss"), 3), fmt_count(s.get("tokens_per_s")),
                     fmt_age(s.get("started_at"), now)])
    return rows


def cmd_runs(args) -> int:
    import time

    runs = list_runs()
    if not runs:
        print(f"no runs in {logs_dir()}")
        return 0
    rows = [list(RUNS_COLUMNS)] + runs_table_rows(runs, time.time())
    # columns as wide as their widest cell: a run id is never cut, so it can be copied from here
    widths = [max(len(row[i]) for row in rows) for i in range(len(RUNS_COLUMNS))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def cmd_export(args) -> int:
    from engine.data.tokenizer import load_tokenizer
    from engine.models.checkpoint import load_latest_model
    from engine.models.export_hf import export_hf

    run_dir = resolve_run(args.run)
    model, tok_spec, _ = load_latest_model(run_dir, report=print)
    out, tokenizer = Path(args.dir).expanduser(), load_tokenizer(tok_spec)
    if args.format == "hf":
        export_hf(model, out, tokenizer)
        print(f"wrote {out} (load with transformers.AutoModelForCausalLM.from_pretrained)")
        return 0
    import tempfile

    from engine.models.export_gguf import export_gguf

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out) as staging:
        export_hf(model, Path(staging), tokenizer)
        path = export_gguf(Path(staging), out / f"{run_dir.name}-{args.gguf_type}.gguf", tokenizer, args.gguf_type)
    print(f"wrote {path} (llama-cli -m {path.name}; for Ollama a Modelfile with `FROM ./{path.name}`)")
    return 0


def cmd_eval(args) -> int:
    from engine.evaluate import eval_command

    dirs = {}
    for item in args.baseline_dir:
        if "=" not in item:
            raise SparkNetError(f"--baseline-dir {item}: expected NAME=DIR, for example gpt2=~/models/gpt2")
        k, v = item.split("=", 1)
        dirs[k.strip()] = os.path.expanduser(v.strip())
    tasks = None
    if args.tasks is not None:
        from engine.evaluate.tasks import parse_tasks

        tasks = parse_tasks(args.tasks)
    from engine.train.interrupt import Interrupted, interruptible

    try:
        # Ctrl-C or SIGTERM (the panel's stop) ends it at once: eval.json is written only at the end
        with interruptible(lambda: False):
            return eval_command(args.target, protocol=args.protocol, stride=args.stride, wikitext=args.wikitext,
                                baselines=args.baselines, baseline_dirs=dirs, device=args.device,
                                samples=not args.no_samples, temperature=args.temperature, top_k=args.top_k,
                                max_tokens=args.max_tokens, tasks=tasks, task_path=args.task_path,
                                limit=args.limit)
    except Interrupted:
        print("sparknet eval: stopped before the end; eval.json is as it was", file=sys.stderr)
        return 130


def cmd_prepare(args) -> int:
    from engine.cli.prepare import prepare_command

    return prepare_command(args.mix, args.tokens)


def cmd_bench(args) -> int:
    from engine.cli.throughput import bench_command

    return bench_command(args)


def cmd_doctor(args) -> int:
    from engine.cli.doctor import doctor_command

    return doctor_command(args)


def cmd_worker(args) -> int:
    from engine.train.worker import run_training

    return run_training(Path(args.run_dir), resume=args.resume, log_to_file=args.log_to_file)


VERBS = {
    "prepare": cmd_prepare, "train": cmd_train, "runs": cmd_runs, "stop": cmd_stop, "resume": cmd_resume,
    "eval": cmd_eval, "bench": cmd_bench, "export": cmd_export, "doctor": cmd_doctor, "_run": cmd_worker,
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
    except SparkNetError as e:
        print(f"sparknet {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130

