"""``prompteol bench``: the encoding throughput benchmark (see prompteol.bench)."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    from ..bench import add_bench_args

    p = sub.add_parser(
        "bench",
        help="encoding throughput and accuracy vs the reference recipe, sentence-transformers, ONNX Runtime, "
        "OpenVINO, llama.cpp and the GEMM peaks",
        description="Runs each configuration in its own process, same sentences and thread count (the global "
        "--threads, or --threads here); each also scores the first --sts-pairs pairs of STS-B dev. Prints a table "
        "with an accuracy column and the speed ratios of the configurations within their tolerance "
        "(see docs/performance.md). Peers: pip install -e '.[bench]'.",
    )
    add_bench_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..bench import run_from_args

    return run_from_args(args)
