"""Ray engine vs local encode at equal cores: wall time, sentences/s, Ray's overhead, peak RSS per actor.

    python benchmarks/ray_encode.py -o benchmarks/results/ray_encode_smollm2-135m.json      # the lead's run
    python benchmarks/ray_encode.py --model tiny-random-llama --n 300 -o /tmp/ray_bench.json  # a quick check

1. ``--n`` (10,000) unique sentences of the SentEval STS files (STS-B, SICK, STS12-16, read with
   :func:`prompteol.evaluation.load_sts_pairs`, from ``--data-dir`` or ``$PROMPTEOL_DATA``) are
   written to one Parquet file (column ``text``, plus ``id``);
2. three configurations run one after the other, each in its own subprocess, all without the
   embedding cache, on the same model, batch size and cores (``--threads``, 2):

   - ``local``: ``Encoder.from_config(...).encode(texts)`` with ``--threads`` torch threads;
   - ``ray-1x2``: ``encode_files`` (= ``prompteol encode --engine ray``), one actor of ``--threads`` threads;
   - ``ray-2x1``: ``--threads`` actors of one thread each;

   the wall time of each is measured inside its process from before the first heavy import
   (torch / ray) to the vectors on disk: model load and Ray's start-up (``ray.init``, actors)
   included; the encode-only time is recorded too;
3. the Ray outputs are compared with the local vectors row for row (max abs diff, also relative
   to the largest component, and the smallest cosine) before any ratio is reported; the overhead is ``ray wall / local wall - 1`` (target: <= 0.15);
4. one JSON record (machine, threads, versions, command, every number) goes to ``-o``.

A local Ray is started with ``num_cpus=os.cpu_count()``: run it on an idle machine whose core
count is the ``--threads`` compared, or the Ray runs get more cores than the local one.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIGS = ("local", "ray-1x2", "ray-2x1")
STS_SOURCES = ("STSBenchmark-train", "STSBenchmark-dev", "STSBenchmark", "SICK-train", "SICK-trial", "SICKRelatedness",
               "STS12", "STS13", "STS14", "STS15", "STS16")  # fmt: skip
TARGET_OVERHEAD = 0.15


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_sentences(data_dir: str | None, n: int) -> list[str]:
    """The first ``n`` unique sentences of the STS files, in the order of :data:`STS_SOURCES`."""
    from prompteol.evaluation.data import load_sts_pairs

    root = data_dir or os.environ.get("PROMPTEOL_DATA") or "../shared/data/senteval"
    seen: dict[str, None] = {}
    for name in STS_SOURCES:
        pairs = load_sts_pairs(name, root, verify=False)
        for a, b in zip(pairs.sentences1, pairs.sentences2):
            seen.setdefault(a)
            seen.setdefault(b)
        if len(seen) >= n:
            break
    if len(seen) < n:
        raise SystemExit(f"only {len(seen)} unique STS sentences under {root}; ask for --n {len(seen)} or fewer")
    return list(seen)[:n]


# ---------------------------------------------------------------------------------------------- workers
def _worker(cfg: str, args) -> dict:
    """One configuration, in this (fresh) process; returns its numbers."""
    t0 = time.perf_counter()
    config = {"model": args.model}
    if cfg == "local":
        import numpy as np
        import pyarrow.parquet as pq
        import torch

        torch.set_num_threads(args.threads)
        from prompteol import Encoder, EncoderConfig

        texts = pq.read_table(args.input, columns=["text"]).column("text").to_pylist()
        t_load = time.perf_counter()
        enc = Encoder.from_config(EncoderConfig.from_dict(config), embedding_cache=None, progress=False)
        t_enc = time.perf_counter()
        vectors = enc.encode(texts, batch_size=args.batch_size, max_batch_tokens=args.max_batch_tokens,
                             show_progress=False, use_embedding_cache=False)  # fmt: skip
        t_end = time.perf_counter()
        np.save(args.vectors, vectors)
        wall = time.perf_counter() - t0
        return {"config": cfg, "threads": torch.get_num_threads(), "rows": len(texts), "wall_s": round(wall, 3),
                "load_s": round(t_enc - t_load, 3), "encode_s": round(t_end - t_enc, 3),
                "sentences_per_s": round(len(texts) / wall, 2), "peak_rss_mib": round(_rss_mib(), 1)}  # fmt: skip
    actors, threads = (1, args.threads) if cfg == "ray-1x2" else (args.threads, 1)
    from prompteol.corpus.distributed import encode_files

    summary = encode_files(
        args.input, args.vectors, config, num_actors=actors, cpus_per_actor=threads, batch_rows=args.ray_batch_rows,
        batch_size=args.batch_size, max_batch_tokens=args.max_batch_tokens, quiet=True,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    return {"config": cfg, "num_actors": actors, "threads_per_actor": threads, "rows": summary["rows"],
            "wall_s": round(wall, 3), "sentences_per_s": round(summary["rows"] / wall, 2),
            "driver_peak_rss_mib": round(_rss_mib(), 1), "summary": summary,
            "actor_peak_rss_mib": {a: s["max_rss_mib"] for a, s in summary["actors"].items()},
            "rows_per_actor": {a: s["rows"] for a, s in summary["actors"].items()}}  # fmt: skip


def _read_ray_vectors(folder: Path):
    import numpy as np
    import pyarrow.parquet as pq

    table = pq.read_table(folder / "part-00000.parquet", columns=["id", "embedding"])
    col = table.column("embedding").combine_chunks()
    vectors = col.values.to_numpy(zero_copy_only=False).reshape(len(col), -1).astype(np.float32)
    order = np.asarray(table.column("id").to_pylist())
    out = np.empty_like(vectors)
    out[order] = vectors
    return out


def run_benchmark(args) -> dict:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from prompteol.encoder.postprocess import cosine_pairwise
    from prompteol.records import provenance

    load_at_start = list(os.getloadavg())
    sentences = load_sentences(args.data_dir, args.n)
    results: dict[str, dict] = {}
    diffs: dict[str, float] = {}
    cosines: dict[str, float] = {}
    scale = 0.0
    with tempfile.TemporaryDirectory(prefix="ray-bench-") as tmp:
        corpus = Path(tmp) / "sts.parquet"
        pq.write_table(pa.table({"id": list(range(len(sentences))), "text": sentences}), corpus)
        for cfg in args.configs:
            out = Path(tmp) / (f"{cfg}.npy" if cfg == "local" else cfg)
            res_path = Path(tmp) / f"{cfg}.json"
            cmd = [sys.executable, __file__, "--worker", cfg, "--input", str(corpus), "--vectors", str(out),
                   "--result", str(res_path), "--model", args.model, "--threads", str(args.threads),
                   "--batch-size", str(args.batch_size), "--ray-batch-rows", str(args.ray_batch_rows)]  # fmt: skip
            if args.max_batch_tokens:
                cmd += ["--max-batch-tokens", str(args.max_batch_tokens)]
            env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
            env.pop("RAY_ADDRESS", None)  # always a local Ray on this machine
            print(f"[{cfg}] running ...", file=sys.stderr, flush=True)
            t = time.perf_counter()
            proc = subprocess.run(cmd, env=env, capture_output=not args.verbose, text=True)
            if proc.returncode != 0:
                tail = (proc.stderr or "")[-3000:]
                raise SystemExit(f"[{cfg}] failed with exit code {proc.returncode}:\n{tail}")
            res = json.loads(res_path.read_text())
            res["process_wall_s"] = round(time.perf_counter() - t, 3)
            results[cfg] = res
            print(f"[{cfg}] {res['wall_s']:.1f} s, {res['sentences_per_s']:.1f} sentences/s", file=sys.stderr)
        if "local" in results:
            local = np.load(Path(tmp) / "local.npy")
            scale = float(np.abs(local).max())
            for cfg in results:
                if cfg != "local":
                    got = _read_ray_vectors(Path(tmp) / cfg)
                    diffs[cfg] = float(np.abs(got - local).max())
                    cosines[cfg] = float(cosine_pairwise(got, local).min())
    overhead = {}
    if "local" in results:
        for cfg in results:
            if cfg != "local":
                overhead[cfg] = round(results[cfg]["wall_s"] / results["local"]["wall_s"] - 1, 4)
    return {
        "benchmark": "ray_encode", "model": args.model, "n": len(sentences), "sources": list(STS_SOURCES),
        "threads": args.threads, "batch_size": args.batch_size, "max_batch_tokens": args.max_batch_tokens,
        "ray_batch_rows": args.ray_batch_rows, "embedding_cache": False,
        "command": "python " + " ".join([sys.argv[0], *sys.argv[1:]]),
        "load_average_at_start": load_at_start, "provenance": provenance(threads=args.threads, packages=("ray", "pyarrow")),
        "results": results,
        "max_abs_diff_vs_local": diffs, "max_abs_local_value": scale, "min_cosine_vs_local": cosines,
        "overhead_vs_local": overhead, "target_overhead": TARGET_OVERHEAD,
        "within_target": {cfg: o <= TARGET_OVERHEAD for cfg, o in overhead.items()},
        # equal up to float32 rounding of other batch shapes: relative to the largest component
        "vectors_equal": {cfg: d <= 1e-5 * max(scale, 1.0) for cfg, d in diffs.items()},
    }  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m", help="model (default: %(default)s)")
    p.add_argument("--n", type=int, default=10_000, help="unique STS sentences (default: %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="cores compared: local threads = actors x threads")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-batch-tokens", type=int, default=None)
    p.add_argument("--ray-batch-rows", type=int, default=256)
    p.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS))
    p.add_argument("--data-dir", default=None, help="SentEval data root (default: $PROMPTEOL_DATA)")
    p.add_argument("-o", "--output", default=None, help="JSON record to write")
    p.add_argument("-v", "--verbose", action="store_true", help="show the subprocesses' output")
    # worker mode (internal)
    p.add_argument("--worker", choices=CONFIGS, help=argparse.SUPPRESS)
    p.add_argument("--input", help=argparse.SUPPRESS)
    p.add_argument("--vectors", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.worker:
        Path(args.result).write_text(json.dumps(_worker(args.worker, args)))
        return 0
    record = run_benchmark(args)
    text = json.dumps(record, indent=2)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
