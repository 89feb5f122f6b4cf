"""`sparknet doctor`: what a long run will meet on this machine, checked in seconds before it starts.

The torch build (and the fix when a CPU build sits on a machine with an NVIDIA
GPU), CUDA, the driver and Triton, the device and its memory, each fast path
of a profile with its state and reason after the same start-up proof a run
does, the measured matrix ceiling and memory bandwidth (saved for MFU), and
the tokens/s these imply for the profile. Every figure a device does not give
reads N/A.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
import time

import torch

from engine.config.ceilings import projected_tokens_per_s, save_ceilings
from engine.config.loading import flops_per_token, load_profile
from engine.config.paths import cache_root, writable_folder
from engine.formatting import NA, fmt_count
from engine.hardware.device import synchronize
from engine.hardware.memory_guard import GIB, read_meminfo
from engine.kernels.attention import attention_line
from engine.kernels.choice import PIECES, TITLES, choose, probe_device
from engine.train.kernel_proof import fallback_message, prove

SETUP_FIX = "./scripts/setup.sh replaces it with a CUDA build from PyTorch's own wheel index"


def measure_matmul_tflops(device: torch.device) -> float:
    """TFLOP/s of a large square matrix product: bf16 8192^3 on CUDA, fp32 1024^3 on the CPU."""
    cuda = device.type == "cuda"
    n, reps, dtype = (8192, 10, torch.bfloat16) if cuda else (1024, 5, torch.float32)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    synchronize(device)
    return 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e12


def measure_bandwidth_gbs(device: torch.device) -> float:
    """GB/s of a device copy, counting the bytes read and the bytes written (1 GiB on CUDA, 256 MiB on the CPU)."""
    n_bytes = (1 << 30) if device.type == "cuda" else (1 << 28)
    src = torch.empty(n_bytes // 4, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    dst.copy_(src)
    synchronize(device)
    reps = 10
    t0 = time.perf_counter()
    for _ in range(reps):
        dst.copy_(src)
    synchronize(device)
    return 2 * n_bytes * reps / (time.perf_counter() - t0) / 1e9


def nvidia_gpu_name() -> str | None:
    """The first NVIDIA GPU `nvidia-smi -L` lists, whatever torch can see; None without one."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    first = out.stdout.strip().splitlines()[:1] if out.returncode == 0 else []
    return first[0].split(":", 1)[-1].split("(UUID")[0].strip() if first else None


