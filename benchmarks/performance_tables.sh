#!/usr/bin/env bash
# One `prompteol bench` run per packaged model: eager float32, fused float32 (torch.compile), the ONNX Runtime and
# OpenVINO backends in float32, bfloat16 (eager and fused), `prompteol eval`'s auto (dtype and backend) and llama.cpp,
# with the float32 and bfloat16 matmul peaks of the same run (docs/performance.md).
# Usage: bash benchmarks/performance_tables.sh [TAG] (records: docs/results/bench_<model>_<TAG>.json; TAG default:
# the CPU kind, amx, avx512bf16 or avx2). Run it on a quiet machine: every ratio is measured within one run.
# CONFIGS="..." runs a subset (the same names as below), MODELS="..." some of the four models.
set -euo pipefail
kind() {
  if grep -q -m1 amx_bf16 /proc/cpuinfo; then echo amx
  elif grep -q -m1 avx512_bf16 /proc/cpuinfo; then echo avx512bf16
  else echo avx2; fi
}
tag=${1:-$(kind)}
configs=${CONFIGS:-"gemm gemm-bf16 prompteol prompteol-fused prompteol-ort prompteol-ov-f32 prompteol-bf16 prompteol-bf16-fused prompteol-eval llamacpp"}
models=${MODELS:-"smollm2-135m gemma3-270m qwen2.5-coder-0.5b qwen2.5-coder-1.5b"}
run() {  # model n sts-pairs
  prompteol --threads 2 bench --model "$1" --n "$2" --sts-pairs "$3" --batch-size 32 --configs $configs \
    --output "docs/results/bench_$1_${tag}.json"
}
for model in $models; do
  case $model in
    smollm2-135m) run "$model" 300 300 ;;
    gemma3-270m) run "$model" 200 200 ;;
    qwen2.5-coder-0.5b) run "$model" 150 150 ;;
    qwen2.5-coder-1.5b) run "$model" 64 100 ;;
    *) echo "unknown model: $model" >&2; exit 2 ;;
  esac
done
