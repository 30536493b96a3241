"""Encoding throughput benchmark: prompteol, its peers and the GEMM peaks, with an accuracy column.

Every configuration runs in its own subprocess (sequentially, same thread count, same
sentences: the first ``--n`` unique STS-B train sentences), so peak RSS is measured per
configuration; the parent prints a table and writes JSON (``--output``).

Accuracy, per configuration: each subprocess also encodes (untimed) the sentences of a fixed
STS-B subset, the first ``--sts-pairs`` pairs (default 500) of STS-B dev in file order, and
reports its Spearman x100 (:mod:`prompteol.evaluation.sts`); the parent compares the timed
sentences' vectors with those of the float32 configuration that computes the same thing
(``ref``: ``prompteol``, or ``prompteol-demo`` for the demonstration configurations): max
|vector diff| and the row-wise cosine (min, mean). A configuration within its tolerance is
``ok``; one beyond it is ``not comparable`` and gets no speed ratio; every ratio is printed
beside the accuracy of both sides. Tolerances (:data:`TOLERANCES`), by kind:

- ``exact`` (float32 paths that compute the same function): max |vector diff| < 1e-3;
- ``lowp`` (bfloat16, bf16-mixed, int8, OpenVINO bf16): cosine min >= 0.99 and
  |STS-B dev change| <= 0.5;
- ``llamacpp`` (quantised weights and activations): cosine min >= 0.98.

Configurations (``--configs``; :data:`CONFIGS`):

- ``gemm`` / ``gemm-bf16``: the machine's float32 / bfloat16 matmul peak at the thread count
  (best of ``a @ b`` and ``linear(a, b)`` over square sizes up to 4096, each operation stopping
  at the size whose one product would take over 4 s);
- ``prompteol``: :class:`prompteol.Encoder`, float32, no demonstration (the reference);
- ``prompteol-demo``: with one demonstration (shared-prefix KV cache; the demo reference);
- ``prompteol-demo-nocache``: with the demonstration recomputed for every sentence;
- ``prompteol-packed``: ``packing=True`` (no padding token computed), float32;
- ``prompteol-bf16`` / ``prompteol-bf16-mixed`` / ``prompteol-bf16-packed``: ``dtype`` bfloat16,
  bf16-mixed, bfloat16 with packing; ``prompteol-int8``: torch dynamic int8 Linear layers;
- ``reference`` / ``reference-demo``: the paper's code path: ``AutoModelForCausalLM`` forward with
  ``output_hidden_states=True`` (vocabulary logits computed), batch 16 in the given order, left
  padding, ``hidden_states[-1][:, -1]``, demonstration inside every prompt;
- ``st``: sentence-transformers ``Transformer`` (text modality only, so no chat template) +
  ``Pooling(lasttoken)`` on the same rendered prompts and the same weights (torch);
- ``st-onnx`` / ``st-openvino``: the same with ``backend="onnx"`` / ``"openvino"`` (needs optimum;
  exports cached under ``<cache>/bench/``);
- ``onnx-ort`` / ``onnx-openvino`` / ``onnx-openvino-bf16``: the base model exported once with
  ``torch.onnx`` (cached under ``<cache>/bench/onnx/``), run by ONNX Runtime / OpenVINO (f32, or
  OpenVINO's bf16 inference precision) on prompteol's token ids, length-sorted right-padded
  batches, last-token pooling;
- ``llamacpp``: llama.cpp (``llama-cpp-python``) on the GGUF file itself, same rendered prompts,
  tokenized by llama.cpp with ``add_bos`` matching prompteol's tokenizer (ids checked), pooling
  ``LAST``, up to ``--batch-size`` sequences per decode.

A peer that does not load (a missing package, a failed export) is recorded as ``did not load``
with its error; the benchmark goes on. Install the peers: ``pip install -e ".[bench]"``
(docs/performance.md).
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .records import native_bf16

DEMO = ("A man is smoking.", "Smoking")
STS_SPLIT = "STSBenchmark-dev"
#: bump when the ONNX export below changes what it writes (part of the export cache key)
ONNX_EXPORT_VERSION = 1

EXACT_MAX_DIFF = 1e-3
LOWP_COS_MIN = 0.99
LOWP_STS_DELTA = 0.5
LLAMACPP_COS_MIN = 0.98
TOLERANCES = {
    "exact": f"max |vector diff| < {EXACT_MAX_DIFF:g} vs the float32 reference",
    "lowp": f"cosine min >= {LOWP_COS_MIN} and |STS-B dev change| <= {LOWP_STS_DELTA} vs the float32 reference",
    "llamacpp": f"cosine min >= {LLAMACPP_COS_MIN} vs the float32 reference",
    "base": "the float32 reference itself",
    "peak": "no vectors",
}


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark configuration."""

    name: str
    what: str
    kind: str  # peak | base | exact | lowp | llamacpp
    worker: str  # gemm | encoder | reference | st | onnx | llamacpp
    ref: str | None = None  # the float32 configuration computing the same thing
    peak: str | None = None  # the GEMM configuration of this configuration's own dtype
    options: dict[str, Any] = field(default_factory=dict)  # encoder options / worker settings


