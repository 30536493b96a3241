#!/usr/bin/env bash
# The OpenVINO backend (backend="openvino", bfloat16 and float32) against torch (float32, bfloat16), the ONNX Runtime
# backend and OpenVINO on full prompts, one `prompteol bench` run per model (docs/performance.md).
# Usage: bash benchmarks/ov_backend.sh [MODEL...] (records: docs/results/bench_<model>_<cpu kind>_ov.json).
# Run it on a quiet machine: every ratio is measured within one run.
set -euo pipefail
tag=$(grep -q -m1 -E 'avx512_bf16|amx_bf16' /proc/cpuinfo && echo avx512bf16 || echo avx2)
configs="gemm gemm-bf16 prompteol prompteol-bf16 prompteol-ov prompteol-ov-f32 prompteol-ort prompteol-demo prompteol-demo-ov onnx-openvino-bf16"
declare -A n=([smollm2-135m]=600 [gemma3-270m]=400 [qwen2.5-coder-0.5b]=200 [qwen2.5-coder-1.5b]=64)
declare -A pairs=([smollm2-135m]=300 [gemma3-270m]=200 [qwen2.5-coder-0.5b]=150 [qwen2.5-coder-1.5b]=100)
for model in "${@:-smollm2-135m gemma3-270m qwen2.5-coder-0.5b qwen2.5-coder-1.5b}"; do
  for m in $model; do
    prompteol --threads 2 bench --model "$m" --n "${n[$m]}" --sts-pairs "${pairs[$m]}" --batch-size 32 \
      --configs $configs --output "docs/results/bench_${m}_${tag}_ov.json"
  done
done
