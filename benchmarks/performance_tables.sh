#!/usr/bin/env bash
# One `prompteol bench` run per packaged model: eager float32, fused float32 (torch.compile), the ONNX Runtime and
# OpenVINO backends in float32, bfloat16 (eager and fused), `prompteol eval`'s auto (dtype and backend) and llama.cpp,
# with the float32 and bfloat16 matmul peaks of the same run (docs/performance.md).
# Usage: bash benchmarks/performance_tables.sh [TAG] (records: docs/results/bench_<model>_<TAG>.json; TAG default:
# the CPU kind, avx512bf16 or avx2). Run it on a quiet machine: every ratio is measured within one run.
set -euo pipefail
tag=${1:-$(grep -q -m1 -E 'avx512_bf16|amx_bf16' /proc/cpuinfo && echo avx512bf16 || echo avx2)}
configs="gemm gemm-bf16 prompteol prompteol-fused prompteol-ort prompteol-ov-f32 prompteol-bf16 prompteol-bf16-fused prompteol-eval llamacpp"
run() {  # model n sts-pairs
  prompteol --threads 2 bench --model "$1" --n "$2" --sts-pairs "$3" --batch-size 32 --configs $configs \
    --output "docs/results/bench_$1_${tag}.json"
}
run smollm2-135m 300 300
run gemma3-270m 200 200
run qwen2.5-coder-0.5b 150 150
run qwen2.5-coder-1.5b 64 100