CONFIGS: dict[str, BenchConfig] = {
    c.name: c
    for c in [
        BenchConfig("gemm", "float32 matmul peak", "peak", "gemm", options={"dtype": None}),
        BenchConfig("gemm-bf16", "bfloat16 matmul peak", "peak", "gemm", options={"dtype": "bfloat16"}),
        BenchConfig("prompteol", "Encoder.encode, float32, no demonstration", "base", "encoder", peak="gemm"),
        BenchConfig("prompteol-demo", "with one demonstration, shared-prefix KV cache", "base", "encoder",
                    peak="gemm", options={"demonstrations": [DEMO]}),
        BenchConfig("prompteol-demo-nocache", "demonstration recomputed for every sentence", "exact", "encoder",
                    ref="prompteol-demo", peak="gemm", options={"demonstrations": [DEMO], "prefix_cache": False}),
        BenchConfig("prompteol-packed", "packing=True (no padding computed), float32", "exact", "encoder",
                    ref="prompteol", peak="gemm", options={"packing": True}),
        BenchConfig("prompteol-bf16", "dtype bfloat16", "lowp", "encoder", ref="prompteol", peak="gemm-bf16",
                    options={"dtype": "bfloat16"}),
        BenchConfig("prompteol-bf16-mixed", "dtype bf16-mixed (bf16 matmuls, float32 residual stream)", "lowp",
                    "encoder", ref="prompteol", peak="gemm-bf16", options={"dtype": "bf16-mixed"}),
        BenchConfig("prompteol-bf16-packed", "dtype bfloat16 + packing", "lowp", "encoder", ref="prompteol",
                    peak="gemm-bf16", options={"dtype": "bfloat16", "packing": True}),
        BenchConfig("prompteol-int8", "torch dynamic int8 Linear layers (refused outside benchmarks: lossy)", "lowp",
                    "encoder", ref="prompteol", options={"quantization": "int8-dynamic"}),
        BenchConfig("prompteol-fused", "fused=True: torch.compile'd blocks, float32", "exact", "encoder",
                    ref="prompteol", peak="gemm", options={"fused": True}),
        BenchConfig("prompteol-bf16-fused", "dtype bfloat16, fused=True", "lowp", "encoder", ref="prompteol",
                    peak="gemm-bf16", options={"dtype": "bfloat16", "fused": True}),
        BenchConfig("prompteol-auto", "dtype auto + fused (the eval/scale/search defaults)", "lowp", "encoder",
                    ref="prompteol", peak="gemm-bf16" if native_bf16() else "gemm",
                    options={"dtype": "auto", "fused": True}),
        BenchConfig("reference", "the paper's code path (AutoModelForCausalLM, hidden states, batch 16)", "exact",
                    "reference", ref="prompteol", peak="gemm"),
        BenchConfig("reference-demo", "the paper's code path with the demonstration", "exact", "reference",
                    ref="prompteol-demo", peak="gemm", options={"demo": True}),
        BenchConfig("st", "sentence-transformers (torch), lasttoken pooling, same prompts", "exact", "st",
                    ref="prompteol", peak="gemm", options={"backend": "torch"}),
        BenchConfig("st-onnx", "sentence-transformers, ONNX backend (optimum)", "exact", "st", ref="prompteol",
                    peak="gemm", options={"backend": "onnx"}),
        BenchConfig("st-openvino", "sentence-transformers, OpenVINO backend (optimum-intel)", "exact", "st",
                    ref="prompteol", peak="gemm", options={"backend": "openvino"}),
        BenchConfig("onnx-ort", "torch.onnx export, ONNX Runtime (CPU), float32", "exact", "onnx", ref="prompteol",
                    peak="gemm", options={"backend": "ort"}),
        BenchConfig("onnx-openvino", "torch.onnx export, OpenVINO (CPU), f32 precision", "exact", "onnx",
                    ref="prompteol", peak="gemm", options={"backend": "openvino", "precision": "f32"}),
        BenchConfig("onnx-openvino-bf16", "torch.onnx export, OpenVINO (CPU), bf16 inference precision", "lowp",
                    "onnx", ref="prompteol", peak="gemm-bf16", options={"backend": "openvino", "precision": "bf16"}),
        BenchConfig("llamacpp", "llama.cpp (llama-cpp-python) on the GGUF file, pooling LAST", "llamacpp",
                    "llamacpp", ref="prompteol"),
    ]
}  # fmt: skip
ALL_CONFIGS = list(CONFIGS)
DEFAULT_CONFIGS = ["gemm", "prompteol", "prompteol-demo", "reference", "reference-demo", "st"]
#: speed ratios reported (numerator, denominator, label), each only when both sides are comparable
RATIOS = [
    ("prompteol", "reference", "prompteol / reference (no demo)"),
    ("prompteol-demo", "reference-demo", "prompteol-demo / reference-demo"),
    ("prompteol", "st", "prompteol / sentence-transformers"),
    ("prompteol", "st-onnx", "prompteol / sentence-transformers ONNX"),
    ("prompteol", "st-openvino", "prompteol / sentence-transformers OpenVINO"),
    ("prompteol", "onnx-ort", "prompteol / ONNX Runtime"),
    ("prompteol", "onnx-openvino", "prompteol / OpenVINO"),
    ("prompteol", "llamacpp", "prompteol / llama.cpp"),
    ("prompteol-demo", "prompteol", "demo throughput / no-demo throughput"),
    ("prompteol-demo-nocache", "prompteol", "demo-nocache throughput / no-demo throughput"),
    ("prompteol-packed", "prompteol", "packing speed-up"),
    ("prompteol-bf16", "prompteol", "bf16 speed-up"),
    ("prompteol-bf16-mixed", "prompteol", "bf16-mixed speed-up"),
    ("prompteol-bf16-packed", "prompteol", "bf16 + packing speed-up"),
    ("prompteol-int8", "prompteol", "int8 speed-up"),
    ("prompteol-fused", "prompteol", "fused float32 speed-up"),
    ("prompteol-fused", "onnx-ort", "fused float32 / ONNX Runtime"),
    ("prompteol-fused", "llamacpp", "fused float32 / llama.cpp"),
    ("prompteol-bf16-fused", "prompteol-bf16", "fused bf16 / eager bf16"),
    ("prompteol-bf16-fused", "prompteol", "fused bf16 / eager float32"),
    ("prompteol-auto", "prompteol", "auto (eval/scale default) / eager float32"),
    ("onnx-openvino-bf16", "prompteol", "OpenVINO bf16 / prompteol float32"),
    ("prompteol-bf16", "llamacpp", "prompteol-bf16 / llama.cpp"),
    ("prompteol-bf16-mixed", "llamacpp", "prompteol-bf16-mixed / llama.cpp"),
]


