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

Soak mode (``--soak SECONDS``), a reliability run rather than a speed comparison:

    python benchmarks/serve_load.py --model smollm2-135m --soak 600 --clients 32 --threads 2 -o soak.json

N closed-loop clients send a mix of valid requests (1-8 sentences, float or base64, some with a
valid ``dimensions``) and invalid ones (an empty input list, too many inputs, an over-long text, lone
surrogates, bad ``dimensions``, a wrong model, bad JSON, a body over the size limit, JSON sent with
another Content-Type or none, an empty body), and some
clients are killed mid-request (the socket closed in the headers, in the body, or before the
answer). It records the statuses per kind (2xx/4xx/5xx), p50/p99 latency of the valid requests,
the server's RSS (``/proc/<pid>/status`` VmRSS) after the warm-up, during and at the end, and
spot-checks a reservoir sample of valid answers against ``Encoder.encode(..., normalize=True)``
in this process (after the load, so it does not compete with the server). Targets, each
checked and recorded: no 5xx, every kind answered its expected status, no wrong vector (max abs
difference <= ``--tolerance``), end RSS <= RSS after the warm-up + ``--rss-bound-mb``, and the
server still healthy. Exit code 0 only when all hold.

Both modes write (``-o``) a JSON record with its ``provenance`` (prompteol.records: date, git
commit, machine, thread counts, library versions, the exact command).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from prompteol.records import provenance

ROOT = Path(__file__).resolve().parents[1]
#: the server's own libraries, recorded with the others (records.LIBRARIES)
_SERVER_PACKAGES = ("fastapi", "starlette", "uvicorn", "pydantic", "httpx")


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
    p.add_argument("--no-server-packing", dest="packing", action="store_false",
                   help="the server pads its batches (`serve --no-packing`) instead of packing each merged group into "
                   "rows, its default; the library keeps its own default, length-sorted padded batches")  # fmt: skip
    p.add_argument("--encoding-format", choices=["float", "base64"], default="base64",
                   help="what the clients ask for (the openai client asks for base64; default: %(default)s)")  # fmt: skip
    p.add_argument("--sentences", type=Path, default=None, help="text file, one sentence per line")
    p.add_argument("--arrival-baseline", action="store_true",
                   help="also time the library on batches in arrival order (consecutive chunks of --clients x "
                   "--sentences-per-request sentences): the most a server seeing only the requests in flight "
                   "can sort by length")  # fmt: skip
    p.add_argument("--server-verbose", dest="server_log_level", action="store_const", const=["-vv"], default=[],
                   help="run the server with -vv (one log line per merged group)")  # fmt: skip
    p.add_argument("--json", "-o", type=Path, default=None, help="also write the results here (a JSON record)")
    soak = p.add_argument_group("soak mode (--soak SECONDS)")
    soak.add_argument("--soak", type=float, default=None, metavar="SECONDS",
                      help="run the soak test for this long instead of the library/server comparison")  # fmt: skip
    soak.add_argument("--warmup", type=float, default=None,
                      help="seconds of the same load before the RSS baseline is read (default: 10%% of --soak, "
                      "at most 60)")  # fmt: skip
    soak.add_argument("--invalid-fraction", type=float, default=0.3, help="share of invalid requests (default: 0.3)")
    soak.add_argument("--kill-fraction", type=float, default=0.05, help="share of killed requests (default: 0.05)")
    soak.add_argument("--spot-checks", type=int, default=200,
                      help="valid answers compared with the library, a reservoir sample (default: 200)")  # fmt: skip
    soak.add_argument("--tolerance", type=float, default=1e-4,
                      help="max abs difference of a correct vector (default: 1e-4)")  # fmt: skip
    soak.add_argument("--rss-bound-mb", type=float, default=200.0,
                      help="end RSS may exceed the RSS after the warm-up by this much (default: 200)")  # fmt: skip
    soak.add_argument("--max-inputs", type=int, default=64, help="server --max-inputs in soak mode (default: 64)")
    soak.add_argument("--max-input-tokens", type=int, default=2048,
                      help="server --max-input-tokens in soak mode (default: 2048)")  # fmt: skip
    soak.add_argument("--max-request-bytes", type=int, default=1 << 20,
                      help="server --max-request-bytes in soak mode (default: 1 MiB, so a body over it is cheap)")  # fmt: skip
    soak.add_argument("--seed", type=int, default=0, help="seed of the request mix (default: 0)")
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


