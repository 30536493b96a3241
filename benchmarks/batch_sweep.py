"""Throughput of `Encoder.encode` for several batch sizes / token budgets, in one run.

Larger batches are not always faster on CPU: once a batch's activations (tokens x intermediate
size x 4 bytes) leave the cache, matmuls slow down. This prints sentences/s for each setting so
that `--batch-size` / `--max-batch-tokens` can be chosen for a machine.

    python benchmarks/batch_sweep.py --model smollm2-135m --n 300 --threads 1 --batch-sizes 8 16 32 64
    python benchmarks/batch_sweep.py --dtype auto --fused --threads 2 --batch-sizes 32 64 128
    python benchmarks/batch_sweep.py --backend openvino --dtype bfloat16 --threads 2 --batch-sizes 32 64 128
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--n", type=int, default=300, help="STS-B train sentences (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 16, 32, 64])
    p.add_argument(
        "--max-batch-tokens", type=int, nargs="*", default=[], help="also try these token budgets (batch 256)"
    )
    p.add_argument(
        "--dtype", default="float32", help="the encoder's dtype, e.g. auto or bfloat16 (default: %(default)s)"
    )
    p.add_argument("--fused", action="store_true", help="compiled blocks (the first call compiles and checks them)")
    p.add_argument("--packing", action="store_true", help="pack a batch's sentences into rows (no padding computed)")
    p.add_argument("--backend", default="torch", help="the encoder's backend: torch, onnxruntime, openvino, auto")
    p.add_argument("--data-dir", default=None)
    p.add_argument("-o", "--output", default=None, help="write the JSON record here")
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from prompteol import Encoder
    from prompteol.bench import load_sentences

    enc = Encoder.from_pretrained(
        args.model, embedding_cache=False, dtype=args.dtype, fused=args.fused, packing=args.packing, backend=args.backend
    )
    sentences = load_sentences(args.data_dir, args.n)
    t = time.perf_counter()
    enc.encode(sentences[:16], use_embedding_cache=False)  # warm-up (and, fused, the first compilation)
    warmup_s = time.perf_counter() - t
    settings = [(b, None) for b in args.batch_sizes] + [(256, t) for t in args.max_batch_tokens]
    rows = []
    for bs, mbt in settings:
        t = time.perf_counter()
        enc.encode(sentences, batch_size=bs, max_batch_tokens=mbt, use_embedding_cache=False)
        rate = len(sentences) / (time.perf_counter() - t)
        rows.append({"batch_size": bs, "max_batch_tokens": mbt, "sentences_per_s": round(rate, 2)})
        print(f"batch_size {bs:4d}  max_batch_tokens {mbt or '-':>5}  {rate:7.1f} sentences/s", flush=True)
    best = max(rows, key=lambda r: r["sentences_per_s"])
    from prompteol.records import provenance

    record = {"model": args.model, "n": len(sentences), "threads": args.threads, "encoder": enc.describe(),
              "warmup_s": round(warmup_s, 2), "rows": rows, "best": best,
              "provenance": provenance(threads=args.threads)}  # fmt: skip
    print(json.dumps(record))
    if args.output:
        from prompteol.fileio import write_json_atomic

        write_json_atomic(Path(args.output), record)


if __name__ == "__main__":
    main()
