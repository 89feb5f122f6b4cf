#!/usr/bin/env bash
# Create .venv and install SparkNet into it (idempotent: a second run only checks).
#   scripts/setup.sh --dry-run    print which torch build this machine gets, change nothing
#   SPARKNET_TORCH="torch==2.13.0"   what to install for torch instead (pip arguments)
# Without an NVIDIA GPU: the CPU build of torch 2.13.0, never a multi-GB CUDA download.
# With one: a CUDA build from PyTorch's own wheel index for this platform (x86-64 or
# aarch64, e.g. a DGX Spark), torch 2.10 or newer so that its Triton is 3.6 or newer
# (older ones cannot assemble for the GB10); a plain `pip install torch` on aarch64
# would silently give a CPU-only build. After installing, it checks that torch sees the GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_CPU="torch==2.13.0"
TORCH_CUDA="torch>=2.10"

# what this machine is; the SPARKNET_SETUP_* variables stand in for it in dry runs
platform=${SPARKNET_SETUP_PLATFORM:-$(uname -m)}
if [ -n "${SPARKNET_SETUP_GPU+set}" ]; then
  gpu=$SPARKNET_SETUP_GPU
  driver_cuda=${SPARKNET_SETUP_DRIVER_CUDA:-}
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
  driver_cuda=$(nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9][0-9.]*\).*/\1/p' | head -n 1)
else
  gpu=""
  driver_cuda=""
fi

# the wheel index: CUDA 13.0 builds where the driver runs CUDA 13 (the DGX Spark's), else CUDA 12.8
torch_choice() {
  if [ -n "${SPARKNET_TORCH:-}" ]; then
    echo "$SPARKNET_TORCH"
  elif [ -z "$gpu" ]; then
    echo "$TORCH_CPU"
  elif [ "${driver_cuda%%.*}" -ge 13 ] 2>/dev/null; then
    echo "$TORCH_CUDA --index-url https://download.pytorch.org/whl/cu130"
  else
    echo "$TORCH_CUDA --index-url https://download.pytorch.org/whl/cu128"
  fi
}

if [ "${1:-}" = "--dry-run" ]; then
  echo "platform $platform, GPU ${gpu:-none}, driver CUDA ${driver_cuda:-none}"
  echo "torch: pip install $(torch_choice)"
  exit 0
fi

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
cpu_build_on_gpu() {
  [ -n "$gpu" ] && .venv/bin/python -c "import sys, torch; sys.exit(torch.version.cuda is not None)" 2>/dev/null
}
if [ -z "${SPARKNET_TORCH:-}" ] && cpu_build_on_gpu; then
  echo "replacing the CPU-only torch build in .venv with a CUDA build for the $gpu"
  .venv/bin/python -m pip uninstall -q -y torch
fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  choice=$(torch_choice)
  echo "installing $choice"
  # shellcheck disable=SC2086  # the choice is pip arguments
  .venv/bin/python -m pip install -q $choice
fi
if [ -n "$gpu" ] && ! .venv/bin/python -c "import sys, torch; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
  echo "setup: torch $(.venv/bin/python -c 'import torch; print(torch.__version__)' 2>/dev/null) does not see the" \
    "$gpu; check that nvidia-smi works and the driver is recent enough (CUDA 13 wheels need 580 or newer), or set" \
    "SPARKNET_TORCH to the pip arguments of a CUDA build, then run scripts/setup.sh again" >&2
  exit 1
fi
# CUDA builds of torch bring Triton; on a CPU build, Triton's interpreter is what runs the loss kernel's tests
if .venv/bin/python -c "import sys, torch; sys.exit(torch.version.cuda is not None)" 2>/dev/null \
    && ! .venv/bin/python -c "import triton" 2>/dev/null; then
  echo "installing triton==3.9.0"
  .venv/bin/python -m pip install -q "triton==3.9.0"
fi
# the panel's end-to-end test drives the real command inside tmux
if ! command -v tmux >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tmux) >/dev/null 2>&1 \
      || echo "note: could not install tmux; the panel's end-to-end test needs it" >&2
  else
    echo "note: tmux is not installed; the panel's end-to-end test needs it" >&2
  fi
fi
# the torch already installed satisfies the project's range, so nothing is upgraded here
.venv/bin/python -m pip install -q -e ".[dev]"
