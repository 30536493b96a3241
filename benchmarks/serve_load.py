"""Bounded load test of ``prompteol serve`` against the library, on the same model in the same run.

    python benchmarks/serve_load.py --model smollm2-135m --clients 32 --requests 480 --threads 2

The sentences (unique, so neither side gains from de-duplication) are split into ``--rounds``
parts. For each part, in alternating order so that a change in the machine's background load
hits both sides alike:

- library: ``Encoder.encode`` on the part's sentences (this process, cache off);
- server: ``prompteol serve`` (a subprocess on a free 127.0.0.1 port, started once, same torch
  thread count) answers N concurrent clients (asyncio + httpx, one connection each, closed
  loop) that send the part's requests.

Bounded: at most ``--requests`` requests and ``--duration`` seconds (rounds not started by
then are skipped).

Reports requests/s, sentences/s, p50/p95/p99 latency, errors, the server's mean batch size,
the largest difference between server and library vectors, and server / library sentences/s.
Sentences come from STS-B test (``$PROMPTEOL_DATA``, default ``../shared/data/senteval``) or a
text file (``--sentences``, one per line).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--clients", type=int, default=32, help="concurrent clients (default: %(default)s)")
    p.add_argument("--requests", type=int, default=480, help="total requests, at most (default: %(default)s)")
    p.add_argument("--duration", type=float, default=150.0,
                   help="seconds for all rounds, at most (default: %(default)s)")  # fmt: skip
    p.add_argument("--rounds", type=int, default=4,
                   help="library and server runs alternate this many times (default: %(default)s)")  # fmt: skip
    p.add_argument("--sentences-per-request", type=int, default=1, help="default: %(default)s")
    p.add_argument("--threads", type=int, default=max(1, os.cpu_count() or 1),
                   help="torch threads, library and server alike (default: all cores, %(default)s)")  # fmt: skip
    p.add_argument("--max-batch-size", type=int, default=32, help="library batch_size = server --max-batch-size")
    p.add_argument("--max-batch-tokens", type=int, default=2048, help="server merge budget (default: %(default)s)")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="server (default: %(default)s)")
    p.add_argument("--encoding-format", choices=["float", "base64"], default="base64",
                   help="what the clients ask for (the openai client asks for base64; default: %(default)s)")  # fmt: skip
    p.add_argument("--sentences", type=Path, default=None, help="text file, one sentence per line")
    p.add_argument("--arrival-baseline", action="store_true",
                   help="also time the library on batches in arrival order (consecutive chunks of --clients x "
                   "--sentences-per-request sentences): the most a server seeing only the requests in flight "
                   "can sort by length")  # fmt: skip
    p.add_argument("--server-verbose", dest="server_log_level", action="store_const", const=["-vv"], default=[],
                   help="run the server with -vv (one log line per merged group)")  # fmt: skip
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    return p.parse_args(argv)


def load_sentences(path: Path | None) -> list[str]:
    if path is not None:
        lines = path.read_text(encoding="utf-8").splitlines()
    else:
        data = Path(os.environ.get("PROMPTEOL_DATA", ROOT.parent / "shared" / "data" / "senteval"))
        sts = data / "downstream" / "STS" / "STSBenchmark" / "sts-test.csv"
        if not sts.is_file():
            raise SystemExit(f"no sentences: {sts} is missing; pass --sentences FILE or set PROMPTEOL_DATA")
        lines = []
        for row in sts.read_text(encoding="utf-8").splitlines():
            cols = row.split("\t")
            lines += cols[5:7]
    return list(dict.fromkeys(s.strip() for s in lines if s.strip()))  # unique, in file order


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def library_run(encoder, sentences: list[str], args) -> tuple[float, np.ndarray]:
    """Seconds taken by ``Encoder.encode`` on ``sentences`` (cache off), and the unit-length vectors."""
    start = time.perf_counter()
    vecs = encoder.encode(sentences, batch_size=args.max_batch_size, normalize=True, show_progress=False,
                          use_embedding_cache=False)  # fmt: skip
    return time.perf_counter() - start, vecs


def arrival_run(encoder, sentences: list[str], args) -> float:
    """Seconds for the library on consecutive chunks of what is in flight at once (no global sort)."""
    chunk = args.clients * args.sentences_per_request
    start = time.perf_counter()
    for i in range(0, len(sentences), chunk):
        encoder.encode(sentences[i : i + chunk], batch_size=args.max_batch_size, show_progress=False, use_embedding_cache=False)
    return time.perf_counter() - start


def start_server(args, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "prompteol.cli.main", "--threads", str(args.threads), *args.server_log_level, "serve",
           "--model", args.model, "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
           "--max-batch-size", str(args.max_batch_size), "--max-batch-tokens", str(args.max_batch_tokens),
           "--max-wait-ms", str(args.max_wait_ms)]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "PROMPTEOL_API_KEY"}
    log = tempfile.NamedTemporaryFile("w+", prefix="prompteol-serve-", suffix=".log", delete=False)  # noqa: SIM115
    print(f"server log: {log.name}")
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 300.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}; see the server log")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the server did not become healthy within {timeout:.0f} s")


async def load(url: str, requests: list[list[str]], args, stop_at: float) -> dict:
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    results: dict[int, np.ndarray] = {}
    next_index = 0
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)

    async def one_client(client: httpx.AsyncClient) -> None:
        nonlocal next_index
        while next_index < len(requests) and time.monotonic() < stop_at:
            i = next_index
            next_index += 1
            body = {"model": args.model, "input": requests[i], "encoding_format": args.encoding_format}
            t0 = time.perf_counter()
            try:
                r = await client.post("/v1/embeddings", json=body)
                if r.status_code != 200:
                    errors.append(f"{r.status_code}: {r.text[:200]}")
                    continue
                data = r.json()["data"]
            except httpx.HTTPError as exc:
                errors.append(repr(exc))
                continue
            latencies.append(time.perf_counter() - t0)
            if args.encoding_format == "base64":
                results[i] = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), "<f4") for d in data])
            else:
                results[i] = np.array([d["embedding"] for d in data], dtype=np.float32)

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=300) as client:
        await asyncio.gather(*(client.get("/health") for _ in range(args.clients)))  # open the connections first
        start = time.perf_counter()
        await asyncio.gather(*(one_client(client) for _ in range(args.clients)))
        wall = time.perf_counter() - start
    return {"latencies": latencies, "errors": errors, "results": results, "wall": wall}


def server_batches(url: str) -> dict[str, float]:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(url + "/metrics").text):
        for s in family.samples:
            if s.name in ("prompteol_batch_sentences_count", "prompteol_batch_sentences_sum",
                          "prompteol_batch_requests_sum", "prompteol_batch_seconds_sum"):  # fmt: skip
                out[s.name] = s.value
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from prompteol import Encoder

    pool = load_sentences(args.sentences)
    k = args.sentences_per_request
    n_req = min(args.requests, len(pool) // k)
    requests = [pool[i * k : (i + 1) * k] for i in range(n_req)]
    rounds = [requests[r :: args.rounds] for r in range(args.rounds)]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores ({platform.platform()}), load average "
          f"{os.getloadavg()[0]:.1f}; python {platform.python_version()}, torch {torch.__version__}")  # fmt: skip
    print(f"torch threads: library {torch.get_num_threads()} (interop {torch.get_num_interop_threads()}), "
          f"server --threads {args.threads}")  # fmt: skip
    print(f"model {args.model}; {n_req} requests x {k} sentence(s), all sentences unique (STS-B test); "
          f"{args.clients} clients; batch size {args.max_batch_size}, {args.max_batch_tokens} tokens, wait "
          f"{args.max_wait_ms} ms; {args.encoding_format}; {args.rounds} interleaved library/server rounds")  # fmt: skip

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(args, port)
    lib_time = lib_sent = arrival_time = 0.0
    latencies: list[float] = []
    errors: list[str] = []
    sent_done = 0
    server_wall = 0.0
    diff = 0.0
    try:
        encoder = Encoder.from_pretrained(args.model, progress=False)
        encoder.encode(pool[-8:], use_embedding_cache=False)  # warm-up (sentences not used below)
        wait_healthy(url, proc)
        deadline = time.monotonic() + args.duration
        for r, part in enumerate(rounds):
            if time.monotonic() > deadline:
                print(f"round {r + 1}: skipped (--duration {args.duration:.0f} s reached)")
                break
            sentences = [s for req in part for s in req]
            if r % 2 == 0:  # alternate the order, so a drift in the machine's load hits both sides alike
                lt, lib_vecs = library_run(encoder, sentences, args)
                out = asyncio.run(load(url, part, args, deadline))
            else:
                out = asyncio.run(load(url, part, args, deadline))
                lt, lib_vecs = library_run(encoder, sentences, args)
            lib_time += lt
            lib_sent += len(sentences)
            if args.arrival_baseline:
                arrival_time += arrival_run(encoder, sentences, args)
            server_wall += out["wall"]
            latencies += out["latencies"]
            errors += out["errors"]
            index = {s: i for i, s in enumerate(sentences)}
            for i, v in out["results"].items():
                sent_done += v.shape[0]
                diff = max(diff, float(np.abs(v - lib_vecs[[index[s] for s in part[i]]]).max()))
            done_sent = sum(len(part[i]) for i in out["results"])
            print(f"round {r + 1}: library {len(sentences) / lt:6.1f} sentences/s, server "
                  f"{done_sent / out['wall']:6.1f} sentences/s ({len(out['results'])} requests)")  # fmt: skip
        batches = server_batches(url)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()

    done = len(latencies)
    lat = np.array(latencies) * 1000 if done else np.zeros(1)
    server_sps = sent_done / server_wall if server_wall else 0.0
    library = lib_sent / lib_time if lib_time else float("nan")
    n_batches = batches.get("prompteol_batch_sentences_count", 0)
    report = {
        "model": args.model, "clients": args.clients, "threads": args.threads, "requests": done,
        "errors": len(errors), "wall_s": round(server_wall, 2), "requests_per_s": round(done / server_wall, 2),
        "sentences_per_s": round(server_sps, 2),
        "latency_ms": {p: round(float(np.percentile(lat, p)), 1) for p in (50, 95, 99)},
        "library_sentences_per_s": round(library, 2), "ratio": round(server_sps / library, 3),
        "batches": int(n_batches),
        "mean_batch_sentences": round(batches.get("prompteol_batch_sentences_sum", 0) / max(n_batches, 1), 1),
        "mean_batch_requests": round(batches.get("prompteol_batch_requests_sum", 0) / max(n_batches, 1), 1),
        "model_busy_fraction": round(batches.get("prompteol_batch_seconds_sum", 0) / server_wall, 3),
        "server_model_only_sentences_per_s": round(
            batches.get("prompteol_batch_sentences_sum", 0) / max(batches.get("prompteol_batch_seconds_sum", 0), 1e-9), 2
        ),
        "max_abs_diff_vs_library": diff,
    }  # fmt: skip
    print(f"server: {done} requests in {server_wall:.1f} s, {len(errors)} errors")
    print(f"  requests/s {report['requests_per_s']}, sentences/s {report['sentences_per_s']}")
    print(
        f"  latency ms p50 {report['latency_ms'][50]}, p95 {report['latency_ms'][95]}, p99 {report['latency_ms'][99]}"
    )
    print(f"  {report['batches']} batches, mean {report['mean_batch_sentences']} sentences / "
          f"{report['mean_batch_requests']} requests each; model busy {report['model_busy_fraction']:.0%} of the time")  # fmt: skip
    print(f"  model time only: {report['server_model_only_sentences_per_s']} sentences/s "
          f"(server sentences / time inside Encoder.encode)")  # fmt: skip
    print(f"  max |server - library| = {diff:.2e}")
    print(f"library: {int(lib_sent)} sentences in {lib_time:.1f} s = {library:.1f} sentences/s")
    if arrival_time:
        report["library_arrival_order_sentences_per_s"] = round(lib_sent / arrival_time, 2)
        print(f"library on arrival-order chunks of {args.clients * k} sentences: {lib_sent / arrival_time:.1f} "
              f"sentences/s = {lib_sent / arrival_time / library:.3f} of library")  # fmt: skip
    print(f"server / library sentences/s = {server_sps:.1f} / {library:.1f} = {report['ratio']:.3f}")
    for err in errors[:5]:
        print("  error:", err)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
