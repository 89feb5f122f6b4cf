"""Starting, resuming and stopping runs: `sparknet train`, `resume`, `stop` and the training process's own verb."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from engine import SparkNetError
from engine.config.loading import PROJECT_ROOT, load_run_inputs
from engine.files import read_json, wait_for
from engine.formatting import fmt_steps
from engine.runs.lock import ENV_FD, RunLock, lock_held
from engine.runs.reader import list_runs
from engine.runs.records import Phase
from engine.runs.rundir import (
    RunWriter,
    create_run,
    effective_status,
    load_run,
    logs_dir,
    new_run_id,
    request_stop,
    resolve_run,
    sharing_warning,
)
from engine.runs.status import RunStatus, State


def _dist_overrides(args) -> list[str]:
    out = []
    for opt, key in (("nproc_per_node", "dist.nproc_per_node"), ("nnodes", "dist.nnodes"),
                     ("node_rank", "dist.node_rank"), ("master_port", "dist.master_port")):
        if getattr(args, opt, None) is not None:
            out.append(f"{key}={getattr(args, opt)}")
    if getattr(args, "master_addr", None):
        out.append(f'dist.master_addr="{args.master_addr}"')
    return out


def worker_command(run_dir: Path, resume: bool, dist: dict, log_to_file: bool, from_scratch: bool = False) -> list[str]:
    tail = ["_run", str(run_dir)] + (["--resume"] if resume else []) + (["--log-to-file"] if log_to_file else [])
    tail += ["--from-scratch"] if from_scratch else []
    if dist["nproc_per_node"] * dist["nnodes"] <= 1:
        return [sys.executable, "-m", "engine.cli", *tail]
    return [
        sys.executable, "-m", "torch.distributed.run",
        f"--nproc_per_node={dist['nproc_per_node']}", f"--nnodes={dist['nnodes']}",
        f"--node_rank={dist['node_rank']}", f"--master_addr={dist['master_addr']}",
        f"--master_port={dist['master_port']}",
        "-m", "engine.cli", *tail,
    ]


def launch(run_dir: Path, resume: bool, detach: bool, lock: RunLock, from_scratch: bool = False) -> int:
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
        command = worker_command(run_dir, resume, dist, log_to_file=False, from_scratch=from_scratch)
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, env=env, cwd=project_root, pass_fds=(lock.fd,))
        log.close()
        rd = RunWriter(run_dir)
        if rd.status().get("state") not in ("running",):
            rd.update_status(pid=proc.pid)
        print(run_dir.name)
        return 0
    if single:
        from engine.train.worker import run_training

        return run_training(run_dir, resume=resume, log_to_file=True, lock=lock, from_scratch=from_scratch)
    return subprocess.call(worker_command(run_dir, resume, dist, log_to_file=True,
                                          from_scratch=from_scratch), env=env, cwd=project_root,
                           pass_fds=(lock.fd,))


def cmd_train(args) -> int:
    from engine.train.preflight import check_run, check_surroundings

    overrides = list(args.overrides) + _dist_overrides(args)
    profile, mix = load_run_inputs(args.profile, args.mix, overrides)
    run_id = new_run_id(profile.name, args.name)
    ready = "; ".join([check_run(profile, mix), *check_surroundings()])
    if args.check:
        steps = fmt_steps(profile.steps)
        print(f"ready: profile {profile.name}, mix {mix.name}, {steps}, {ready}")
        return 0
    warn_about_live_runs()
    lock = create_run(profile, mix, overrides, logs_dir() / run_id)
    try:
        return launch(logs_dir() / run_id, resume=False, detach=args.detach, lock=lock)
    finally:
        lock.release()


def warn_about_live_runs(but: str = "") -> None:
    """Two runs on one device each go at about half speed: say so before a second one starts."""
    live = [r.run_id for r in list_runs() if r.run_id != but and r.status.live]
    if live:
        print(f"sparknet: warning: {sharing_warning(live)}", file=sys.stderr)


def cmd_resume(args) -> int:
    from engine.runs.resume import apply_resume_overrides, checkpoint_size
    from engine.train.preflight import check_free_space, check_run, check_surroundings

    run_dir = resolve_run(args.run)
    lock = RunLock.acquire(run_dir)  # refuses at once when a trainer owns the run
    try:
        profile, mix, _ = load_run(run_dir)  # a run.toml that cannot start a trainer is refused before any write
        state = (read_json(run_dir / "status.json") or {}).get("state")
        if state == "finished":
            raise SparkNetError(f"run {run_dir.name} already finished; start a new run to train further")
        check_run(profile, mix)  # as `train` checks: a source moved or gone since is said before the run changes
        check_surroundings()
        check_free_space(run_dir, "a checkpoint of this run", checkpoint_size(run_dir))
        if not args.from_scratch:
            refuse_to_start_over(run_dir)
        if args.overrides:
            apply_resume_overrides(run_dir, args.overrides)
        warn_about_live_runs(but=run_dir.name)
        rd = RunWriter(run_dir)
        rd.update_status(state=State.PREPARING, phase=Phase.PREPARING_DATA, pid=os.getpid(), error=None)
        rd.clear_stop()
        return launch(run_dir, resume=True, detach=args.detach, lock=lock, from_scratch=args.from_scratch)
    finally:
        lock.release()


def refuse_to_start_over(run_dir: Path) -> None:
    """A run whose checkpoints all fail to verify would train again from step 0 under its own name: refused,
    naming each one and why, unless the user asks for exactly that."""
    from engine.models.checkpoint import (
        load_newest,
        recover_interrupted_saves,
        verify_checkpoint,
    )

    recover_interrupted_saves(run_dir)  # this process holds the run's lock: no save is under way
    bad = []
    if load_newest(run_dir, verify_checkpoint, lambda path, e: bad.append(f"{path.name} ({e})")) is None and bad:
        raise SparkNetError(f"run {run_dir.name} has no usable checkpoint: {'; '.join(bad)}; resuming would train it "
                            f"again from step 0, which `sparknet resume {run_dir.name} --from-scratch` does")


def cmd_stop(args) -> int:
    run_dir = resolve_run(args.run)
    status = RunStatus(effective_status(run_dir))
    if not status.live:  # a state no SparkNet wrote reads as unknown, never as the word in the file
        raise SparkNetError(f"run {run_dir.name} is {status.state}, not running; nothing to stop")
    request_stop(run_dir)
    if args.wait <= 0:
        print(f"stop requested for {run_dir.name}")
        return 0
    # done when the state says so and the trainer has let go of the run, so a resume right after works
    done = wait_for(lambda: not RunStatus(effective_status(run_dir)).live and not lock_held(run_dir),
                    args.wait, 0.2)
    final = effective_status(run_dir)
    if not done:
        raise SparkNetError(f"run {run_dir.name} did not stop within {args.wait:.0f} s; it will stop at its next step")
    print(f"{run_dir.name}: {final.get('state')} at step {final.get('step')}")
    return 0 if final.get("state") in ("stopped", "finished") else 1


def cmd_worker(args) -> int:
    from engine.train.worker import run_training

    return run_training(Path(args.run_dir), resume=args.resume, log_to_file=args.log_to_file,
                        from_scratch=args.from_scratch)
