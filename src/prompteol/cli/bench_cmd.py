"""``prompteol bench``: the encoding throughput benchmark (see prompteol.bench)."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    from ..bench import add_bench_args

    p = sub.add_parser(
        "bench",
        help="encoding throughput vs the reference recipe, sentence-transformers and the GEMM peak",
        description="Runs each configuration in its own process, same thread count; prints a table and ratios.",
    )
    add_bench_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..bench import run_from_args

    return run_from_args(args)