def start_server(args, port: int, extra: list[str] | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "prompteol.cli.main", "--threads", str(args.threads), *args.server_log_level, "serve",
           "--model", args.model, "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
           "--max-batch-size", str(args.max_batch_size), "--max-batch-tokens", str(args.max_batch_tokens),
           "--max-wait-ms", str(args.max_wait_ms), *([] if getattr(args, "packing", True) else ["--no-packing"]),
           *(extra or [])]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "PROMPTEOL_API_KEY"}
    log = tempfile.NamedTemporaryFile("w+", prefix="prompteol-serve-", suffix=".log", delete=False)  # noqa: SIM115
    print(f"server log: {log.name}")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    proc.log_path = log.name  # type: ignore[attr-defined]
    proc.command = cmd  # type: ignore[attr-defined]
    return proc


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
    if args.soak is not None:
        return soak_main(args, argv)
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
        "provenance": provenance(["python", "benchmarks/serve_load.py", *(sys.argv[1:] if argv is None else argv)],
                                 threads=args.threads, packages=_SERVER_PACKAGES),
        "model": args.model, "clients": args.clients, "threads": args.threads, "requests": done,
        "server_packing": bool(getattr(args, "packing", True)),
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


# ---------------------------------------------------------------------------------------------- soak mode

#: the invalid requests of the soak mix and the status each must get (a body over the size limit
#: may also see its connection closed by the server while it is still being sent)
INVALID = {
    "empty_input": 400, "too_many_inputs": 400, "over_long_text": 400, "lone_surrogate": 400,
    "bad_dimensions": 400, "wrong_model": 404, "bad_json": 400, "huge_body": 413,
    "wrong_content_type": 415, "empty_body": 400,
}  # fmt: skip
#: the Content-Type each kind is sent with (application/json when not listed)
CONTENT_TYPES = {"wrong_content_type": ("text/plain", "application/x-www-form-urlencoded", None)}
KILL_MODES = ("in-headers", "in-body", "before-answer")


def rss_bytes(pid: int) -> int | None:
    """VmRSS of process ``pid`` (``None`` once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


class RssWatch(threading.Thread):
    """Samples the server's RSS every ``every`` seconds."""

    def __init__(self, pid: int, every: float = 1.0):
        super().__init__(daemon=True, name="rss-watch")
        self.pid, self.every = pid, every
        self.samples: list[tuple[float, int]] = []
        self.stop = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        self.t0 = time.monotonic()  # sample times count from the start of the load
        while not self.stop.is_set():
            rss = rss_bytes(self.pid)
            if rss is not None:
                self.samples.append((round(time.monotonic() - self.t0, 1), rss))
            self.stop.wait(self.every)


class SoakState:
    def __init__(self, spot_checks: int, rng: random.Random):
        self.counts: dict[str, dict[str, int]] = {}  # kind -> status (or "closed" / "transport-error") -> n
        self.latencies: list[float] = []  # valid requests answered 200 after the warm-up
        self.reservoir: list[tuple[list[str], int | None, np.ndarray]] = []
        self.valid_seen = 0
        self.spot_checks = spot_checks
        self.rng = rng
        self.errors: list[str] = []  # a sample of unexpected outcomes

    def note(self, kind: str, outcome: str) -> None:
        per = self.counts.setdefault(kind, {})
        per[outcome] = per.get(outcome, 0) + 1

    def keep(self, texts: list[str], dims: int | None, vectors: np.ndarray) -> None:
        """Reservoir sampling: every valid answer has the same chance to be spot-checked."""
        self.valid_seen += 1
        if len(self.reservoir) < self.spot_checks:
            self.reservoir.append((texts, dims, vectors))
        else:
            j = self.rng.randrange(self.valid_seen)
            if j < self.spot_checks:
                self.reservoir[j] = (texts, dims, vectors)


