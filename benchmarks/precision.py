"""Where does low precision lose accuracy? STS-B dev and cosine to float32 per precision recipe.

For each model and each precision (``float32`` first: the reference), encode STS-B dev
(3,000 sentences, through the evaluation harness, no embedding cache) and report the Spearman
x100, its change from float32, and the cosine of every vector to its float32 vector (min and
mean). Writes one JSON record (machine, threads, versions, command).

    python benchmarks/precision.py --models smollm2-135m,gemma3-270m --dtypes float32,bfloat16,bf16-mixed \
        --threads 2 -o docs/results/precision_stsb-dev.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="smollm2-135m")
    p.add_argument("--dtypes", default="float32,bfloat16,bf16-mixed")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("-o", "--output", default=None)
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from prompteol import Encoder
    from prompteol.evaluation import evaluate, load_sts_pairs
    from prompteol.records import provenance

    root = args.data_dir or os.environ.get("PROMPTEOL_DATA") or "../shared/data/senteval"
    pairs = load_sts_pairs("STSBenchmark-dev", root)
    sentences = list(dict.fromkeys(pairs.sentences1 + pairs.sentences2))
    dtypes = args.dtypes.split(",")
    if dtypes[0] != "float32":
        dtypes.insert(0, "float32")
    record: dict = {
        "command": " ".join([sys.executable.rsplit("/", 1)[-1], *sys.argv]),
        "provenance": provenance(threads=args.threads), "models": {},
    }  # fmt: skip
    for model in args.models.split(","):
        rows = {}
        ref = None
        for dtype in dtypes:
            enc = Encoder.from_pretrained(model, dtype=dtype, progress=False)
            t = time.perf_counter()
            vecs = enc.encode(sentences, batch_size=args.batch_size, use_embedding_cache=False)
            dt = time.perf_counter() - t
            score = evaluate(_Fixed(sentences, vecs), tasks=["STSBenchmark-dev"], data_dir=root, progress=False)
            spearman = score["tasks"]["STSBenchmark-dev"]["score"]
            row = {"stsb_dev": spearman, "encode_s": round(dt, 2), "sentences": len(sentences)}
            if ref is None:
                ref = (vecs, spearman)
            else:
                cos = _cosines(vecs, ref[0])
                row.update(change=spearman - ref[1], cos_min=float(cos.min()), cos_mean=float(cos.mean()))
            rows[dtype] = row
            print(f"{model:22s} {dtype:11s} STS-B dev {spearman:6.2f}"
                  + (f"  change {row['change']:+.2f}  cos min {row['cos_min']:.5f} mean {row['cos_mean']:.6f}"
                     if "change" in row else "") + f"  ({dt:.0f} s)", flush=True)  # fmt: skip
            del enc
        record["models"][model] = rows
        if args.output:
            Path(args.output).write_text(json.dumps(record, indent=2) + "\n")
    return 0


class _Fixed:
    """Precomputed vectors behind the harness's encoder protocol (the harness scores them)."""

    def __init__(self, sentences, vecs):
        self.index = {s: i for i, s in enumerate(sentences)}
        self.vecs = vecs

    def encode(self, sentences):
        return self.vecs[[self.index[s] for s in sentences]]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from prompteol.encoder.postprocess import normalize_rows

    return (normalize_rows(a.astype(np.float64)) * normalize_rows(b.astype(np.float64))).sum(1)



if __name__ == "__main__":
    sys.exit(main())
