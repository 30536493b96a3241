"""The matmul peak at a model's own shapes: its block's products (q, k, v, o, gate, up, down) at the rows a call gives.

`prompteol bench` states each path's speed as a fraction of the peak of large square products (512-4,096). A small
model's products are narrow (smollm2-135m: 576 wide) and a call's rows few (a stream's half of a batch of 32 short
prompts: a few hundred tokens), and on a CPU with AMX such products stay far below the square peak. This script
times one thread per stream (as OpenVINO's two streams run) on the block's products at ``--rows`` rows, weighted by
their FLOPs, next to the square peak of the same run, so a path's gap can be split into "the shapes" and "the rest".

    python benchmarks/shaped_peak.py --model smollm2-135m --rows 224 --threads 2 -o docs/results/shaped_peak_smollm2-135m_amx.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def _time_linear(torch, rows: int, k: int, n: int, dtype, budget_s: float) -> float:
    """FLOP/s of ``x @ w.T`` (rows x k by n x k) on this thread, best of repeated timings within ``budget_s``."""
    x, w = torch.randn(rows, k, dtype=dtype), torch.randn(n, k, dtype=dtype)
    for _ in range(3):
        torch.nn.functional.linear(x, w)
    best, started = float("inf"), time.perf_counter()
    while time.perf_counter() - started < budget_s:
        t = time.perf_counter()
        for _ in range(10):
            torch.nn.functional.linear(x, w)
        best = min(best, (time.perf_counter() - t) / 10)
    return 2.0 * rows * k * n / best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--rows", type=int, nargs="+", default=[224], help="token rows of one call (default: %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="streams, one thread each (default: %(default)s)")
    p.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"])
    p.add_argument("--budget", type=float, default=1.0, help="seconds per shape (default: %(default)s)")
    p.add_argument("-o", "--output", default=None, help="write the JSON record here (atomically)")
    args = p.parse_args()

    import torch

    from prompteol.models.loading import resolve_model
    from prompteol.records import provenance

    torch.set_num_threads(1)  # one thread per stream; the streams run at once on separate cores
    cfg = json.loads((Path(resolve_model(args.model).path) / "config.json").read_text())
    cfg = cfg.get("text_config", cfg)
    h, inter, heads = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_attention_heads"]
    head_dim = cfg.get("head_dim") or h // heads
    kv = cfg.get("num_key_value_heads") or heads
    shapes = {"q": (h, heads * head_dim), "k": (h, kv * head_dim), "v": (h, kv * head_dim), "o": (heads * head_dim, h),
              "gate": (h, inter), "up": (h, inter), "down": (inter, h)}  # fmt: skip
    rows_out = []
    for dtype_name in args.dtypes:
        dtype = getattr(torch, dtype_name)
        square = max(_time_linear(torch, s, s, s, dtype, args.budget) for s in (1024, 2048))
        for rows in args.rows:
            per = {name: _time_linear(torch, rows, k, n, dtype, args.budget) for name, (k, n) in shapes.items()}
            flops = {name: 2.0 * rows * k * n for name, (k, n) in shapes.items()}
            seconds = sum(flops[name] / per[name] for name in shapes)
            shaped = sum(flops.values()) / seconds  # the block's products in sequence at their own rates
            row = {"dtype": dtype_name, "rows": rows, "threads": args.threads,
                   "square_peak_flops": args.threads * square, "shaped_peak_flops": args.threads * shaped,
                   "shaped_of_square": shaped / square,
                   "per_product_flops": {k: args.threads * v for k, v in per.items()}}  # fmt: skip
            rows_out.append(row)
            print(f"{dtype_name:9s} rows {rows:5d}: shaped {args.threads * shaped / 1e9:8.1f} GFLOP/s, square "
                  f"{args.threads * square / 1e9:8.1f} GFLOP/s ({100 * shaped / square:.0f}%)", flush=True)
    record = {"schema": "prompteol.shaped-peak/1", "model": args.model, "shapes": shapes, "rows": rows_out,
              "note": "one thread per stream, timed alone and scaled by the stream count",
              "provenance": provenance(threads=args.threads)}  # fmt: skip
    if args.output:
        from prompteol.fileio import write_json_atomic

        write_json_atomic(Path(args.output), record)


if __name__ == "__main__":
    main()