def invalid_body(kind: str, args, rng: random.Random, dim: int, huge: bytes) -> bytes:
    model = args.model
    if kind == "empty_input":  # (an empty string is a sentence, embedded as by the library)
        return json.dumps({"model": model, "input": []}).encode()
    if kind == "too_many_inputs":
        return json.dumps({"model": model, "input": ["a"] * (args.max_inputs + 1)}).encode()
    if kind == "over_long_text":
        return json.dumps({"model": model, "input": ["fine", "word " * (args.max_input_tokens + 50)]}).encode()
    if kind == "lone_surrogate":
        return json.dumps({"model": model, "input": ["fine", "a\ud800b"]}).encode()  # ensure_ascii: "a\\ud800b"
    if kind == "bad_dimensions":
        bad = rng.choice(["8", True, 0, -3, 8.5, dim + 1, "abc", [8]])
        return json.dumps({"model": model, "input": "a", "dimensions": bad}).encode()
    if kind == "wrong_model":
        return json.dumps({"model": "gpt-4-not-here", "input": "a"}).encode()
    if kind == "bad_json":
        return rng.choice(
            [b'{"model": "x", "input": ', b"not json at all", b'{"model": "x", "input": "a",}', b"\xff\xfe"]
        )
    if kind == "huge_body":
        return huge
    if kind == "wrong_content_type":
        return json.dumps({"model": model, "input": "a"}).encode()  # valid JSON, sent as something else
    if kind == "empty_body":
        return rng.choice([b"", b" ", b"\n"])
    raise ValueError(kind)


