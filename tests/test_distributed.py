"""Two processes through torchrun and gloo on CPU: the same code path as several GPUs."""

import socket

import pytest
from cli_helpers import losses, reaches_step, sparknet

from engine.files import read_json, read_jsonl

# 20 steps of 2 x 8 x 128 tokens; with 2 processes each accumulates 1 micro-batch per step
COMMON = ["--profile", "tiny-cpu", "--set", "batch.grad_accum=2", "--set", "run.log_every=1",
          "--set", "run.eval_every=10", "--set", "run.eval_tokens=4096", "--set", "run.final_eval=false",
          "--set", "run.tokens=40_960", "--set", "run.checkpoint_every=4"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_and_resume(logs):
    sparknet("train", "--name", "single", *COMMON)
    single = losses(next(logs.glob("*-single")))
    assert sorted(single) == list(range(1, 21))

    two = ["--nproc-per-node", "2", "--master-port", str(free_port())]
    run_id = sparknet("train", "--name", "ddp", *COMMON, *two, "--detach").stdout.strip().splitlines()[-1]
    run = logs / run_id
    assert reaches_step(run, 6)
    assert "stopped" in sparknet("stop", run_id, "--wait", "300").stdout
    stopped_at = read_json(run / "status.json")["step"]
    assert 6 <= stopped_at < 20
    sparknet("resume", run_id)
    assert read_json(run / "status.json")["state"] == "finished"
    assert len([d for d in logs.iterdir() if d.is_dir()]) == 2  # one run directory for both processes
    started = [e for e in read_jsonl(run / "events.jsonl") if e["event"] == "started"]
    assert started and all(e["world"] == 2 for e in started)
    ddp = losses(run)
    assert sorted(ddp) == list(range(1, 21))
    # the two ranks together see exactly the single process's windows each step (disjoint halves),
    # so the mean loss is the same up to float32 summation order
    for step in range(1, 21):
        assert ddp[step] == pytest.approx(single[step], abs=2e-3), (step, ddp[step], single[step])


def test_process_count_must_divide_accumulation(logs):
    proc = sparknet("train", *COMMON, "--nproc-per-node", "3", check=False)
    assert proc.returncode == 2
    assert "batch.grad_accum (2) must be divisible by the 3 processes" in proc.stderr
