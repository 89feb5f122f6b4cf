"""`sparknet doctor` on the CPU: what it prints and saves, the fix it names for a CPU build on a GPU machine, and the
projection its figures give."""

import json
import os
import stat

import pytest
import torch
from cli_helpers import sparknet

from engine.config.ceilings import REFERENCE, measured_peak_flops, projected_tokens_per_s, save_ceilings


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARKNET_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


CPU_BUILD = pytest.mark.skipif(torch.version.cuda is not None, reason="what a CPU build of torch says")


@pytest.mark.slow
@CPU_BUILD
def test_doctor_on_the_cpu_names_the_build_each_fast_path_and_saves_the_ceiling(cache):
    proc = sparknet("doctor", "--profile", "tiny-cpu")
    out = proc.stdout
    assert "(CPU build)" in out and "device      cpu" in out
    assert "MemAvailable" in out
    lines = {line.split()[0] + " " + line.split()[1]: line for line in out.splitlines() if line.startswith("  ")}
    assert "off in the profile (run.compile = false)" in lines["torch.compile off"]
    assert "no FP8 tensor cores off CUDA" in lines["FP8 output"]
    assert "fp32 on CPU" in lines["bf16 residual"]
    # every piece's state starts in one column, whatever the length of its name
    from engine.kernels.choice import TITLES
    pieces = [line for line in out.splitlines() if any(line.startswith("  " + t + " ") for t in TITLES.values())]
    assert len(pieces) == len(TITLES)
    assert len({len(line) - len(line[2:].split("  ", 1)[1].lstrip()) for line in pieces}) == 1, pieces
    saved = json.loads((cache / "ceilings.json").read_text())["cpu"]
    assert saved["matmul_tflops"] > 0 and saved["bandwidth_gbs"] > 0
    # a CPU's ceiling in GFLOP/s, never "0.0 TFLOP/s"
    assert f"ceiling     {saved['matmul_tflops'] * 1000:,.1f} GFLOP/s measured" in out and "0.0 TFLOP/s" not in out
    assert "problem:" not in out and proc.returncode == 0
    assert "attention   N/A on the CPU" in out


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_doctor_times_each_attention_kernel_at_the_profiles_shape_and_names_sdpas_pick():
    from engine.config.loading import load_profile
    from engine.kernels.attention import attention_line, attention_timings

    profile = load_profile("codelion-70m", ["batch.micro_batch=8"])
    timings = attention_timings(profile, torch.device("cuda"), use_bf16=True)
    assert set(timings) == {"cuDNN", "flash", "memory-efficient", "SDPA's pick"}
    assert isinstance(timings["SDPA's pick"], float) and timings["SDPA's pick"] > 0
    assert any(isinstance(ms, float) for name, ms in timings.items() if name != "SDPA's pick")
    line = attention_line(profile, torch.device("cuda"), use_bf16=True)
    assert "8x8x1024x64, causal, bf16" in line and "SDPA picks about" in line


@pytest.mark.slow
@CPU_BUILD
def test_a_cpu_build_on_a_machine_with_an_nvidia_gpu_is_a_problem_with_its_fix(cache, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"  # what the real one prints for -L on a DGX Spark
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA GB10 (UUID: GPU-5d6f0000-0000-0000-0000-000000000000)'\n")
    smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    proc = sparknet("doctor", "--profile", "tiny-cpu", check=False, env=env)
    assert proc.returncode == 1
    problem = [line for line in proc.stdout.splitlines() if line.startswith("problem:")]
    assert problem == ["problem: torch is a CPU build but this machine has an NVIDIA GPU (NVIDIA GB10); "
                       "./scripts/setup.sh replaces it with a CUDA build from PyTorch's own wheel index"]


def test_a_saved_ceiling_is_the_peak_for_mfu_of_that_device_only(cache):
    assert measured_peak_flops("NVIDIA GB10") is None
    save_ceilings("NVIDIA GB10", {"matmul_tflops": 92.0, "bandwidth_gbs": 240.0})
    assert measured_peak_flops("NVIDIA GB10") == pytest.approx(92e12)
    assert measured_peak_flops("NVIDIA H200") is None


def test_the_projection_is_the_reference_at_its_own_ceilings_and_scales_with_each_bound():
    ref = REFERENCE
    at_ref = projected_tokens_per_s(ref["matmul_tflops"], ref["bandwidth_gbs"], ref["flops_per_token"])
    assert at_ref == pytest.approx(ref["tokens_per_s"])
    # half the arithmetic and half the bandwidth: half the speed
    half = projected_tokens_per_s(ref["matmul_tflops"] / 2, ref["bandwidth_gbs"] / 2, ref["flops_per_token"])
    assert half == pytest.approx(ref["tokens_per_s"] / 2)
    # a fast path the device cannot run costs what the reference measured for it
    no_fp8 = projected_tokens_per_s(ref["matmul_tflops"], ref["bandwidth_gbs"], ref["flops_per_token"], ["fp8_head"])
    assert no_fp8 == pytest.approx(ref["tokens_per_s"] * ref["without"]["fp8_head"])
