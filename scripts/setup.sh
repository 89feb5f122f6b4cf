#!/usr/bin/env bash
# Create .venv and install SparkNet into it (idempotent: a second run only checks).
#   SPARKNET_TORCH="torch==2.13.0"   what to install for torch (default: see below)
# On a machine without an NVIDIA GPU the CPU build of torch 2.13.0 is installed, never
# a multi-GB CUDA download. With a GPU, install the CUDA build of torch for your
# platform first (see README, "Installing on a GPU machine"), or set SPARKNET_TORCH.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if [ -n "${SPARKNET_TORCH:-}" ]; then
    spec="$SPARKNET_TORCH"
  elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    spec="torch"
  else
    spec="torch==2.13.0"
  fi
  echo "installing $spec"
  .venv/bin/python -m pip install -q "$spec"
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