def load_sentences(data_dir: str | None, n: int) -> list[str]:
    """The first ``n`` unique STS-B train sentences, as SentEval presents them (the harness's reader)."""
    from .evaluation.data import load_sts_pairs

    pairs = load_sts_pairs("STSBenchmark-train", _data_root(data_dir), verify=False)
    out: dict[str, None] = {}
    for a, b in zip(pairs.sentences1, pairs.sentences2):
        out[a] = None
        out[b] = None
        if len(out) >= n:
            break
    return list(out)[:n]


def load_sts_subset(data_dir: str | None, n_pairs: int):
    """The first ``n_pairs`` pairs of STS-B dev (file order): ``(sentences1, sentences2, gold scores)``."""
    from .evaluation.data import load_sts_pairs

    pairs = load_sts_pairs(STS_SPLIT, _data_root(data_dir), verify=False)
    return pairs.sentences1[:n_pairs], pairs.sentences2[:n_pairs], np.asarray(pairs.scores[:n_pairs])


def _data_root(data_dir: str | None) -> str:
    return data_dir or os.environ.get("PROMPTEOL_DATA") or "../shared/data/senteval"


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------------- workers (subprocess)
def _sync(device: str) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _gemm(threads: int, device: str = "cpu", dtype: str = "float32", budget_s: float = 4.0) -> dict:
    """Best matmul FLOP/s over square sizes, ``a @ b`` and ``linear(a, b)`` (``a @ b.T``, what a Linear
    layer runs). An operation stops growing at the size whose one product would take over
    ``budget_s`` at its own rate so far (a CPU without native bfloat16 runs ``a @ b`` ~100x slower
    than float32)."""
    import torch
    import torch.nn.functional as F

    sizes = (512, 1024, 2048, 3072, 4096) if device == "cpu" else (4096, 8192)
    ops: dict[str, Callable[..., Any]] = {"matmul": torch.matmul, "linear": F.linear}
    rate = dict.fromkeys(ops, 0.0)
    measured: dict[str, list[int]] = {name: [] for name in ops}
    for n in sizes:
        flops = 2 * n**3
        todo = [name for name in ops if not rate[name] or flops / rate[name] <= budget_s]
        if not todo:
            break
        a = torch.randn(n, n, device=device, dtype=getattr(torch, dtype))
        b = torch.randn(n, n, device=device, dtype=getattr(torch, dtype))
        for name in todo:
            t = time.perf_counter()
            ops[name](a, b)  # warm-up
            _sync(device)
            first = time.perf_counter() - t
            reps = 3 if first < 1.0 else 1
            for _ in range(reps):
                t = time.perf_counter()
                ops[name](a, b)
                _sync(device)
                rate[name] = max(rate[name], flops / (time.perf_counter() - t))
            measured[name].append(n)
    best = max(rate, key=lambda k: rate[k])
    return {"gemm_flops": rate[best], "gemm_dtype": dtype, "gemm_op": best, "gemm_sizes": measured[best],
            "gemm_flops_by_op": rate}  # fmt: skip


