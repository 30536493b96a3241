"""The benchmark's parent process: run each configuration in a subprocess, judge it, compute the ratios.

The parent: run every configuration in its own subprocess, judge each against its float32 reference,
compute the speed ratios, and write the record (``prompteol bench``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .configs import (
    CONFIGS,
    EXACT_MAX_DIFF,
    LLAMACPP_COS_MIN,
    LOWP_COS_MIN,
    LOWP_STS_DELTA,
    PEER_PACKAGES,
    RATIOS,
    STS_SPLIT,
    TOLERANCES,
    BenchConfig,
    parser,
    threads_of,
)
from .report import accuracy_text, print_report


def expand_configs(configs: Sequence[str]) -> list[str]:
    """The configurations in the given order, with each one's float32 reference added (first) when missing."""
    wanted = list(dict.fromkeys(configs))
    extra: list[str] = []
    for name in wanted:
        ref = CONFIGS[name].ref
        while ref and ref not in wanted and ref not in extra:
            extra.append(ref)
            ref = CONFIGS[ref].ref
    return extra + wanted


def _worker_cmd(cfg: str, vec_path: Path, args) -> list[str]:
    cmd = [sys.executable, "-m", "prompteol.bench", "--worker", cfg, "--vectors-out", str(vec_path),
           "--model", args.model, "--n", str(args.n), "--threads", str(threads_of(args)),
           "--batch-size", str(args.batch_size), "--device", args.device, "--dtype", args.dtype,
           "--sts-pairs", str(args.sts_pairs)]  # fmt: skip
    if args.max_batch_tokens:
        cmd += ["--max-batch-tokens", str(args.max_batch_tokens)]
    if args.data_dir:
        cmd += ["--data-dir", str(args.data_dir)]
    return cmd


def run_worker(cfg: str, vec_path: Path, args) -> dict:
    """Run one configuration in its own process; its RESULT line, or an error record."""
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(_worker_cmd(cfg, vec_path, args), capture_output=True, text=True, env=env)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"config": cfg, "error": tail or [f"exit status {proc.returncode}"]}
    return json.loads(line[len("RESULT ") :])


def judge(cfg: BenchConfig, r: dict, ref: dict | None, vec: np.ndarray | None, ref_vec: np.ndarray | None) -> None:
    """Add the comparison with the float32 reference and the verdict (``status``, ``reason``) to ``r``."""
    from ..evaluation.sts import cosine_pairs

    r["kind"], r["tolerance"] = cfg.kind, TOLERANCES[cfg.kind]
    if cfg.kind == "base":
        r["status"] = "ok"
        return
    if vec is None or ref_vec is None or ref is None or vec.shape != ref_vec.shape:
        r["status"], r["reason"] = "no reference", f"no vectors of {cfg.ref} to compare with"
        return
    cos = cosine_pairs(vec, ref_vec)
    r.update(compared_with=cfg.ref, max_abs_diff=float(np.abs(vec - ref_vec).max()), cos_min=float(cos.min()),
             cos_mean=float(cos.mean()))  # fmt: skip
    if "sts" in r and "sts" in ref:
        r["sts_change"] = r["sts"]["spearman"] - ref["sts"]["spearman"]
    reasons = []
    if cfg.kind == "exact" and not r["max_abs_diff"] < EXACT_MAX_DIFF:
        reasons.append(f"max |diff| {r['max_abs_diff']:.1e} >= {EXACT_MAX_DIFF:g}")
    if cfg.kind == "lowp":
        if not r["cos_min"] >= LOWP_COS_MIN:
            reasons.append(f"cos min {r['cos_min']:.4f} < {LOWP_COS_MIN}")
        if "sts_change" not in r:
            reasons.append("STS-B dev not measured (--sts-pairs 0)")
        elif not abs(r["sts_change"]) <= LOWP_STS_DELTA:
            reasons.append(f"|STS-B dev change| {abs(r['sts_change']):.2f} > {LOWP_STS_DELTA}")
    if cfg.kind == "llamacpp" and not r["cos_min"] >= LLAMACPP_COS_MIN:
        reasons.append(f"cos min {r['cos_min']:.4f} < {LLAMACPP_COS_MIN}")
    r["status"] = "not comparable" if reasons else "ok"
    if reasons:
        r["reason"] = "; ".join(reasons)


