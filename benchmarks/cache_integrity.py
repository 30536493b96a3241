"""Cost of the embedding-cache integrity checks: get_many read throughput and the open-time checks.

Writes a synthetic cache of ``--rows`` random float32 vectors of ``--dim`` into a temporary
folder, then measures (single thread, OS page cache warm, best of ``--repeat``):

- ``get_many`` throughput, for one call with every sentence and for calls of 1,000;
- opening the cache (``EmbeddingCache(path)``: the cheap open check);
- the verification alone (checksum + length + finiteness of each row, no SQLite), per row;
- ``PRAGMA quick_check`` / ``quick_check(1)`` / ``integrity_check`` on the same file, for comparison.

``--compare FILE`` also reads the same file with another implementation of ``prompteol/cache.py``
(for example the one before the checksums: ``git show <commit>:src/prompteol/cache.py >
/tmp/cache_old.py``; it reads a schema-2 file without verifying), alternating the two so that
both see the same machine load.

    python benchmarks/cache_integrity.py --rows 100000 --dim 576 --compare /tmp/cache_old.py
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import sqlite3  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402


def load_impl(path: str | None):
    import prompteol  # noqa: F401  (the package of the relative imports of the module)

    if path is None:
        from prompteol import cache

        return cache
    spec = importlib.util.spec_from_file_location("prompteol._bench_cache_impl", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def verify_only(rows: int, dim: int, repeat: int) -> float:
    """Seconds per row of the checks get_many adds (blake2b-128 + type/length + isfinite), without SQLite."""
    from prompteol.cache.store import _hasher

    rng = np.random.default_rng(1)
    vecs = rng.standard_normal((rows, dim), dtype=np.float32)
    blobs = [v.tobytes() for v in vecs]
    keys = [bytes(rng.bytes(32)) for _ in blobs]
    hasher = _hasher("bench")

    def checksum(k, b):
        h = hasher.copy()
        h.update(k)
        h.update(dim.to_bytes(4, "little"))
        h.update(b)
        return h.digest()

    sums = [checksum(k, b) for k, b in zip(keys, blobs)]

    def run():
        ok = [k for k, b, c in zip(keys, blobs, sums) if type(b) is bytes and len(b) == 4 * dim and checksum(k, b) == c]
        block = np.frombuffer(bytearray().join(blobs), dtype=np.float32).reshape(rows, dim)
        assert len(ok) == rows and np.isfinite(block).all(axis=1).all()

    def old():  # what the previous get_many did per row: a copy of the blob
        for b in blobs:
            np.frombuffer(b, dtype=np.float32).copy()

    return best(run, repeat) / rows, best(old, repeat) / rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=576)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--compare", default=None, help="another cache.py to measure on the same file")
    ap.add_argument("--dir", default=None, help="folder for the synthetic cache (default: a temporary one)")
    ap.add_argument("--no-pragma", action="store_true", help="skip the PRAGMA quick_check/integrity_check timings")
    ap.add_argument("-o", "--output", default=None, help="write the JSON record here")
    args = ap.parse_args()
    impls = {"current": load_impl(None)}
    if args.compare:
        impls["compare"] = load_impl(args.compare)
    mod = impls["current"]
    rng = np.random.default_rng(0)
    sentences = [f"synthetic sentence {i}" for i in range(args.rows)]
    fp = "bench-fingerprint"
    out: dict = {"rows": args.rows, "dim": args.dim, "compare": args.compare}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        db = Path(tmp) / "embeddings.sqlite"
        cache = mod.EmbeddingCache(db)
        t0 = time.perf_counter()
        for i in range(0, args.rows, 1000):
            vecs = rng.standard_normal((min(1000, args.rows - i), args.dim), dtype=np.float32)
            cache.put_many(fp, sentences[i : i + 1000], vecs)
        out["write_s"] = round(time.perf_counter() - t0, 2)
        cache.close()
        out["file_mb"] = round(db.stat().st_size / 2**20, 1)
        caches = {name: m.EmbeddingCache(db) for name, m in impls.items()}
        for c in caches.values():
            assert len(c.get_many(fp, sentences[:10])) == 10
        times: dict[str, list[float]] = {}
        for _ in range(args.repeat):  # alternate the implementations: same load for both
            for name, m in impls.items():
                c = caches[name]
                times.setdefault(f"{name}_open_ms", []).append(best(lambda m=m: m.EmbeddingCache(db).close(), 1) * 1e3)
                times.setdefault(f"{name}_all_us", []).append(
                    best(lambda c=c: c.get_many(fp, sentences), 1) / args.rows * 1e6
                )

                def chunked(c=c):
                    for i in range(0, args.rows, 1000):
                        c.get_many(fp, sentences[i : i + 1000])

                times.setdefault(f"{name}_1000_us", []).append(best(chunked, 1) / args.rows * 1e6)
        for c in caches.values():
            c.close()
        for key, values in times.items():
            out[key.replace("_us", "_us_per_vec") + "_best"] = round(min(values), 2)
            if key.endswith("_us"):
                out[key.replace("_us", "_vectors_per_s") + "_best"] = round(1e6 / min(values), -2)
        out["vector_bytes"] = 4 * args.dim
        check, copy = verify_only(min(args.rows, 20_000), args.dim, args.repeat)
        out["verify_only_us_per_row"] = round(check * 1e6, 2)
        out["old_copy_only_us_per_row"] = round(copy * 1e6, 2)
        if not args.no_pragma:
            con = sqlite3.connect(db)
            for pragma in ("quick_check(1)", "quick_check", "integrity_check"):
                out[f"pragma_{pragma}_s"] = round(best(lambda p=pragma: con.execute(f"PRAGMA {p}").fetchall(), 1), 3)
            con.close()
            out["pragma_quick_check_s_per_gib"] = round(out["pragma_quick_check_s"] / (out["file_mb"] / 1024), 2)
        if "compare_all_us_per_vec_best" in out:  # what the checks add per vector, as the docs quote it
            for calls in ("all", "1000"):
                new, old = out[f"current_{calls}_us_per_vec_best"], out[f"compare_{calls}_us_per_vec_best"]
                out[f"added_{calls}_us_per_vec"] = round(new - old, 2)
                out[f"added_{calls}_fraction"] = round(new / old - 1, 3)
        from prompteol.records import provenance

        out["provenance"] = provenance(threads=1)
        print(json.dumps(out, indent=1))
        if args.output:
            Path(args.output).write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
