"""The benchmark's configurations, tolerances and speed ratios (what ``--configs`` names), and its arguments."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

from ..records import native_bf16

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
        BenchConfig("prompteol-ort", "backend onnxruntime: the float32 export run by ONNX Runtime, shared prefix kept",
                    "exact", "encoder", ref="prompteol", peak="gemm", options={"backend": "onnxruntime"}),
        BenchConfig("prompteol-demo-ort", "backend onnxruntime with the demonstration (shared-prefix KV cache)", "exact",
                    "encoder", ref="prompteol-demo", peak="gemm",
                    options={"backend": "onnxruntime", "demonstrations": [DEMO]}),
        BenchConfig("prompteol-ov", "backend openvino, dtype bfloat16: the float32 export run by OpenVINO in bf16 "
                    "inference precision, shared prefix kept", "lowp", "encoder", ref="prompteol", peak="gemm-bf16",
                    options={"backend": "openvino", "dtype": "bfloat16"}),
        BenchConfig("prompteol-ov-f32", "backend openvino, float32", "exact", "encoder", ref="prompteol", peak="gemm",
                    options={"backend": "openvino", "dtype": "float32"}),
        BenchConfig("prompteol-demo-ov", "backend openvino, bfloat16, with the demonstration (shared-prefix KV cache)",
                    "lowp", "encoder", ref="prompteol-demo", peak="gemm-bf16",
                    options={"backend": "openvino", "dtype": "bfloat16", "demonstrations": [DEMO]}),
        BenchConfig("prompteol-auto", "dtype auto (the eval/scale/search default; fused stays opt-in)", "lowp",
                    "encoder", ref="prompteol", peak="gemm-bf16" if native_bf16() else "gemm",
                    options={"dtype": "auto"}),
        BenchConfig("prompteol-eval", "dtype auto, backend auto: what `prompteol eval` runs (OpenVINO bfloat16 on a CPU "
                    "with native bfloat16 and OpenVINO installed, else torch)", "lowp", "encoder", ref="prompteol",
                    peak="gemm-bf16" if native_bf16() else "gemm", options={"dtype": "auto", "backend": "auto"}),
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
    ("prompteol-ort", "prompteol", "ONNX Runtime backend / torch float32"),
    ("prompteol-ort", "onnx-ort", "ONNX Runtime backend / ONNX Runtime on full prompts"),
    ("prompteol-ort", "prompteol-fused", "ONNX Runtime backend / fused float32"),
    ("prompteol-demo-ort", "prompteol-demo", "ONNX Runtime backend / torch float32, with the demonstration"),
    ("prompteol-auto", "prompteol", "auto (eval/scale default) / eager float32"),
    ("prompteol-ov", "prompteol-bf16", "OpenVINO backend bf16 / torch bf16"),
    ("prompteol-ov", "prompteol", "OpenVINO backend bf16 / torch float32"),
    ("prompteol-ov", "onnx-openvino-bf16", "OpenVINO backend bf16 / OpenVINO bf16 on full prompts"),
    ("prompteol-demo-ov", "prompteol-demo", "OpenVINO backend bf16 / torch float32, with the demonstration"),
    ("prompteol-ov-f32", "prompteol-ort", "OpenVINO backend float32 / ONNX Runtime backend"),
    ("prompteol-ov-f32", "prompteol", "OpenVINO backend float32 / torch float32"),
    ("onnx-openvino-bf16", "prompteol", "OpenVINO bf16 / prompteol float32"),
    ("prompteol-bf16", "llamacpp", "prompteol-bf16 / llama.cpp"),
    ("prompteol-bf16-mixed", "llamacpp", "prompteol-bf16-mixed / llama.cpp"),
]


#: the peers' libraries, recorded with every run (None: not installed)
PEER_PACKAGES = ("sentence-transformers", "llama-cpp-python", "onnxruntime", "onnx", "openvino", "optimum",
                 "optimum-onnx", "optimum-intel")  # fmt: skip


def parser() -> argparse.ArgumentParser:
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


def threads_of(args) -> int:
    return int(getattr(args, "threads", None) or 2)
