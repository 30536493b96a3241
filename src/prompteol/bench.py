"""Encoding throughput benchmark: prompteol vs the reference recipe, sentence-transformers and the GEMM peak.

Every configuration runs in its own subprocess (sequentially, same thread count), so peak RSS
is measured per configuration; the parent prints a table and writes JSON. Vectors of every
configuration are compared with prompteol's float32 vectors before any speed ratio is
reported: a comparison of different computations would mean nothing.

Configurations (``--configs``):

- ``prompteol``: :class:`prompteol.Encoder`, float32, no demonstration
- ``prompteol-demo``: the same with one demonstration (shared-prefix KV cache)
- ``prompteol-demo-nocache``: with the demonstration recomputed for every sentence
- ``prompteol-bf16`` / ``prompteol-int8``: bfloat16 weights / torch dynamic int8 Linear layers
- ``reference`` / ``reference-demo``: the paper's code path: ``AutoModelForCausalLM`` forward with
  ``output_hidden_states=True`` (vocabulary logits computed), batch 16 in the given order, left
  padding, ``hidden_states[-1][:, -1]``, demonstration inside every prompt
- ``st``: sentence-transformers ``Transformer`` (text modality only, so no chat template) +
  ``Pooling(lasttoken)`` on the same rendered prompts and the same weights
- ``gemm``: the machine's float32 matmul peak with the same thread count
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DEMO = ("A man is smoking.", "Smoking")
ALL_CONFIGS = [
    "gemm", "prompteol", "prompteol-demo", "prompteol-demo-nocache", "reference", "reference-demo", "st",
    "prompteol-bf16", "prompteol-int8",
]  # fmt: skip
#: each configuration's vectors are compared with those of the prompteol configuration computing the same thing
MATCHING = {
    "reference": "prompteol", "st": "prompteol", "prompteol-bf16": "prompteol", "prompteol-int8": "prompteol",
    "reference-demo": "prompteol-demo", "prompteol-demo-nocache": "prompteol-demo",
}  # fmt: skip
DEFAULT_CONFIGS = ["gemm", "prompteol", "prompteol-demo", "reference", "reference-demo", "st"]


def load_sentences(data_dir: str | None, n: int) -> list[str]:
    """The first ``n`` unique STS-B train sentences, as SentEval presents them (the harness's reader)."""
    from .evaluation.data import load_sts_pairs

    root = data_dir or os.environ.get("PROMPTEOL_DATA") or "../shared/data/senteval"
    pairs = load_sts_pairs("STSBenchmark-train", root, verify=False)
    out: dict[str, None] = {}
    for a, b in zip(pairs.sentences1, pairs.sentences2):
        out[a] = None
        out[b] = None
        if len(out) >= n:
            break
    return list(out)[:n]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------------- workers (subprocess)
def _sync(device: str) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _gemm(threads: int, device: str = "cpu", dtype: str = "float32") -> dict:
    import torch

    best = 0.0
    sizes = (2048, 3072, 4096) if device == "cpu" else (4096, 8192)
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=getattr(torch, dtype))
        b = torch.randn(n, n, device=device, dtype=getattr(torch, dtype))
        a @ b  # warm-up
        _sync(device)
        for _ in range(3):
            t = time.perf_counter()
            a @ b
            _sync(device)
            best = max(best, 2 * n**3 / (time.perf_counter() - t))
    return {"gemm_flops": best}


