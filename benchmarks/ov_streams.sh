#!/usr/bin/env bash
# OpenVINO streams: one request on the whole batch (PROMPTEOL_OV_STREAMS=1, the old behaviour) against two requests of
# one thread each on its halves (2, the default from 2 threads on), alternated twice per model with batch_sweep.py,
# bfloat16, 2 threads, batch 32 (docs/performance.md).
# Usage: bash benchmarks/ov_streams.sh [MODEL...] (records: docs/results/ab_streams_<model>_<streams>_run<i>.json).
# Run it on a quiet machine.
set -euo pipefail
declare -A n=([smollm2-135m]=1500 [gemma3-270m]=1500 [qwen2.5-coder-0.5b]=600 [qwen2.5-coder-1.5b]=160)
for m in ${@:-smollm2-135m gemma3-270m qwen2.5-coder-0.5b qwen2.5-coder-1.5b}; do
  for run in 1 2; do
    for streams in 1 2; do
      PROMPTEOL_OV_STREAMS=$streams python benchmarks/batch_sweep.py --model "$m" --backend openvino --dtype bfloat16 \
        --threads 2 --n "${n[$m]}" --batch-sizes 32 -o "docs/results/ab_streams_${m}_${streams}_run${run}.json" | grep -o "[0-9.]* sentences/s" | sed "s|^|$m streams $streams run $run: |"
    done
  done
done