def compute(args, results: dict[str, dict], vectors: dict[str, np.ndarray]) -> dict:
    """Throughput, fractions of the peaks, verdicts and ratios from the workers' results."""
    base = results.get("prompteol", {})
    params = base.get("nonembed_params") or next(
        (r["nonembed_params"] for r in results.values() if r.get("nonembed_params")), None
    )
    for name, r in results.items():
        cfg = CONFIGS[name]
        if cfg.kind == "peak" or "seconds" not in r:
            if "did_not_load" in r:
                r["status"] = "did not load"
            elif "error" in r:
                r["status"] = "error"
            continue
        r["sentences_per_s"] = args.n / r["seconds"]
        r["tokens_per_s"] = r["prompt_tokens"] / r["seconds"]
        if params:
            r["achieved_flops"] = 2 * params * r["computed_tokens"] / r["seconds"]
            f32 = results.get("gemm", {}).get("gemm_flops")
            if f32:
                r["fraction_of_gemm_peak"] = r["achieved_flops"] / f32
            own = results.get(cfg.peak or "", {}).get("gemm_flops")
            if own:
                r["own_peak"] = cfg.peak
                r["fraction_of_own_peak"] = r["achieved_flops"] / own
        judge(cfg, r, results.get(cfg.ref or ""), vectors.get(name), vectors.get(cfg.ref or ""))
    ratios: dict[str, dict] = {}
    for a, b, label in RATIOS:
        ra, rb = results.get(a), results.get(b)
        if ra is None or rb is None:
            continue
        entry: dict[str, Any] = {"numerator": a, "denominator": b}
        bad = [x for x, rx in ((a, ra), (b, rb)) if rx.get("status") != "ok"]
        if bad:
            entry["value"] = None
            entry["why_none"] = "; ".join(f"{x}: {results[x].get('status', 'no result')}"
                                          + (f" ({results[x]['reason']})" if results[x].get("reason") else "")
                                          for x in bad)  # fmt: skip
        else:
            entry["value"] = ra["sentences_per_s"] / rb["sentences_per_s"]
        entry["accuracy"] = {x: accuracy_text(results[x]) for x in (a, b)}
        ratios[label] = entry
    return ratios


def run_benchmark(args) -> dict:
    threads = threads_of(args)
    configs = expand_configs(args.configs)
    for added in configs[: len(configs) - len(dict.fromkeys(args.configs))]:
        print(f"[bench] adding {added}: the float32 reference of a requested configuration", file=sys.stderr)
    results: dict[str, dict] = {}
    vectors: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for cfg in configs:
            vec_path = Path(tmp) / f"{cfg}.npy"
            print(f"[bench] {cfg} ...", file=sys.stderr, flush=True)
            t = time.perf_counter()
            results[cfg] = run_worker(cfg, vec_path, args)
            results[cfg]["wall_s"] = time.perf_counter() - t
            if vec_path.exists():
                vectors[cfg] = np.load(vec_path)
    ratios = compute(args, results, vectors)
    from ..records import provenance

    argv = getattr(args, "argv", None)  # set by the CLI; else this process's command line
    command = ["prompteol", *argv] if argv is not None else None
    prov = provenance(command, threads=threads, device=args.device, packages=PEER_PACKAGES)
    return {
        "model": args.model, "n_sentences": args.n, "threads": threads, "batch_size": args.batch_size,
        "device": args.device, "dtype": args.dtype, "max_batch_tokens": args.max_batch_tokens,
        "accuracy_subset": {"split": STS_SPLIT, "pairs": args.sts_pairs, "which": f"the first {args.sts_pairs} "
                            f"pairs of {STS_SPLIT} in file order"} if args.sts_pairs else None,
        "tolerances": TOLERANCES, "machine": prov["machine"], "versions": prov["versions"],
        "date": prov["date"], "results": results, "ratios": ratios, "provenance": prov,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return run_from_args(parser().parse_args(argv), argv)


def run_from_args(args, argv: list[str] | None = None) -> int:
    if args.worker:
        from .worker import worker_main

        worker_main(argv or [])
        return 0
    report = run_benchmark(args)
    print_report(report)
    if args.output:
        Path(args.output).write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"wrote {args.output}")
    return 0