def _encoder_worker(cfg: str, args) -> dict:
    import torch

    from .encoder import Encoder

    kwargs: dict = {}
    if "demo" in cfg:
        kwargs["demonstrations"] = [DEMO]
    if cfg.endswith("nocache"):
        kwargs["prefix_cache"] = False
    kwargs["device"] = args.device
    if args.dtype != "float32":
        kwargs["dtype"] = args.dtype
    if cfg.endswith("bf16"):
        kwargs["dtype"] = "bfloat16"
    if cfg.endswith("int8"):
        kwargs["quantization"] = "int8-dynamic"
    t = time.perf_counter()
    enc = Encoder.from_pretrained(args.model, progress=False, **kwargs)
    load_s = time.perf_counter() - t
    sentences = load_sentences(args.data_dir, args.n)
    seqs = enc.prompts.tokenize(enc.prompts.prepare(sentences))
    prompt_tokens = sum(len(s) for s in seqs)
    prefix = enc.prefix.get(enc.runner) if enc.config.prefix_cache else None
    cached = len(prefix.ids) * sum(1 for s in seqs if s[: len(prefix.ids)] == prefix.ids) if prefix else 0
    enc.encode(sentences[:16], batch_size=args.batch_size, use_embedding_cache=False)  # warm-up
    t = time.perf_counter()
    vecs = enc.encode(sentences, batch_size=args.batch_size, max_batch_tokens=args.max_batch_tokens,
                      use_embedding_cache=False)  # fmt: skip
    dt = time.perf_counter() - t
    params = sum(p.numel() for n, p in enc.model.named_parameters() if "embed" not in n)
    weights_mb = sum(p.numel() * p.element_size() for p in enc.model.parameters()) / 2**20
    if not params:  # int8 dynamic modules keep packed weights outside named_parameters
        params = args.nonembed_params
    del torch
    return {"seconds": dt, "load_s": load_s, "prompt_tokens": prompt_tokens, "computed_tokens": prompt_tokens - cached,
            "nonembed_params": params, "weights_mb": weights_mb, "vectors": vecs}  # fmt: skip


