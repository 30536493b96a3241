"""One benchmark configuration in its own process, printing one ``RESULT`` line for the parent.

One configuration in its own process: load, warm up, time the encoding, score the STS-B subset, and
print one ``RESULT`` line for the parent (``python -m prompteol.bench --worker CONFIG``)."""

from __future__ import annotations

import json
import os
import resource
import time
from typing import Any

import numpy as np

from .base import RUNNERS, error_text
from .configs import CONFIGS, STS_SPLIT, BenchConfig, parser, threads_of
from .data import load_sentences, load_sts_subset
from .gemm import measure_gemm


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(cfg: BenchConfig, args) -> tuple[dict, np.ndarray | None]:
    """Load, warm up, time the encoding of the timed sentences, then (untimed) score the STS-B subset."""
    if cfg.worker == "gemm":
        return measure_gemm(args.threads, args.device, cfg.options.get("dtype") or args.dtype), None
    if cfg.options.get("quantization") == "int8-dynamic":  # measured to show what it does; refused elsewhere
        os.environ["PROMPTEOL_ALLOW_LOSSY_INT8"] = "1"
    try:
        runner = RUNNERS[cfg.worker](cfg, args)
    except Exception as exc:  # a peer that does not load is a result, not a crash
        return {"did_not_load": error_text(exc)}, None
    sentences = load_sentences(args.data_dir, args.n)
    out: dict[str, Any] = {}
    token_check = runner.check_tokens(sentences)
    if token_check is not None:  # a peer with its own tokenizer: its ids against prompteol's
        out["token_check"] = token_check
    prompt_tokens, computed = runner.token_counts(sentences)
    t = time.perf_counter()
    # warm-up; a fused configuration also compiles and passes its timed check against eager here, so the
    # timed encode measures the compiled blocks alone (encoder/forward/fused.py: WARM_CALLS + 1 calls)
    from ..encoder.forward.fused import WARM_CALLS

    for _ in range(WARM_CALLS + 1 if cfg.options.get("fused") else 1):
        runner.embed(sentences[:16])
    out["warmup_s"] = time.perf_counter() - t
    t = time.perf_counter()
    vecs = np.asarray(runner.embed(sentences), dtype=np.float32)
    dt = time.perf_counter() - t
    out.update(seconds=dt, load_s=runner.load_s, prompt_tokens=prompt_tokens, computed_tokens=computed,
               nonembed_params=runner.nonembed_params, weights_mb=runner.weights_mb, **runner.extra)  # fmt: skip
    if args.sts_pairs:
        from ..evaluation.sts import cosine_pairs, score_sts

        s1, s2, gold = load_sts_subset(args.data_dir, args.sts_pairs)
        unique = list(dict.fromkeys([*s1, *s2]))
        t = time.perf_counter()
        v = np.asarray(runner.embed(unique), dtype=np.float32)
        row = {s: i for i, s in enumerate(unique)}
        score = score_sts(cosine_pairs(v[[row[s] for s in s1]], v[[row[s] for s in s2]]), gold)
        out["sts"] = {"split": STS_SPLIT, "pairs": len(gold), "sentences": len(unique),
                      "spearman": score["spearman"], "pearson": score["pearson"], "seconds": time.perf_counter() - t}  # fmt: skip
    return out, vecs


def worker_main(argv: list[str]) -> None:
    args = parser().parse_args(argv)
    args.threads = threads_of(args)
    import torch

    torch.set_num_threads(args.threads)
    cfg = CONFIGS[args.worker]
    rss0 = _rss_mb()
    out, vecs = measure(cfg, args)
    if vecs is not None:
        np.save(args.vectors_out, vecs)
    out.update(config=cfg.name, peak_rss_mb=_rss_mb(), start_rss_mb=rss0, threads=torch.get_num_threads())
    print("RESULT " + json.dumps(out, default=str))
