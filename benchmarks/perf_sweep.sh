#!/usr/bin/env bash
# Throughput variants of the 70M profiles on one GPU, each a `sparknet bench` run.
# usage: benchmarks/perf_sweep.sh MIX RESULTS_DIR [variant ...]
# Each variant's JSON line goes to RESULTS_DIR/<variant>.json; a summary table is printed last.
set -uo pipefail
mix=$1; out=$2; shift 2
mkdir -p "$out"
declare -A VARIANTS=(
  [mb24]="--set batch.micro_batch=24 --set batch.grad_accum=5"
  [mb60]="--set batch.micro_batch=60 --set batch.grad_accum=2"
  [mb60-fused]="--set batch.micro_batch=60 --set batch.grad_accum=2 --set run.fused_loss=true"
  [mb60-cudnn]="--set batch.micro_batch=60 --set batch.grad_accum=2 --set run.attention=\"cudnn\""
  [mb120-fused]="--set batch.micro_batch=120 --set batch.grad_accum=1 --set run.fused_loss=true"
  [mb120-fused-cudnn]="--set batch.micro_batch=120 --set batch.grad_accum=1 --set run.fused_loss=true --set run.attention=\"cudnn\""
  [mb120]="--set batch.micro_batch=120 --set batch.grad_accum=1"
  [mb24-fused]="--set batch.micro_batch=24 --set batch.grad_accum=5 --set run.fused_loss=true"
  [mb40]="--set batch.micro_batch=40 --set batch.grad_accum=3"
  [mb40-fused]="--set batch.micro_batch=40 --set batch.grad_accum=3 --set run.fused_loss=true"
  [mb60-fused-cdt]="--set batch.micro_batch=60 --set batch.grad_accum=2 --set run.fused_loss=true"
  [mb120-fused-bf16res-autotune]="--set batch.micro_batch=120 --set batch.grad_accum=1 --set run.fused_loss=true --set run.bf16_residual=true"
  [mb120-fused-bf16res]="--set batch.micro_batch=120 --set batch.grad_accum=1 --set run.fused_loss=true --set run.bf16_residual=true"
  [mb120-fused-bf16res-flash]="--set batch.micro_batch=120 --set batch.grad_accum=1 --set run.fused_loss=true --set run.bf16_residual=true --set run.attention=\"flash\""
  [fp8]="--set run.fp8_head=true"
  [plain-gelu]="--set run.fused_gelu=false"
  [joint-qkv]="--set run.separate_qkv=false"
  [cudagraphs]=""
  [profile]=""
)
# inductor settings some variants add, through its environment variables
declare -A ENVS=(
  [mb60-fused-cdt]="TORCHINDUCTOR_COORDINATE_DESCENT_TUNING=1"
  [mb120-fused-bf16res-autotune]="TORCHINDUCTOR_MAX_AUTOTUNE=1"
  [cudagraphs]="TORCHINDUCTOR_CUDAGRAPHS=1"
)
profile=${PROFILE:-codelion-70m}
steps=${STEPS:-30}
for v in "$@"; do
  echo "== $profile $v"
  eval "${ENVS[$v]:-} timeout ${VARIANT_TIMEOUT:-150} python3 -m engine.cli bench --profile $profile --mix $mix --steps $steps ${VARIANTS[$v]} --json-out $out/$profile-$v.json" 2>&1 | grep -v "^{" | tail -3
done
python3 - "$out" <<'PY'
import json, sys, pathlib
for f in sorted(pathlib.Path(sys.argv[1]).glob("*.json")):
    r = json.loads(f.read_text())
    print(f"{f.stem:32s} {r['tokens_per_s']:>12,.0f} tok/s  MFU {r['mfu'] or 0:6.1%}  mem {r['peak_memory_b'] / 2**30 if r['peak_memory_b'] else 0:5.1f} GiB  loss {r['final_loss']:.4f}")
PY
