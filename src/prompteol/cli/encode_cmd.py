"""``prompteol encode``: sentences in (text / JSONL / Parquet / stdin), vectors out (.npy / .jsonl / .parquet).

Parses the flags, checks them with the other options (before any work), and calls one of the corpus
engine's two executors with the same :class:`~prompteol.encoder.encode_options.EncodeOptions`: the local
one (:func:`prompteol.corpus.local.encode_to_file`: streamed in chunks, bounded memory, resumable) or, with
``--engine ray``, the Ray one (:func:`prompteol.corpus.distributed.encode_files`). Nothing here imports
torch or ray at import time.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ..corpus.sinks import OUTPUT_FORMATS
from ..corpus.source import DEFAULT_CHUNK_SIZE
from ..errors import InputError
from ..options import non_negative_float, positive_float, positive_int
from .common import (
    add_encode_args,
    add_encoder_args,
    build_encoder,
    encode_options_from_args,
    encoder_config_from_args,
    progress_wanted,
)
from .output import check_output

#: argparse dest -> flag, of the flags that only the Ray engine reads
RAY_ONLY_FLAGS = {
    "num_actors": "--num-actors", "cpus_per_actor": "--cpus-per-actor", "gpus_per_actor": "--gpus-per-actor",
    "address": "--address", "ray_batch_rows": "--ray-batch-rows", "shard_rows": "--shard-rows",
}  # fmt: skip


OUTPUT_SUFFIXES = tuple(OUTPUT_FORMATS)


def register(sub) -> None:
    p = sub.add_parser(
        "encode",
        help="embed sentences into vectors",
        description="Embed one sentence per line (text file, '-' for stdin), JSONL with a 'text' field or a "
        "Parquet file with a 'text' column, and write the vectors as .npy (N, H), .jsonl (one object with "
        "'embedding' per input) or .parquet (the input's columns plus 'embedding'). Streams in chunks with "
        "bounded memory; an interrupted run resumes when run again (OUT.partial + OUT.partial.json).",
    )
    p.add_argument("input", help="text file (one sentence per line), '-' for stdin, .jsonl with a 'text' field, "
                   "or .parquet with a 'text' column")  # fmt: skip
    p.add_argument("-o", "--output", required=True,
                   help="output file: .npy, .jsonl or .parquet (chosen by extension)")  # fmt: skip
    add_encode_args(p, ("batch_size", "max_batch_tokens", "normalize", "use_embedding_cache"))
    p.add_argument("--text-column", default=None,
                   help="JSONL field / Parquet column holding the sentences (default: text)")  # fmt: skip
    p.add_argument("--output-dtype", choices=("float32", "float16"), default=None,
                   help="dtype of the written vectors (default: float32)")
    p.add_argument("--chunk-size", type=positive_int, default=None, metavar="N",
                   help=f"local engine: sentences read, encoded and written at a time; the unit of memory and of "
                   f"resumption (default: {DEFAULT_CHUNK_SIZE})")  # fmt: skip
    p.add_argument("--no-resume", dest="resume", action="store_false",
                   help="local engine: start over even if a previous run of the same command left progress")
    prog = p.add_mutually_exclusive_group()
    prog.add_argument("--progress", dest="progress", action="store_true", default=None)
    prog.add_argument("--no-progress", dest="progress", action="store_false")
    ray = p.add_argument_group(
        "engine", "--engine ray: INPUT is a Parquet/JSONL file, a folder of them or a glob; OUTPUT is a folder "
        "of Parquet files (one per input shard, every input column kept plus 'embedding'); a rerun resumes. "
        "See docs/distributed.md",
    )  # fmt: skip
    ray.add_argument("--engine", choices=("local", "ray"), default="local",
                     help="local: this process (default); ray: Ray Data actors, local or on a cluster")
    ray.add_argument("--num-actors", type=positive_int, default=None, metavar="N",
                     help="actors, each with its own model (default: 1)")
    ray.add_argument("--cpus-per-actor", type=positive_float, default=None, metavar="N",
                     help="CPUs reserved per actor, also its torch threads (default: 1)")
    ray.add_argument("--gpus-per-actor", type=non_negative_float, default=None, metavar="N",
                     help="GPUs per actor; 0.5 puts two actors on a GPU; needs --device cuda (default: 0)")
    ray.add_argument("--address", default=None,
                     help="Ray cluster to join (default: $RAY_ADDRESS, else a local Ray on this machine's cores)")
    ray.add_argument("--ray-batch-rows", type=positive_int, default=None, metavar="N",
                     help="rows per actor call, length-sorted inside (default: 256; more on GPUs)")
    ray.add_argument("--shard-rows", type=positive_int, default=None, metavar="N",
                     help="split input files into shards of N rows (the unit of output files and of resumption; "
                     "default: one shard per file)")
    add_encoder_args(p)
    p.set_defaults(func=run, check=check)


def check(args: argparse.Namespace) -> None:
    """The flags that go together (part of the CLI's one validation step, before any work)."""
    if args.engine == "ray":
        given = [f for f, on in (("--chunk-size", args.chunk_size is not None), ("--no-resume", not args.resume)) if on]
        if given:
            raise InputError(f"{', '.join(given)} only work with the local engine (--engine ray resumes by shard)")
        if args.input == "-":
            raise InputError("--engine ray reads files (Parquet, JSONL, a folder or a glob), not stdin")
        if args.output.endswith((".npy", ".jsonl")):
            raise InputError(f"--engine ray writes a folder of Parquet files; {args.output!r} looks like a file name")
        return
    given = [flag for dest, flag in RAY_ONLY_FLAGS.items() if getattr(args, dest, None) is not None]
    if given:  # the local engine refuses the Ray engine's flags instead of ignoring them
        raise InputError(f"{', '.join(given)} only work with --engine ray")
    if Path(args.output).suffix not in OUTPUT_SUFFIXES:
        raise InputError(f"output {args.output!r} should end in one of {list(OUTPUT_SUFFIXES)}")


def run(args: argparse.Namespace) -> int:
    if args.engine == "ray":
        return run_ray(args)
    from ..corpus.local import encode_to_file
    from ..corpus.resume import output_lock
    from ..corpus.source import open_source

    out = Path(args.output)
    chunk_size = args.chunk_size or DEFAULT_CHUNK_SIZE
    check_output(out)  # an output that cannot be written fails first,
    with output_lock(out):  # a second run writing the same output next,
        # then the whole input is checked (one streaming pass), all before any model is loaded
        src = open_source(args.input, args.text_column, OUTPUT_FORMATS[out.suffix], chunk_size)
        try:
            encoder = build_encoder(args, use_embedding_cache=args.use_embedding_cache)
            summary = encode_to_file(
                encoder, src, out, options=encode_options_from_args(args), chunk_size=chunk_size,
                output_dtype=args.output_dtype or "float32", progress=progress_wanted(args.progress, logs=True),
                resume=args.resume, lock=False,
            )  # fmt: skip
        finally:
            src.close()
    print(f"wrote {summary['rows']} x {summary['dim']} vectors to {out}", file=sys.stderr)
    return 0


def run_ray(args: argparse.Namespace) -> int:
    from ..corpus.distributed import RayJob, encode_files

    config = encoder_config_from_args(args)  # (validated with every other option before any file was read)
    job = RayJob(
        options=encode_options_from_args(args), text_column=_value(args, "text_column", RayJob.text_column),
        num_actors=_value(args, "num_actors", RayJob.num_actors),
        cpus_per_actor=_value(args, "cpus_per_actor", RayJob.cpus_per_actor),
        gpus_per_actor=_value(args, "gpus_per_actor", RayJob.gpus_per_actor),
        batch_rows=_value(args, "ray_batch_rows", RayJob.batch_rows),
        output_dtype=_value(args, "output_dtype", RayJob.output_dtype), cache_dir=args.cache_dir,
        progress=progress_wanted(args.progress), quiet=logging.getLogger().getEffectiveLevel() > logging.INFO,
    )  # fmt: skip
    summary = encode_files(args.input, args.output, config, job, shard_rows=args.shard_rows, address=args.address)
    _print_summary(summary)
    return 0


def _value(args: argparse.Namespace, name: str, default):
    value = getattr(args, name, None)
    return default if value is None else value


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