def _reference_worker(cfg: str, args) -> dict:
    """The reference recipe (kongds/scaling_sentemb evaluation.py), with our normalisation/rendering."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .models.loading import quiet_transformers, resolve_model
    from .templates import TEMPLATES, Demonstration, normalize_sentence

    path = resolve_model(args.model, progress=False).path
    t = time.perf_counter()
    with quiet_transformers():
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, args.dtype)).to(args.device).eval()
    load_s = time.perf_counter() - t
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    demos = [Demonstration(*DEMO)] if "demo" in cfg else []
    sentences = load_sentences(args.data_dir, args.n)
    prompts = [TEMPLATES["prompteol"].render(normalize_sentence(s), demos) for s in sentences]
    prompt_tokens = sum(len(x) for x in tok(prompts)["input_ids"])

    def run(batch_prompts):
        batch = tok(batch_prompts, padding=True, return_tensors="pt").to(args.device)
        with torch.no_grad():
            return model(**batch, output_hidden_states=True, return_dict=True).hidden_states[-1][:, -1, :]

    run(prompts[:16])  # warm-up
    t = time.perf_counter()
    vecs = torch.cat([run(prompts[i : i + 16]) for i in range(0, len(prompts), 16)]).float().cpu().numpy()
    dt = time.perf_counter() - t
    weights_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    return {"seconds": dt, "load_s": load_s, "prompt_tokens": prompt_tokens, "computed_tokens": prompt_tokens,
            "weights_mb": weights_mb, "vectors": vecs}  # fmt: skip


def _st_worker(cfg: str, args) -> dict:
    import torch
    from sentence_transformers import SentenceTransformer, models  # type: ignore[attr-defined]

    from .encoder import Encoder

    enc = Encoder.from_pretrained(args.model, progress=False)  # only to render the same prompts
    path = enc.source["path"]
    prompts = [enc.prompts.render(s) for s in enc.prompts.prepare(load_sentences(args.data_dir, args.n))]
    prompt_tokens = sum(len(x) for x in enc.tokenizer(prompts)["input_ids"])
    del enc
    t = time.perf_counter()
    # A text-only modality config: no chat template, the prompt is tokenized as is.
    tr = models.Transformer(path, modality_config={"text": {"method": "forward", "method_output_name": "last_hidden_state"}},
                            module_output_name="token_embeddings", model_kwargs={"dtype": getattr(torch, args.dtype)})  # fmt: skip
    dim = tr.model.config.hidden_size
    st = SentenceTransformer(modules=[tr, models.Pooling(dim, pooling_mode="lasttoken")], device=args.device)
    load_s = time.perf_counter() - t
    st.encode(prompts[:16], batch_size=args.batch_size)
    t = time.perf_counter()
    vecs = st.encode(prompts, batch_size=args.batch_size, convert_to_numpy=True, show_progress_bar=False)
    dt = time.perf_counter() - t
    weights_mb = sum(p.numel() * p.element_size() for p in tr.model.parameters()) / 2**20
    return {"seconds": dt, "load_s": load_s, "prompt_tokens": prompt_tokens, "computed_tokens": prompt_tokens,
            "weights_mb": weights_mb, "vectors": vecs}  # fmt: skip


def worker_main(argv: list[str]) -> None:
    args = _parser().parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    cfg = args.worker
    rss0 = _rss_mb()
    if cfg == "gemm":
        out = _gemm(args.threads, args.device, args.dtype)
    elif cfg.startswith("reference"):
        out = _reference_worker(cfg, args)
    elif cfg == "st":
        out = _st_worker(cfg, args)
    else:
        out = _encoder_worker(cfg, args)
    vecs = out.pop("vectors", None)
    if vecs is not None:
        np.save(args.vectors_out, np.asarray(vecs, dtype=np.float32))
    out.update(config=cfg, peak_rss_mb=_rss_mb(), start_rss_mb=rss0, threads=torch.get_num_threads())
    print("RESULT " + json.dumps(out))


# ---------------------------------------------------------------------------- parent
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="prompteol bench", description="Encoding throughput benchmark (see module doc).")
    add_bench_args(p)
    return p


def add_bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--n", type=int, default=2000, help="number of STS-B train sentences (default: %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="torch threads for every configuration")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-batch-tokens", type=int, default=None)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 (default: %(default)s)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="dtype of every configuration and of the GEMM (default: %(default)s)")
    p.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, choices=ALL_CONFIGS)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--output", default=None, help="write the results JSON here")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--vectors-out", default=None, help=argparse.SUPPRESS)
    p.add_argument("--nonembed-params", type=int, default=0, help=argparse.SUPPRESS)


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for pkg in ("prompteol", "torch", "transformers", "sentence-transformers", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def run_benchmark(args) -> dict:
    results: dict[str, dict] = {}
    vectors: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for cfg in args.configs:
            vec_path = Path(tmp) / f"{cfg}.npy"
            cmd = [sys.executable, "-m", "prompteol.bench", "--worker", cfg, "--vectors-out", str(vec_path),
                   "--model", args.model, "--n", str(args.n), "--threads", str(args.threads),
                   "--batch-size", str(args.batch_size), "--device", args.device, "--dtype", args.dtype,
                   "--nonembed-params", str(results.get("prompteol", {}).get("nonembed_params", 0))]  # fmt: skip
            if args.max_batch_tokens:
                cmd += ["--max-batch-tokens", str(args.max_batch_tokens)]
            if args.data_dir:
                cmd += ["--data-dir", str(args.data_dir)]
            print(f"[bench] {cfg} ...", file=sys.stderr, flush=True)
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if proc.returncode != 0 or line is None:
                results[cfg] = {"config": cfg, "error": (proc.stderr or proc.stdout).strip().splitlines()[-3:]}
                continue
            results[cfg] = json.loads(line[len("RESULT ") :])
            if vec_path.exists():
                vectors[cfg] = np.load(vec_path)
    base = results.get("prompteol", {})
    gpu = None
    if str(args.device).startswith("cuda"):
        import torch

        gpu = torch.cuda.get_device_name(torch.device(args.device))
    peak = results.get("gemm", {}).get("gemm_flops")
    params = base.get("nonembed_params")
    for cfg, r in results.items():
        if "seconds" not in r:
            continue
        r["sentences_per_s"] = args.n / r["seconds"]
        r["tokens_per_s"] = r["prompt_tokens"] / r["seconds"]
        if params:
            r["achieved_flops"] = 2 * params * r["computed_tokens"] / r["seconds"]
            if peak:
                r["fraction_of_gemm_peak"] = r["achieved_flops"] / peak
        same = MATCHING.get(cfg)
        if cfg in vectors and same in vectors:
            r["compared_with"] = same
            r["max_abs_diff"] = float(np.abs(vectors[cfg] - vectors[same]).max())
    ratios = {}

    def ratio(a, b):
        if "sentences_per_s" in results.get(a, {}) and "sentences_per_s" in results.get(b, {}):
            return results[a]["sentences_per_s"] / results[b]["sentences_per_s"]
        return None

    ratios["prompteol / reference (no demo)"] = ratio("prompteol", "reference")
    ratios["prompteol-demo / reference-demo"] = ratio("prompteol-demo", "reference-demo")
    ratios["prompteol / sentence-transformers"] = ratio("prompteol", "st")
    ratios["prompteol fraction of GEMM peak"] = base.get("fraction_of_gemm_peak")
    ratios["demo throughput / no-demo throughput"] = ratio("prompteol-demo", "prompteol")
    ratios["demo-nocache throughput / no-demo throughput"] = ratio("prompteol-demo-nocache", "prompteol")
    ratios["bf16 speed-up"] = ratio("prompteol-bf16", "prompteol")
    ratios["int8 speed-up"] = ratio("prompteol-int8", "prompteol")
    return {
        "model": args.model, "n_sentences": args.n, "threads": args.threads, "batch_size": args.batch_size,
        "device": args.device, "dtype": args.dtype,
        "max_batch_tokens": args.max_batch_tokens, "machine": {"platform": platform.platform(),
        "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "gpu": gpu}, "versions": _versions(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "results": results,
        "ratios": {k: v for k, v in ratios.items() if v is not None},
    }  # fmt: skip


def print_report(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(width=160)
    t = Table(title=f"{report['model']}: {report['n_sentences']} STS-B sentences, {report['threads']} threads, "
                    f"batch {report['batch_size']}, {report.get('device', 'cpu')} {report.get('dtype', 'float32')}")  # fmt: skip
    for col in ("config", "sent/s", "tok/s", "GFLOP/s", "% GEMM peak", "peak RSS MB", "weights MB", "max |vector diff|"):
        t.add_column(col, justify="right")
    for cfg, r in report["results"].items():
        if "error" in r:
            t.add_row(cfg, "error: " + " / ".join(r["error"])[:100])
            continue
        if cfg == "gemm":
            t.add_row(cfg, "", "", f"{r['gemm_flops'] / 1e9:.1f}", "100%", f"{r['peak_rss_mb']:.0f}", "", "")
            continue
        t.add_row(
            cfg, f"{r['sentences_per_s']:.1f}", f"{r['tokens_per_s']:.0f}",
            f"{r.get('achieved_flops', 0) / 1e9:.1f}", f"{100 * r.get('fraction_of_gemm_peak', 0):.0f}%",
            f"{r['peak_rss_mb']:.0f}", f"{r['weights_mb']:.0f}",
            f"{r['max_abs_diff']:.1e} vs {r['compared_with']}" if "max_abs_diff" in r else "",
        )  # fmt: skip
    con.print(t)
    for k, v in report["ratios"].items():
        con.print(f"  {k}: {v:.2f}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return run_from_args(_parser().parse_args(argv), argv)


def run_from_args(args, argv: list[str] | None = None) -> int:
    if args.worker:
        worker_main(argv or [])
        return 0
    report = run_benchmark(args)
    print_report(report)
    if args.output:
        Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
