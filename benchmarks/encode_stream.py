"""Peak memory of the streaming ``prompteol encode`` at corpus size: it must not grow with the input.

    python benchmarks/encode_stream.py --lines 100000,1000000 --threads 2 -o docs/results/encode_stream_rss.json

For each line count N, writes a text file of N short sentences (the STS-B train sentences, cycled, each
with its line number so no two are equal), runs ``prompteol encode FILE -o OUT.parquet`` in a child
process (``--no-cache``: the embedding cache would otherwise grow by N rows; the tiny packaged model by
default, so the run measures the pipeline, not a model), and records the child's peak RSS (``ru_maxrss``
of the waited child), wall time, sentences/s, the output's row count (read back from the Parquet footer)
and its size. Bounded memory means the peak RSS is about the same at every N. The input and output
files live in a temporary folder and are removed.
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
from datetime import UTC, datetime
from pathlib import Path


def _sentences(data: str | None) -> list[str]:
    from prompteol.evaluation import load_sts_pairs

    pairs = load_sts_pairs("STSBenchmark-train", data)
    return list(dict.fromkeys(pairs.sentences1 + pairs.sentences2))


def _write_input(path: Path, n: int, base: list[str]) -> int:
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(f"{base[i % len(base)]} ({i})\n")
    return path.stat().st_size


def _run_child(cmd: list[str], env: dict[str, str], peak_file: Path) -> tuple[int, float, int, str]:
    """(exit status, wall seconds, peak RSS in bytes of the child, stderr tail); the child writes its own
    ``ru_maxrss`` (RUSAGE_SELF) to ``peak_file`` when it ends."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate()
    wall = time.perf_counter() - t
    peak = int(peak_file.read_text()) if peak_file.is_file() else 0
    return proc.returncode, wall, peak, err[-2000:]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lines", default="100000,1000000", help="comma-separated line counts (default: %(default)s)")
    p.add_argument("--model", default="tiny-random-llama")
    p.add_argument("--format", default="parquet", choices=("parquet", "npy", "jsonl"))
    p.add_argument("--output-dtype", default="float16", choices=("float32", "float16"))
    p.add_argument("--chunk-size", type=int, default=None, help="passed to encode (default: its own)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data-dir", default=None)
    p.add_argument("-o", "--output", required=True, help="JSON record to write")
    args = p.parse_args(argv)
    counts = [int(x) for x in args.lines.split(",") if x]
    if not counts:
        p.error("--lines is empty")
    data = args.data_dir or os.environ.get("PROMPTEOL_DATA")
    base = _sentences(data)
    runs = []
    for n in counts:
        with tempfile.TemporaryDirectory(prefix="prompteol-stream-") as tmp:
            src, out = Path(tmp) / "input.txt", Path(tmp) / f"out.{args.format}"
            size = _write_input(src, n, base)
            # a fresh interpreter per N, which reports its own peak (ru_maxrss of RUSAGE_SELF)
            peak_file = Path(tmp) / "peak"
            cmd = [sys.executable, __file__, "--_child", json.dumps({
                "peak_file": str(peak_file), "argv": ["--threads", str(args.threads), "encode", str(src), "-o", str(out), "--model", args.model,
                         "--no-cache", "--no-progress", "--output-dtype", args.output_dtype,
                         *(["--chunk-size", str(args.chunk_size)] if args.chunk_size else [])]})]  # fmt: skip
            rc, wall, peak, err = _run_child(cmd, dict(os.environ), peak_file)
            if rc != 0:
                print(err, file=sys.stderr)
                raise SystemExit(f"encode of {n} lines failed (exit status {rc})")
            rows = _rows(out, args.format)
            if rows != n:
                raise SystemExit(f"encode of {n} lines wrote {rows} rows")
            run = {"lines": n, "input_bytes": size, "output_bytes": out.stat().st_size, "rows_written": rows,
                   "wall_s": round(wall, 1), "sentences_per_s": round(n / wall, 1),
                   "peak_rss_mib": round(peak / 2**20, 1)}  # fmt: skip
            print(json.dumps(run), flush=True)
            runs.append(run)
    from prompteol.records import provenance

    record = {
        "schema": "prompteol.bench-encode-stream/1",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", *sys.argv]),
        "model": args.model, "format": args.format, "output_dtype": args.output_dtype,
        "chunk_size": args.chunk_size, "threads": args.threads,
        "provenance": provenance(threads=args.threads, packages=("pyarrow",)),
        "runs": runs,
        "peak_rss_ratio_largest_to_smallest": round(runs[-1]["peak_rss_mib"] / runs[0]["peak_rss_mib"], 3),
        "note": "peak RSS of the `prompteol encode` process (ru_maxrss), model and interpreter included",
    }  # fmt: skip
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


def _rows(out: Path, fmt: str) -> int:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(out).metadata.num_rows
    if fmt == "npy":
        import numpy as np

        return int(np.load(out, mmap_mode="r").shape[0])
    with open(out, "rb") as f:
        return sum(1 for _ in f)


def _child(spec: str) -> int:
    from prompteol.cli.main import main as cli_main

    job = json.loads(spec)
    try:
        return int(cli_main(job["argv"]) or 0)
    finally:
        Path(job["peak_file"]).write_text(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024))



if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--_child":
        sys.exit(_child(sys.argv[2]))
    sys.exit(main())