def valid_request(pool: list[str], rng: random.Random, model: str, dim: int) -> tuple[dict, list[str], int | None]:
    texts = rng.sample(pool, rng.randint(1, 8))
    dims = rng.choice([None, None, None, 16, dim // 2, dim])
    body: dict = {"model": model, "input": texts if len(texts) > 1 or rng.random() < 0.5 else texts[0],
                  "encoding_format": rng.choice(["float", "base64"])}  # fmt: skip
    if dims is not None:
        body["dimensions"] = dims
    return body, texts, dims


async def killed_request(host: str, port: int, body: bytes, rng: random.Random) -> str:
    """Open a connection, send part of a valid request (or all of it), and drop the connection."""
    mode = rng.choice(KILL_MODES)
    head = (f"POST /v1/embeddings HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()  # fmt: skip
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        return "connect-failed"
    try:
        if mode == "in-headers":
            writer.write(head[: rng.randint(1, len(head) - 1)])
        elif mode == "in-body":
            writer.write(head + body[: rng.randint(0, len(body) - 1)])
        else:
            writer.write(head + body)
        await writer.drain()
        await asyncio.sleep(rng.uniform(0.0, 0.3))  # the server reads, queues or computes meanwhile
    except OSError:
        pass
    finally:
        writer.transport.abort()  # no FIN handshake: as a killed client
    return mode


def _decode(data: list[dict]) -> np.ndarray:
    if data and isinstance(data[0]["embedding"], str):
        return np.stack([np.frombuffer(base64.b64decode(d["embedding"]), "<f4") for d in data])
    return np.array([d["embedding"] for d in data], dtype=np.float32)


async def soak_load(url: str, args, pool: list[str], dim: int, stop_at: float, warm_until: float,
                    state: SoakState) -> None:  # fmt: skip
    import httpx

    host, port = "127.0.0.1", int(url.rsplit(":", 1)[1])
    huge = b'{"model": "' + args.model.encode() + b'", "input": "' + b"x" * (args.max_request_bytes + 1) + b'"}'
    kinds = list(INVALID)
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)

    async def one_client(client: httpx.AsyncClient, rng: random.Random) -> None:
        while time.monotonic() < stop_at:
            roll = rng.random()
            if roll < args.kill_fraction:
                body, _, _ = valid_request(pool, rng, args.model, dim)
                state.note("killed", await killed_request(host, port, json.dumps(body).encode(), rng))
                continue
            invalid = roll < args.kill_fraction + args.invalid_fraction
            kind = rng.choice(kinds) if invalid else "valid"
            texts, dims = [], None
            if invalid:
                content = invalid_body(kind, args, rng, dim, huge)
            else:
                body, texts, dims = valid_request(pool, rng, args.model, dim)
                content = json.dumps(body).encode()
            kind_of_content = rng.choice(CONTENT_TYPES[kind]) if kind in CONTENT_TYPES else "application/json"
            headers = {"Content-Type": kind_of_content} if kind_of_content else {}
            t0 = time.perf_counter()
            try:
                r = await client.post("/v1/embeddings", content=content, headers=headers)
            except httpx.HTTPError as exc:
                outcome = "closed" if kind == "huge_body" else "transport-error"
                state.note(kind, outcome)
                if outcome != "closed" and len(state.errors) < 20:
                    state.errors.append(f"{kind}: {exc!r}")
                continue
            state.note(kind, str(r.status_code))
            expected = 200 if kind == "valid" else INVALID[kind]
            if r.status_code != expected and len(state.errors) < 20:
                state.errors.append(f"{kind}: {r.status_code} {r.text[:200]}")
            if kind == "valid" and r.status_code == 200:
                if time.monotonic() >= warm_until:
                    state.latencies.append(time.perf_counter() - t0)
                state.keep(texts, dims, _decode(r.json()["data"]))

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=300) as client:
        await asyncio.gather(*(one_client(client, random.Random(args.seed * 1000 + c)) for c in range(args.clients)))


def server_statuses(url: str) -> dict[str, int]:
    """``prompteol_http_requests_total`` summed by status (what the server itself recorded)."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, int] = {}
    for family in text_string_to_metric_families(httpx.get(url + "/metrics", timeout=30).text):
        for s in family.samples:
            if s.name == "prompteol_http_requests_total":
                status = s.labels.get("status", "?")
                out[status] = out.get(status, 0) + int(s.value)
    return out


def soak_pool(args) -> list[str]:
    try:
        return load_sentences(args.sentences)
    except SystemExit:  # no STS-B here: synthetic sentences
        rng = random.Random(args.seed)
        words = "a man woman dog cat plays eats runs on the in with guitar street park red small".split()
        return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 20))) + "." for _ in range(2000)]


def soak_main(args, argv) -> int:
    import httpx

    pool = soak_pool(args)
    warmup = args.warmup if args.warmup is not None else min(60.0, 0.1 * args.soak)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    extra = ["--max-inputs", str(args.max_inputs), "--max-input-tokens", str(args.max_input_tokens),
             "--max-request-bytes", str(args.max_request_bytes)]  # fmt: skip
    proc = start_server(args, port, extra)
    print(f"soak: {args.model}, {args.clients} clients, {args.soak:.0f} s (+{warmup:.0f} s warm-up), invalid "
          f"{args.invalid_fraction:.0%}, killed {args.kill_fraction:.0%}; server --threads {args.threads}")  # fmt: skip
    state = SoakState(args.spot_checks, random.Random(args.seed))
    watch = RssWatch(proc.pid)
    healthy_after = False
    try:
        wait_healthy(url, proc)
        dim = int(httpx.get(url + "/health", timeout=30).json()["dimensions"])
        rss_loaded = rss_bytes(proc.pid)
        watch.start()
        t0 = time.monotonic()
        warm_until, stop_at = t0 + warmup, t0 + warmup + args.soak
        rss_start: list[int | None] = [None]

        def note_start() -> None:
            time.sleep(max(0.0, warm_until - time.monotonic()))
            rss_start[0] = rss_bytes(proc.pid)

        baseline = threading.Thread(target=note_start, daemon=True)
        baseline.start()
        asyncio.run(soak_load(url, args, pool, dim, stop_at, warm_until, state))
        wall = time.monotonic() - t0
        baseline.join()
        time.sleep(1.0)  # let the server finish what killed clients left
        rss_end = rss_bytes(proc.pid)
        healthy_after = httpx.get(url + "/health", timeout=30).status_code == 200
        statuses = server_statuses(url)
    finally:
        watch.stop.set()
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
    log_text = Path(proc.log_path).read_text(errors="replace")  # type: ignore[attr-defined]

    # spot-checks against the library, after the load (same model, same thread count)
    import torch

    torch.set_num_threads(args.threads)
    from prompteol import Encoder

    encoder = Encoder.from_pretrained(args.model, progress=False)
    max_diff, wrong = 0.0, 0
    for texts, dims, got in state.reservoir:
        want = encoder.encode(texts, normalize=True, truncate_dim=dims, show_progress=False, use_embedding_cache=False)
        diff = float(np.abs(got - want).max()) if got.shape == want.shape else float("inf")
        max_diff = max(max_diff, diff)
        wrong += diff > args.tolerance

    classes = {"2xx": 0, "4xx": 0, "5xx": 0}
    unexpected = 0
    for kind, per in state.counts.items():
        for outcome, n in per.items():
            if outcome.isdigit():
                classes[f"{outcome[0]}xx"] = classes.get(f"{outcome[0]}xx", 0) + n
            if kind == "killed":
                continue
            closed = {"closed"} if kind == "huge_body" else set()
            expected = {"200"} if kind == "valid" else {str(INVALID[kind])} | closed
            unexpected += n if outcome not in expected else 0
    server_5xx = sum(n for status, n in statuses.items() if status.startswith("5"))
    lat = np.array(state.latencies) * 1000 if state.latencies else np.zeros(1)
    mb = 2**20
    samples = watch.samples
    rss_max = max((r for _, r in samples), default=None)
    start, end = rss_start[0], rss_end
    growth = (end - start) / mb if start is not None and end is not None else None
    targets = {
        "no_5xx": classes.get("5xx", 0) == 0 and server_5xx == 0,
        "expected_statuses": unexpected == 0,
        "no_wrong_vectors": wrong == 0 and len(state.reservoir) > 0,
        "bounded_memory": growth is not None and growth <= args.rss_bound_mb,
        "healthy_after": healthy_after,
    }
    step = max(1, len(samples) // 120)  # at most ~120 samples in the record
    record = {
        "schema": "prompteol.serve-soak/1",
        "command": "python benchmarks/serve_load.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "server_command": " ".join(proc.command),  # type: ignore[attr-defined]
        "provenance": provenance(["python", "benchmarks/serve_load.py", *(sys.argv[1:] if argv is None else argv)],
                                 threads=args.threads, packages=_SERVER_PACKAGES),
        "threads": {"server": args.threads, "torch_library": torch.get_num_threads()},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "json"},
        "seconds": {"warmup": warmup, "soak": args.soak, "wall": round(wall, 1)},
        "requests": sum(n for per in state.counts.values() for n in per.values()),
        "counts": state.counts, "status_classes": classes, "unexpected_outcomes": unexpected,
        "unexpected_sample": state.errors, "server_statuses": statuses,
        "latency_ms_valid": {"n": len(state.latencies), "p50": round(float(np.percentile(lat, 50)), 1),
                             "p99": round(float(np.percentile(lat, 99)), 1)},  # fmt: skip
        "rss_mb": {"loaded": round(rss_loaded / mb, 1) if rss_loaded else None,
                   "start_after_warmup": round(start / mb, 1) if start else None,
                   "end": round(end / mb, 1) if end else None, "max": round(rss_max / mb, 1) if rss_max else None,
                   "growth": round(growth, 1) if growth is not None else None, "bound": args.rss_bound_mb,
                   "samples": [(t, round(r / mb, 1)) for t, r in samples[::step]]},  # fmt: skip
        "spot_checks": {"n": len(state.reservoir), "of_valid_answers": state.valid_seen,
                        "max_abs_diff": max_diff, "wrong": wrong, "tolerance": args.tolerance},  # fmt: skip
        "server_log": {"path": proc.log_path, "tracebacks": log_text.count("Traceback")},  # type: ignore[attr-defined]
        "targets": targets, "passed": all(targets.values()),
    }  # fmt: skip
    print(f"requests: {record['requests']} in {wall:.0f} s; client-seen {classes}; server-recorded {statuses}")
    for kind in ["valid", *INVALID, "killed"]:
        if kind in state.counts:
            print(f"  {kind:16s} {state.counts[kind]}")
    print(f"latency of valid requests (after warm-up, n={len(state.latencies)}): p50 "
          f"{record['latency_ms_valid']['p50']} ms, p99 {record['latency_ms_valid']['p99']} ms")  # fmt: skip
    print(f"server RSS: {record['rss_mb']['loaded']} MB loaded, {record['rss_mb']['start_after_warmup']} MB after "
          f"warm-up, {record['rss_mb']['end']} MB at the end (max {record['rss_mb']['max']}), growth "
          f"{record['rss_mb']['growth']} MB (bound {args.rss_bound_mb:.0f})")  # fmt: skip
    print(f"spot-checks: {len(state.reservoir)} of {state.valid_seen} valid answers vs Encoder.encode: max abs diff "
          f"{max_diff:.2e}, {wrong} over {args.tolerance:g}")  # fmt: skip
    print(f"server log: {record['server_log']['tracebacks']} tracebacks; unexpected outcomes: {unexpected}")
    for err in state.errors[:5]:
        print("  unexpected:", err)
    print("targets: " + ", ".join(f"{k} {'ok' if v else 'FAILED'}" for k, v in targets.items()))
    if args.json:
        args.json.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0 if record["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
