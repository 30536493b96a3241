"""``prompteol encode --engine ray``: Parquet / JSONL files in, a folder of Parquet files out, on Ray Data.

The work is :func:`prompteol.corpus.distributed.encode_files`; this module turns the flags into its
arguments and prints the summary. Nothing here imports ray or torch at import time.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from ..errors import InputError
from .common import encoder_config_from_args, progress_wanted

__all__ = ["run", "check_args", "check_local_args", "RAY_ONLY_FLAGS"]

#: argparse dest -> flag, of the flags that only the Ray engine reads
RAY_ONLY_FLAGS = {
    "num_actors": "--num-actors", "cpus_per_actor": "--cpus-per-actor", "gpus_per_actor": "--gpus-per-actor",
    "address": "--address", "ray_batch_rows": "--ray-batch-rows", "shard_rows": "--shard-rows",
}  # fmt: skip


def check_local_args(args: argparse.Namespace) -> None:
    """The local engine refuses the Ray engine's flags instead of ignoring them."""
    given = [flag for dest, flag in RAY_ONLY_FLAGS.items() if getattr(args, dest, None) is not None]
    if given:
        raise InputError(f"{', '.join(given)} only work with --engine ray")


def _value(args: argparse.Namespace, name: str, default):
    value = getattr(args, name, None)
    return default if value is None else value


def check_args(args: argparse.Namespace) -> None:
    """What the Ray engine refuses, checked with the other options (before any work)."""
    if args.input == "-":
        raise InputError("--engine ray reads files (Parquet, JSONL, a folder or a glob), not stdin")
    if args.output.endswith((".npy", ".jsonl")):
        raise InputError(f"--engine ray writes a folder of Parquet files; {args.output!r} looks like a file name")


def run(args: argparse.Namespace) -> int:
    from ..corpus.distributed import DEFAULT_BATCH_ROWS, encode_files

    check_args(args)
    config = encoder_config_from_args(args)  # (validated with every other option before any file was read)
    quiet = logging.getLogger().getEffectiveLevel() > logging.INFO
    summary = encode_files(
        args.input, args.output, config,
        text_column=_value(args, "text_column", "text"),
        num_actors=_value(args, "num_actors", 1),
        cpus_per_actor=_value(args, "cpus_per_actor", 1),
        gpus_per_actor=_value(args, "gpus_per_actor", 0),
        batch_rows=_value(args, "ray_batch_rows", DEFAULT_BATCH_ROWS),
        batch_size=args.batch_size, max_batch_tokens=args.max_batch_tokens, normalize=args.normalize,
        output_dtype=_value(args, "output_dtype", "float32"), shard_rows=args.shard_rows,
        address=args.address, cache_dir=args.cache_dir, progress=progress_wanted(args.progress), quiet=quiet,
    )  # fmt: skip
    _print_summary(summary)
    return 0


def _print_summary(s: dict) -> None:
    err = sys.stderr
    if not s["shards_written"]:
        print(f"nothing to do: all {s['shards']} shards in {s['output']} are complete "
              f"({s['rows_total']} rows)", file=err)  # fmt: skip
        return
    print(f"wrote {s['shards_written']} shards ({s['rows']} rows) to {s['output']} in {s['wall_s']:.1f} s "
          f"({s['rows_per_s']:.1f} sentences/s, Ray start {s.get('ray_init_s', 0):.1f} s)", file=err)  # fmt: skip
    if s["shards_skipped"]:
        print(f"  resumed: {s['shards_skipped']} of {s['shards']} shards were already complete", file=err)
    if s["empty_files"]:
        print(f"  {s['empty_files']} empty input files have no output file", file=err)
    for actor, a in s["actors"].items():
        print(f"  actor {actor}: {a['rows']} rows, peak RSS {a['max_rss_mib']:.0f} MiB", file=err)
    logging.getLogger(__name__).debug("summary: %s", json.dumps(s))