class _Runner:
    """What a worker measures: ``embed(texts)`` -> (N, H) float32 vectors of raw sentences."""

    load_s: float = 0.0
    weights_mb: float | None = None
    nonembed_params: int | None = None

    def __init__(self) -> None:
        self.extra: dict[str, Any] = {}

    def token_counts(self, sentences: list[str]) -> tuple[int, int]:
        """(prompt tokens, tokens actually computed) for these sentences."""
        raise NotImplementedError

    def embed(self, sentences: list[str]) -> np.ndarray:
        raise NotImplementedError


def _prompt_builder(args, **options):
    """prompteol's prompts and tokenizer for the model, without loading its weights (for the peers)."""
    from .encoder.config import EncoderConfig
    from .encoder.prompts.builder import PromptBuilder
    from .models.loading import load_tokenizer, resolve_model

    resolved = resolve_model(args.model, progress=False)
    tok = load_tokenizer(resolved.path, offline=resolved.kind != "hub")
    return PromptBuilder(tok, EncoderConfig.from_options(model=args.model, **options)), resolved


class _EncoderRunner(_Runner):
    def __init__(self, cfg: BenchConfig, args):
        super().__init__()
        from .encoder.encoder import Encoder

        kwargs: dict[str, Any] = {"device": args.device}
        if args.dtype != "float32":
            kwargs["dtype"] = args.dtype
        kwargs.update(cfg.options)
        t = time.perf_counter()
        self.enc = enc = Encoder.from_pretrained(args.model, progress=False, **kwargs)
        self.load_s = time.perf_counter() - t
        self.args = args
        self.nonembed_params = sum(p.numel() for n, p in enc.model.named_parameters() if "embed" not in n) or None
        self.weights_mb = sum(p.numel() * p.element_size() for p in enc.model.parameters()) / 2**20

    def token_counts(self, sentences: list[str]) -> tuple[int, int]:
        enc = self.enc
        seqs = enc.prompts.tokenize(enc.prompts.prepare(sentences))
        prompt_tokens = sum(len(s) for s in seqs)
        prefix = enc.prefix.get(enc.runner) if enc.config.prefix_cache else None
        cached = len(prefix.ids) * sum(1 for s in seqs if s[: len(prefix.ids)] == prefix.ids) if prefix else 0
        return prompt_tokens, prompt_tokens - cached

    def embed(self, sentences: list[str]) -> np.ndarray:
        out = self.enc.encode(sentences, batch_size=self.args.batch_size, max_batch_tokens=self.args.max_batch_tokens,
                              use_embedding_cache=False, show_progress=False)  # fmt: skip
        desc = self.enc.describe()
        self.extra["precision"] = desc["precision"]
        if desc.get("fused"):
            self.extra["fused"] = desc["fused"]  # compile time, calls, the first-call check, any fallback
        return out


class _ReferenceRunner(_Runner):
    """The reference recipe (kongds/scaling_sentemb evaluation.py), with our normalisation/rendering."""

    def __init__(self, cfg: BenchConfig, args):
        super().__init__()
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from .encoder.prompts.templates import TEMPLATES, Demonstration, normalize_sentence
        from .models.loading import quiet_transformers, resolve_model

        path = resolve_model(args.model, progress=False).path
        t = time.perf_counter()
        with quiet_transformers():
            tok = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, args.dtype)).to(args.device).eval()
        self.load_s = time.perf_counter() - t
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        tok.padding_side = "left"
        demos = [Demonstration(*DEMO)] if cfg.options.get("demo") else []
        self.render = lambda s: TEMPLATES["prompteol"].render(normalize_sentence(s), demos)
        self.tok, self.model, self.device = tok, model, args.device
        self.weights_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20

    def token_counts(self, sentences: list[str]) -> tuple[int, int]:
        n = sum(len(x) for x in self.tok([self.render(s) for s in sentences])["input_ids"])
        return n, n

    def embed(self, sentences: list[str]) -> np.ndarray:
        import torch

        prompts = [self.render(s) for s in sentences]

        def run(batch_prompts):
            batch = self.tok(batch_prompts, padding=True, return_tensors="pt").to(self.device)
            with torch.no_grad():
                return self.model(**batch, output_hidden_states=True, return_dict=True).hidden_states[-1][:, -1, :]

        return torch.cat([run(prompts[i : i + 16]) for i in range(0, len(prompts), 16)]).float().cpu().numpy()


