"""scripts/setup.sh picks the torch build for the machine: checked by its dry run for three kinds of machine."""

import os
import subprocess

import pytest
from cli_helpers import PROJECT, scaled


def dry_run(platform: str, gpu: str, driver_cuda: str = "") -> str:
    env = {k: v for k, v in os.environ.items() if k != "SPARKNET_TORCH"}
    env.update(SPARKNET_SETUP_PLATFORM=platform, SPARKNET_SETUP_GPU=gpu, SPARKNET_SETUP_DRIVER_CUDA=driver_cuda)
    proc = subprocess.run(["bash", "scripts/setup.sh", "--dry-run"], cwd=PROJECT, env=env, capture_output=True,
                          text=True, timeout=scaled(30))
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("platform, gpu, driver_cuda, expected", [
    # a DGX Spark: aarch64, the GB10, a CUDA 13 driver; a plain `pip install torch` would be CPU-only here
    ("aarch64", "NVIDIA GB10", "13.0", "torch>=2.10 --index-url https://download.pytorch.org/whl/cu130"),
    ("x86_64", "NVIDIA H100 80GB HBM3", "12.8", "torch>=2.10 --index-url https://download.pytorch.org/whl/cu128"),
    ("x86_64", "NVIDIA H200", "13.0", "torch>=2.10 --index-url https://download.pytorch.org/whl/cu130"),
    ("x86_64", "", "", "torch==2.13.0"),  # no GPU: the CPU build, never a CUDA download
    ("aarch64", "", "", "torch==2.13.0"),
])
def test_the_dry_run_names_the_build_for_each_machine(platform, gpu, driver_cuda, expected):
    out = dry_run(platform, gpu, driver_cuda)
    assert f"platform {platform}, GPU {gpu or 'none'}" in out
    assert out.strip().splitlines()[-1] == f"torch: pip install {expected}"


def test_the_dry_run_changes_nothing():
    before = sorted(p.name for p in PROJECT.iterdir())
    dry_run("aarch64", "NVIDIA GB10", "13.0")
    assert sorted(p.name for p in PROJECT.iterdir()) == before