def driver_versions() -> tuple[str, str]:
    """(driver version, the CUDA version the driver supports), each N/A where NVML does not answer."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return NA, NA
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        driver = driver.decode() if isinstance(driver, bytes) else str(driver)
    except Exception:
        driver = NA
    try:
        cuda = pynvml.nvmlSystemGetCudaDriverVersion()
        cuda = f"{cuda // 1000}.{cuda % 1000 // 10}"
    except Exception:
        cuda = NA
    return driver, cuda


def environment_lines(problems: list[str]) -> list[tuple[str, str]]:
    gpu = nvidia_gpu_name()
    build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU build"
    rows = [("platform", f"{platform.machine()}, Python {platform.python_version()}"),
            ("torch", f"{torch.__version__} ({build})")]
    if not torch.version.cuda and gpu:
        problems.append(f"torch is a CPU build but this machine has an NVIDIA GPU ({gpu}); {SETUP_FIX}")
    elif torch.version.cuda and not torch.cuda.is_available():
        problems.append("torch is a CUDA build but sees no GPU; check that `nvidia-smi` works and the driver is "
                        "recent enough for CUDA " + str(torch.version.cuda))
    driver, driver_cuda = driver_versions() if gpu else (NA, NA)
    rows.append(("driver", f"{driver} (supports CUDA {driver_cuda})" if driver != NA else NA))
    return rows


def memory_line(facts) -> str:
    info = read_meminfo()
    available, total = info.get("MemAvailable"), info.get("MemTotal")
    host = f"{available / GIB:.1f} of {total / GIB:.1f} GiB available (MemAvailable)" if available and total else NA
    if facts.kind == "cpu":
        return f"system memory: {host}"
    if facts.unified_memory:
        return f"unified with the CPU: {host}; a run stops itself below run.memory_floor_gb"
    return f"{facts.total_memory_b / GIB:.0f} GiB on the GPU; system memory {host}"


def device_lines(facts) -> list[tuple[str, str]]:
    if facts.kind == "cpu":
        return [("device", "cpu (no CUDA GPU visible to torch)"), ("memory", memory_line(facts))]
    major, minor = facts.capability
    smem = f"{facts.shared_memory_per_block / 1024:.0f} KiB" if facts.shared_memory_per_block else NA
    triton = facts.triton_version or "not installed"
    triton += f" ({facts.triton_problem})" if facts.triton_problem else f" (compiles and runs for sm_{major}{minor})"
    return [("device", f"{facts.name}, compute capability {major}.{minor}, {smem} shared memory per block"),
            ("memory", memory_line(facts)), ("Triton", triton)]


def doctor_command(args) -> int:
    profile = load_profile(args.profile, list(args.overrides))
    writable_folder(cache_root(), "SPARKNET_CACHE")  # where the measured ceilings are saved, known before measuring
    problems: list[str] = []
    rows = environment_lines(problems)
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    facts = probe_device(device)
    rows += device_lines(facts)
    for label, value in rows:
        print(f"{label:<11} {value}")
    use_bf16 = profile.run.precision == "bf16" and device.type == "cuda"
    proof = prove(choose(facts, profile.run, profile.model, use_bf16), profile.model, device, use_bf16)
    failed = dict(proof.failures)
    print(f"fast paths  of {profile.name}, each proven against the reference path in {proof.seconds:.1f} s:")
    width = max(len(title) for title in TITLES.values()) + 1
    for piece in PIECES:
        if piece in failed:
            state = "FELL BACK  " + fallback_message(piece, failed[piece])
        else:
            state = "on" if proof.choice.on(piece) else "off        " + proof.choice.reasons.get(piece, "")
        print(f"  {TITLES[piece]:<{width}} {state}")
    print(f"{'attention':<11} {attention_line(profile, device, use_bf16)}")
    print_ceilings(device, facts, profile, [p for p in PIECES if not proof.choice.on(p)])
    for line in problems:
        print(f"problem: {line}")
    return 1 if problems else 0


def fmt_flops(tflops: float) -> str:
    """A CPU's fraction of a TFLOP/s in GFLOP/s, so it never reads as 0.0."""
    return f"{tflops:,.1f} TFLOP/s" if tflops >= 1 else f"{tflops * 1000:,.1f} GFLOP/s"


def print_ceilings(device: torch.device, facts, profile, off: list[str]) -> None:
    tflops, gbs = round(measure_matmul_tflops(device), 4), round(measure_bandwidth_gbs(device), 1)
    kind = "bf16 8192^3 matrix product" if device.type == "cuda" else "fp32 1024^3 matrix product"
    print(f"{'ceiling':<11} {fmt_flops(tflops)} measured ({kind})")
    print(f"{'bandwidth':<11} {gbs:,.0f} GB/s measured (device copy, bytes read and written)")
    path = save_ceilings(facts.name, {"matmul_tflops": tflops, "bandwidth_gbs": gbs, "torch": torch.__version__,
                                      "fast_paths_off": off})
    if device.type == "cuda":
        tps = projected_tokens_per_s(tflops, gbs, flops_per_token(profile.model), off)
        print(f"{'implies':<11} about {fmt_count(tps)} tokens/s for {profile.name} (a projection from these "
              "ceilings and a measured H200 run, not a measurement)")
    else:
        print(f"{'implies':<11} {NA} on the CPU (the projection is for GPUs; a CPU trains only tiny models)")
    print(f"{'saved':<11} {path} (MFU uses it where the device has no datasheet peak)")