class _STRunner(_Runner):
    """sentence-transformers on the rendered prompts: torch, or the ONNX / OpenVINO backends (optimum)."""

    def __init__(self, cfg: BenchConfig, args):
        super().__init__()
        import torch
        from sentence_transformers import SentenceTransformer, models  # type: ignore[attr-defined]

        self.prompts, resolved = _prompt_builder(args)
        backend = cfg.options.get("backend", "torch")
        modality = {"text": {"method": "forward", "method_output_name": "last_hidden_state"}}
        common: dict[str, Any] = {"modality_config": modality, "module_output_name": "token_embeddings"}
        t = time.perf_counter()
        if backend == "torch":
            # A text-only modality config: no chat template, the prompt is tokenized as is.
            tr = models.Transformer(resolved.path, model_kwargs={"dtype": getattr(torch, args.dtype)}, **common)
        else:
            tr = self._exported(models, resolved, backend, args, common)
        dim = self._hidden_size(resolved.path)
        self.st = SentenceTransformer(modules=[tr, models.Pooling(dim, pooling_mode="lasttoken")], device=args.device)
        self.load_s = time.perf_counter() - t
        self.batch_size = args.batch_size
        model = getattr(tr, "model", None) or getattr(tr, "auto_model", None)
        if backend == "torch" and model is not None:
            self.weights_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
        self.extra["backend"] = backend

    @staticmethod
    def _hidden_size(path: str) -> int:
        cfg = json.loads((Path(path) / "config.json").read_text())
        return int(cfg.get("hidden_size") or cfg["text_config"]["hidden_size"])

    def _exported(self, models, resolved, backend: str, args, common: dict):
        """The ONNX / OpenVINO export (optimum), made once and kept under ``<cache>/bench/st-<backend>/``."""
        import hashlib

        from .paths import cache_root

        key = hashlib.sha256(json.dumps(resolved.identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
        folder = cache_root() / "bench" / f"st-{backend}" / key
        if backend == "onnx":
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.intra_op_num_threads, so.inter_op_num_threads = args.threads, 1
            kwargs: dict[str, Any] = {"provider": "CPUExecutionProvider", "session_options": so}
            file_name = "onnx/model.onnx"
        else:
            kwargs = {"ov_config": {"INFERENCE_NUM_THREADS": args.threads, "INFERENCE_PRECISION_HINT": "f32"}}
            file_name = "openvino/openvino_model.xml"
        if not (folder / file_name).is_file():
            tr = models.Transformer(resolved.path, backend=backend, model_kwargs=dict(kwargs), **common)
            from .fileio import write_folder_atomic

            with write_folder_atomic(folder) as tmp:
                tr.save(str(tmp))
            self.extra["exported"] = True
        self.extra["export"] = str(folder)
        return models.Transformer(str(folder), backend=backend, model_kwargs={**kwargs, "file_name": file_name},
                                  **common)  # fmt: skip

    def token_counts(self, sentences: list[str]) -> tuple[int, int]:
        n = sum(len(s) for s in self.prompts.tokenize(self.prompts.prepare(sentences)))
        return n, n

    def embed(self, sentences: list[str]) -> np.ndarray:
        prompts = [self.prompts.render(s) for s in self.prompts.prepare(sentences)]
        return self.st.encode(prompts, batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False)


def _export_onnx(path: str, out: Path) -> Path:
    """Export the base model (last hidden state; eager attention) to ``out/model.onnx``, atomically."""

    import torch
    from transformers import AutoModel

    from .models.loading import quiet_transformers

    with quiet_transformers():
        model = AutoModel.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()

    class LastHidden(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            return self.m(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state

    from .fileio import write_folder_atomic

    ids = torch.tensor([[5, 6, 7, 8, 9, 10], [5, 6, 7, 8, 1, 1]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    axes = {0: "batch", 1: "tokens"}
    import warnings

    with write_folder_atomic(out) as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(LastHidden(model), (ids, mask), str(tmp / "model.onnx"), dynamo=False, opset_version=17,
                          input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
                          dynamic_axes={"input_ids": axes, "attention_mask": axes, "last_hidden_state": axes})  # fmt: skip
    return out / "model.onnx"


def _export_child(path: str, out: str, queue) -> None:
    try:
        _export_onnx(path, Path(out))
        queue.put(None)
    except BaseException as exc:
        queue.put(_error_text(exc))


def _export_in_child(path: str, out: Path) -> None:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_export_child, args=(path, str(out), queue))
    proc.start()
    proc.join()
    error = queue.get() if not queue.empty() else f"the export process ended with exit status {proc.exitcode}"
    if error is not None or proc.exitcode != 0:
        raise RuntimeError(f"ONNX export failed: {error}")


class _OnnxRunner(_Runner):
    """The base model exported to ONNX once, run by ONNX Runtime or OpenVINO on prompteol's token ids."""

    def __init__(self, cfg: BenchConfig, args):
        super().__init__()
        import hashlib

        import torch

        from .paths import cache_root

        self.prompts, resolved = _prompt_builder(args)
        ident = {"weights": resolved.identity, "torch": torch.__version__, "export": ONNX_EXPORT_VERSION}
        key = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]
        folder = cache_root() / "bench" / "onnx" / key
        t = time.perf_counter()
        onnx_file = folder / "model.onnx"
        if not onnx_file.is_file():  # in a child process, so this one's peak RSS is the runtime's alone
            _export_in_child(resolved.path, folder)
            self.extra["exported_s"] = time.perf_counter() - t
        self.extra["export"] = str(folder)
        self.weights_mb = sum(p.stat().st_size for p in folder.iterdir()) / 2**20
        backend = cfg.options["backend"]
        if backend == "ort":
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.intra_op_num_threads, so.inter_op_num_threads = args.threads, 1
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            sess = ort.InferenceSession(str(onnx_file), so, providers=["CPUExecutionProvider"])
            self._run: Callable[[dict], np.ndarray] = lambda feed: sess.run(None, feed)[0]
            self.extra["onnxruntime"] = ort.__version__
        else:
            import openvino as ov

            core = ov.Core()
            props = {"INFERENCE_NUM_THREADS": args.threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
                     "INFERENCE_PRECISION_HINT": cfg.options.get("precision", "f32")}  # fmt: skip
            compiled = core.compile_model(core.read_model(str(onnx_file)), "CPU", props)
            self._run = lambda feed: compiled(feed)[0]
            self.extra["openvino"] = ov.__version__
            self.extra["inference_precision"] = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
        self.load_s = time.perf_counter() - t
        self.pad = self.prompts.tokenizer.pad_token_id or 0
        self.batch_size, self.max_batch_tokens = args.batch_size, args.max_batch_tokens

    def token_counts(self, sentences: list[str]) -> tuple[int, int]:
        n = sum(len(s) for s in self.prompts.tokenize(self.prompts.prepare(sentences)))
        return n, n

    def embed(self, sentences: list[str]) -> np.ndarray:
        from .encoder.batching import plan_batches

        seqs = self.prompts.tokenize(self.prompts.prepare(sentences))
        out: np.ndarray | None = None
        for batch in plan_batches([len(s) for s in seqs], self.batch_size, self.max_batch_tokens):
            longest = max(len(seqs[i]) for i in batch)
            ids = np.full((len(batch), longest), self.pad, dtype=np.int64)
            mask = np.zeros((len(batch), longest), dtype=np.int64)
            for row, i in enumerate(batch):
                ids[row, : len(seqs[i])] = seqs[i]
                mask[row, : len(seqs[i])] = 1
            hidden = np.asarray(self._run({"input_ids": ids, "attention_mask": mask}))
            last = hidden[np.arange(len(batch)), mask.sum(1) - 1]
            if out is None:
                out = np.zeros((len(seqs), last.shape[-1]), dtype=np.float32)
            out[batch] = last
        return out if out is not None else np.zeros((0, 0), dtype=np.float32)


class _LlamaCppRunner(_Runner):
    """llama.cpp through llama-cpp-python, on the GGUF file prompteol's weights are dequantised from."""

    def __init__(self, cfg: BenchConfig, args):
        super().__init__()
        import llama_cpp

        from .models.pull import gguf_path

        self.prompts, _ = _prompt_builder(args)
        tok = self.prompts.tokenizer
        probe = tok("x", add_special_tokens=True)["input_ids"]
        self.add_bos = bool(tok.bos_token_id is not None and probe and probe[0] == tok.bos_token_id)
        gguf = gguf_path(args.model, progress=False)
        # 512 (llama.cpp's default) holds a batch of 16 STS-B prompts; 2048 measured ~25% slower (larger buffers)
        self.n_batch = max(512, args.max_batch_tokens or 0)
        t = time.perf_counter()
        self.llm = llama_cpp.Llama(
            model_path=str(gguf), embedding=True, pooling_type=llama_cpp.LLAMA_POOLING_TYPE_LAST,
            n_threads=args.threads, n_threads_batch=args.threads, n_ctx=self.n_batch, n_batch=self.n_batch,
            n_ubatch=self.n_batch, verbose=False,
        )  # fmt: skip
        self.load_s = time.perf_counter() - t
        self.seqs_per_decode = max(1, min(args.batch_size, int(self.llm.context_params.n_seq_max)))
        self.weights_mb = gguf.stat().st_size / 2**20
        self.extra.update(
            gguf=str(gguf), add_bos=self.add_bos, n_batch=self.n_batch, seqs_per_decode=self.seqs_per_decode,
            llama_cpp_python=getattr(llama_cpp, "__version__", None),
            system_info=llama_cpp.llama_print_system_info().decode(errors="replace").strip(),
        )  # fmt: skip

    def _tokens(self, prompts: list[str]) -> list[list[int]]:
        return [self.llm.tokenize(p.encode("utf-8"), add_bos=self.add_bos, special=True) for p in prompts]

    def check_tokens(self, sentences: list[str], first: int = 8) -> dict:
        """llama.cpp's token ids vs prompteol's for every prompt: counts and the first mismatches."""
        prepared = self.prompts.prepare(sentences)
        ours = self.prompts.tokenize(prepared)
        theirs = self._tokens([self.prompts.render(s) for s in prepared])
        bad = [i for i, (a, b) in enumerate(zip(ours, theirs)) if list(a) != list(b)]
        return {"checked": len(ours), "mismatched": len(bad), "add_bos": self.add_bos,
                "first_checked_identical": not any(i < first for i in bad),
                "examples": [{"index": i, "prompteol": list(ours[i]), "llama_cpp": list(theirs[i])} for i in bad[:3]]}  # fmt: skip

    def token_counts(self, sentences: list[str]) -> tuple[int, int]:
        n = sum(len(s) for s in self._tokens([self.prompts.render(s) for s in self.prompts.prepare(sentences)]))
        return n, n

    def embed(self, sentences: list[str]) -> np.ndarray:
        """What ``Llama.embed`` does (one decode per batch, one sequence id per prompt, KV cleared before
        each decode), with the tokens made with prompteol's ``add_bos`` and special-token parsing."""
        import llama_cpp

        llm = self.llm
        seqs = self._tokens([self.prompts.render(s) for s in self.prompts.prepare(sentences)])
        n_embd = llm.n_embd()
        out = np.zeros((len(seqs), n_embd), dtype=np.float32)
        done = 0
        batch: list[list[int]] = []

        def decode() -> None:
            nonlocal done
            llm._ctx.kv_cache_clear()
            llm._batch.reset()
            for j, toks in enumerate(batch):
                llm._batch.add_sequence(toks, j, True)
            llm._ctx.decode(llm._batch)
            for j in range(len(batch)):
                out[done + j] = np.ctypeslib.as_array(llama_cpp.llama_get_embeddings_seq(llm._ctx.ctx, j), (n_embd,))
            done += len(batch)
            batch.clear()

        n_tokens = 0
        for toks in seqs:
            if len(toks) > self.n_batch:
                raise ValueError(f"a prompt of {len(toks)} tokens exceeds llama.cpp's batch of {self.n_batch}")
            if batch and (n_tokens + len(toks) > self.n_batch or len(batch) >= self.seqs_per_decode):
                decode()
                n_tokens = 0
            batch.append(toks)
            n_tokens += len(toks)
        if batch:
            decode()
        llm._ctx.kv_cache_clear()
        return out


RUNNERS: dict[str, Callable[[BenchConfig, Any], _Runner]] = {
    "encoder": _EncoderRunner, "reference": _ReferenceRunner, "st": _STRunner, "onnx": _OnnxRunner,
    "llamacpp": _LlamaCppRunner,
}  # fmt: skip


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return " ".join(text.split())[:600]


def measure(cfg: BenchConfig, args) -> tuple[dict, np.ndarray | None]:
    """Load, warm up, time the encoding of the timed sentences, then (untimed) score the STS-B subset."""
    if cfg.worker == "gemm":
        return _gemm(args.threads, args.device, cfg.options.get("dtype") or args.dtype), None
    if cfg.options.get("quantization") == "int8-dynamic":  # measured to show what it does; refused elsewhere
        os.environ["PROMPTEOL_ALLOW_LOSSY_INT8"] = "1"
    try:
        runner = RUNNERS[cfg.worker](cfg, args)
    except Exception as exc:  # a peer that does not load is a result, not a crash
        return {"did_not_load": _error_text(exc)}, None
    sentences = load_sentences(args.data_dir, args.n)
    out: dict[str, Any] = {}
    if isinstance(runner, _LlamaCppRunner):
        out["token_check"] = runner.check_tokens(sentences)
    prompt_tokens, computed = runner.token_counts(sentences)
    t = time.perf_counter()
    runner.embed(sentences[:16])  # warm-up (and, for fused configurations, the compilation)
    out["warmup_s"] = time.perf_counter() - t
    t = time.perf_counter()
    vecs = np.asarray(runner.embed(sentences), dtype=np.float32)
    dt = time.perf_counter() - t
    out.update(seconds=dt, load_s=runner.load_s, prompt_tokens=prompt_tokens, computed_tokens=computed,
               nonembed_params=runner.nonembed_params, weights_mb=runner.weights_mb, **runner.extra)  # fmt: skip
    if args.sts_pairs:
        from .evaluation.sts import cosine_pairs, score_sts

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
    args = _parser().parse_args(argv)
    args.threads = _threads(args)
    import torch

    torch.set_num_threads(args.threads)
    cfg = CONFIGS[args.worker]
    rss0 = _rss_mb()
    out, vecs = measure(cfg, args)
    if vecs is not None:
        np.save(args.vectors_out, vecs)
    out.update(config=cfg.name, peak_rss_mb=_rss_mb(), start_rss_mb=rss0, threads=torch.get_num_threads())
    print("RESULT " + json.dumps(out, default=str))


# ---------------------------------------------------------------------------- parent
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="prompteol bench", description="Encoding throughput benchmark (see module doc).")
    add_bench_args(p)
    return p


def add_bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--n", type=int, default=2000, help="number of STS-B train sentences timed (default: %(default)s)")
    # SUPPRESS: under `prompteol --threads N bench` the global --threads is kept (a default here would replace it)
    p.add_argument("--threads", type=int, default=argparse.SUPPRESS,
                   help="threads for every configuration (default: prompteol's --threads, else 2)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-batch-tokens", type=int, default=None)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 (default: %(default)s)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="dtype of the configurations without their own and of `gemm` (default: %(default)s)")
    p.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, choices=ALL_CONFIGS, metavar="CONFIG",
                   help=f"configurations to run (default: {' '.join(DEFAULT_CONFIGS)}); all: {' '.join(ALL_CONFIGS)}")
    p.add_argument("--sts-pairs", type=int, default=500,
                   help=f"accuracy: the first N pairs of {STS_SPLIT} encoded by every configuration (0: off; "
                        "default: %(default)s)")  # fmt: skip
    p.add_argument("--data-dir", default=None)
    p.add_argument("--output", default=None, help="write the results JSON here")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--vectors-out", default=None, help=argparse.SUPPRESS)


def _threads(args) -> int:
    return int(getattr(args, "threads", None) or 2)


#: the peers' libraries, recorded with every run (None: not installed)
PEER_PACKAGES = ("sentence-transformers", "llama-cpp-python", "onnxruntime", "onnx", "openvino", "optimum",
                 "optimum-onnx", "optimum-intel")  # fmt: skip


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
           "--model", args.model, "--n", str(args.n), "--threads", str(_threads(args)),
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
    from .evaluation.sts import cosine_pairs

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


def accuracy_text(r: dict) -> str:
    """One line: STS-B dev Spearman (and its change), cosine min/mean and max diff vs the reference."""
    parts = []
    if "sts" in r:
        sts = f"STS {r['sts']['spearman']:.2f}"
        if "sts_change" in r:
            sts += f" ({r['sts_change']:+.2f})"
        parts.append(sts)
    if "cos_min" in r:
        parts.append(f"cos {r['cos_min']:.4f}/{r['cos_mean']:.4f}")
        parts.append(f"|d| {r['max_abs_diff']:.1e} vs {r['compared_with']}")
    return "; ".join(parts)


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
    threads = _threads(args)
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
    from .records import provenance

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


def _peak_text(r: dict) -> str:
    if "fraction_of_own_peak" in r:
        return f"{100 * r['fraction_of_own_peak']:.0f}% {r['own_peak']}"
    if "fraction_of_gemm_peak" in r:
        return f"({100 * r['fraction_of_gemm_peak']:.0f}% gemm)"
    return ""


def print_report(report: dict) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    con = Console(width=200, highlight=False)
    sub = report.get("accuracy_subset")
    t = Table(title=f"{report['model']}: {report['n_sentences']} STS-B train sentences, {report['threads']} threads, "
                    f"batch {report['batch_size']}, {report.get('device', 'cpu')} {report.get('dtype', 'float32')}; "
                    f"accuracy: {sub['which'] if sub else 'off'}")  # fmt: skip
    for col in ("config", "sent/s", "tok/s", "GFLOP/s", "% peak", "peak RSS MB", "weights MB",
                "accuracy (STS-B dev Spearman; cos min/mean; max |diff|)", "verdict"):  # fmt: skip
        t.add_column(col, justify="left" if col.startswith(("accuracy", "verdict")) else "right")
    for cfg, r in report["results"].items():
        if "did_not_load" in r:
            t.add_row(cfg, "", "", "", "", "", "", escape("did not load: " + r["did_not_load"][:300]), "did not load")
            continue
        if "error" in r:
            t.add_row(cfg, "", "", "", "", "", "", escape("error: " + " / ".join(r["error"])[:300]), "error")
            continue
        if "gemm_flops" in r:
            t.add_row(cfg, "", "", f"{r['gemm_flops'] / 1e9:.1f}", f"100% {r.get('gemm_dtype', '')}",
                      f"{r['peak_rss_mb']:.0f}", "", "", "")  # fmt: skip
            continue
        verdict = r.get("status", "")
        if verdict == "not comparable":
            verdict = escape(f"NOT COMPARABLE: {r.get('reason', '')}")
        elif verdict == "ok" and r.get("kind") == "base":
            verdict = "reference"
        t.add_row(
            cfg, f"{r['sentences_per_s']:.1f}", f"{r['tokens_per_s']:.0f}",
            f"{r['achieved_flops'] / 1e9:.1f}" if "achieved_flops" in r else "", _peak_text(r),
            f"{r['peak_rss_mb']:.0f}", f"{r['weights_mb']:.0f}" if r.get("weights_mb") else "",
            escape(accuracy_text(r)), verdict,
        )  # fmt: skip
    con.print(t)
    say = lambda text: con.print(text, markup=False)  # noqa: E731 - results may hold brackets
    say("  tolerances: " + "; ".join(f"{k}: {v}" for k, v in report.get("tolerances", {}).items()
                                     if k in ("exact", "lowp", "llamacpp")))  # fmt: skip
    for cfg, r in report["results"].items():
        tc = r.get("token_check")
        if tc:
            same = "identical" if not tc["mismatched"] else f"DIFFERENT for {tc['mismatched']}"
            say(f"  {cfg}: llama.cpp token ids {same} of {tc['checked']} prompts vs prompteol's "
                      f"(add_bos={tc['add_bos']})")  # fmt: skip
    for label, e in report["ratios"].items():
        acc = "; ".join(f"{k}: {v}" for k, v in e["accuracy"].items() if v)
        if e["value"] is None:
            say(f"  {label}: no ratio ({e['why_none']})")
        else:
            say(f"  {label}: {e['value']:.2f}  [{acc}]")


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
        Path(args.output).write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
