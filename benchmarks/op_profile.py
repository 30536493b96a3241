"""Where one encode call spends its time: torch's profiler over `Encoder.encode`, per operator, with the
matrix products' achieved FLOP/s beside the same run's matmul peak of that dtype.

Answers "is the encoder bound by its matrix products or by the rest" (element-wise operations, attention,
copies): when ``aten::mm`` already runs near the peak, a faster path has to remove the other operators'
time or the padded tokens, not speed up the products.

    python benchmarks/op_profile.py --model smollm2-135m --dtype bfloat16 --threads 2 --n 640 \\
        -o docs/results/op_profile_smollm2-135m_bf16.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--dtype", default="float32", help="the encoder's dtype (default: %(default)s)")
    p.add_argument("--fused", action="store_true", help="compiled blocks (compiled before the profile)")
    p.add_argument("--n", type=int, default=640, help="STS-B train sentences (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--top", type=int, default=15, help="operators listed (default: %(default)s)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("-o", "--output", default=None, help="write the JSON record here (atomically)")
    args = p.parse_args()

    import torch
    from torch.profiler import ProfilerActivity, profile

    torch.set_num_threads(args.threads)
    from prompteol import Encoder
    from prompteol.bench import load_sentences
    from prompteol.bench.gemm import measure_gemm
    from prompteol.fileio import write_json_atomic
    from prompteol.records import provenance

    enc = Encoder.from_pretrained(args.model, embedding_cache=False, dtype=args.dtype, fused=args.fused)
    sentences = load_sentences(args.data_dir, args.n)
    enc.encode(sentences[:64], batch_size=args.batch_size, use_embedding_cache=False)  # warm-up / compile
    plain_t = time.perf_counter()
    enc.encode(sentences, batch_size=args.batch_size, use_embedding_cache=False)
    plain_s = time.perf_counter() - plain_t
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        t = time.perf_counter()
        enc.encode(sentences, batch_size=args.batch_size, use_embedding_cache=False)
        profiled_s = time.perf_counter() - t
    events = prof.key_averages()
    total_us = sum(e.self_cpu_time_total for e in events)
    rows = []
    for e in sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[: args.top]:
        row = {"op": e.key, "calls": e.count, "self_s": round(e.self_cpu_time_total / 1e6, 4),
               "share": round(e.self_cpu_time_total / total_us, 4)}  # fmt: skip
        if e.flops:
            row["gflop_per_s"] = round(e.flops / (e.self_cpu_time_total / 1e6) / 1e9, 1)
        rows.append(row)
    matmul_dtype = "bfloat16" if str(enc.describe()["dtype"]).startswith("bf") else "float32"
    peak = measure_gemm(args.threads, dtype=matmul_dtype)
    mm = [e for e in events if e.key in ("aten::mm", "aten::addmm", "aten::bmm") and e.flops]
    mm_flops = sum(e.flops for e in mm)
    mm_s = sum(e.self_cpu_time_total for e in mm) / 1e6
    record = {
        "model": args.model, "n": len(sentences), "batch_size": args.batch_size, "threads": args.threads,
        "encoder": enc.describe(), "encode_s": round(plain_s, 3), "encode_s_profiled": round(profiled_s, 3),
        "sentences_per_s": round(len(sentences) / plain_s, 2),
        "matmul": {"share": round(mm_s * 1e6 / total_us, 4), "gflop_per_s": round(mm_flops / mm_s / 1e9, 1),
                   "peak_gflop_per_s": round(peak["gemm_flops"] / 1e9, 1),
                   "fraction_of_peak": round(mm_flops / mm_s / peak["gemm_flops"], 3), "peak": peak},
        "ops": rows, "provenance": provenance(threads=args.threads),
    }  # fmt: skip
    m = record["matmul"]
    print(f"{args.model} {matmul_dtype}: {record['sentences_per_s']} sentences/s; matrix products {m['share']:.0%} "
          f"of the profiled time at {m['gflop_per_s']} GFLOP/s = {m['fraction_of_peak']:.0%} of the "
          f"{m['peak_gflop_per_s']} GFLOP/s {matmul_dtype} peak")  # fmt: skip
    for r in rows:
        print(f"  {r['op']:<55} {r['share']:6.1%} {r['calls']:6d} calls {r.get('gflop_per_s', '')}")
    if args.output:
        write_json_atomic(Path(args.output), record)
        print(f"wrote {args.output}")
    else:
        print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
