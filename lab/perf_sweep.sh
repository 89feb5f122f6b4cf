#!/usr/bin/env bash
# Throughput variants of the 70M profiles on one GPU, each a `sparknet bench` run.
# usage: lab/perf_sweep.sh MIX RESULTS_DIR [variant ...]
# Each variant's JSON line goes to RESULTS_DIR/<variant>.json; a summary table is printed last.
set -uo pipefail
mix=$1; out=$2; shift 2
mkdir -p "$out"
# each kept fast path forced off in turn, and the split for GPUs too small for one micro-batch of 120
declare -A VARIANTS=(
  [profile]=""
  [mb24]="--set batch.micro_batch=24 --set batch.grad_accum=5"
  [no-compile]="--set run.compile=false"
  [no-fused-loss]="--set run.fused_loss=false"
  [no-fp8]="--set run.fp8_head=false"
  [plain-gelu]="--set run.fused_gelu=false"
  [fp32-residual]="--set run.bf16_residual=false"
  [compiled-reference]="--set run.fused_loss=false --set run.fused_gelu=false --set run.bf16_residual=false"
  [eager-reference]="--set run.compile=false --set run.fused_loss=false --set run.fused_gelu=false --set run.bf16_residual=false"
)
profile=${PROFILE:-codelion-70m}
steps=${STEPS:-30}
for v in "$@"; do
  echo "== $profile $v"
  eval "timeout ${VARIANT_TIMEOUT:-150} python3 -m engine.cli bench --profile $profile --mix $mix --steps $steps ${VARIANTS[$v]} --json-out $out/$profile-$v.json" 2>&1 | grep -v "^{" | tail -3
done
python3 - "$out" <<'PY'
import json, sys, pathlib
for f in sorted(pathlib.Path(sys.argv[1]).glob("*.json")):
    r = json.loads(f.read_text())
    print(f"{f.stem:32s} {r['tokens_per_s']:>12,.0f} tok/s  MFU {r['mfu'] or 0:6.1%}  mem {r['peak_memory_b'] / 2**30 if r['peak_memory_b'] else 0:5.1f} GiB  loss {r['final_loss']:.4f}")
PY
