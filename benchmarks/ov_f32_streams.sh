#!/usr/bin/env bash
# float32 with two OpenVINO streams (the default from 2 threads on): the OpenVINO backend's float32 against torch's
# float32 and the ONNX Runtime backend, one `prompteol bench` run per model, 2 threads, batch 32 (docs/performance.md,
# the fused-float32 target: >= 80% of the same run's float32 matmul peak, not slower than ONNX Runtime).
# Usage: bash benchmarks/ov_f32_streams.sh [MODEL...] (records: docs/results/bench_<model>_<cpu kind>_ov_f32_streams.json).
# Run it on a quiet machine: every ratio is measured within one run.
set -euo pipefail
tag=$(grep -q -m1 -E 'avx512_bf16|amx_bf16' /proc/cpuinfo && echo avx512bf16 || echo avx2)
configs="gemm prompteol prompteol-ov-f32 prompteol-ort"
declare -A n=([smollm2-135m]=1200 [gemma3-270m]=800 [qwen2.5-coder-0.5b]=300 [qwen2.5-coder-1.5b]=96)
declare -A pairs=([smollm2-135m]=300 [gemma3-270m]=200 [qwen2.5-coder-0.5b]=150 [qwen2.5-coder-1.5b]=100)
for m in ${@:-smollm2-135m gemma3-270m qwen2.5-coder-0.5b qwen2.5-coder-1.5b}; do
  prompteol --threads 2 bench --model "$m" --n "${n[$m]}" --sts-pairs "${pairs[$m]}" --batch-size 32 \
    --configs $configs --output "docs/results/bench_${m}_${tag}_ov_f32_streams.json"
done
