"""``prompteol encode``: sentences in (text / JSONL / Parquet / stdin), vectors out (.npy / .jsonl / .parquet).

The local engine streams (:mod:`prompteol.corpus.local`): chunks of ``--chunk-size`` sentences,
bounded memory, resumable; ``--engine ray`` is :mod:`prompteol.cli.encode_ray`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..corpus.local import encode_to_file
from ..corpus.resume import output_lock
from ..corpus.sinks import OUTPUT_FORMATS
from ..corpus.source import DEFAULT_CHUNK_SIZE, open_source
from ..errors import InputError
from ..options import non_negative_float, positive_float, positive_int
from .common import add_encoder_args, build_encoder, progress_wanted
from .output import check_output

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
    p.add_argument("--batch-size", "-b", type=positive_int, default=32, metavar="N",
                   help="sentences per batch (default: %(default)s)")
    p.add_argument("--max-batch-tokens", type=positive_int, default=None, metavar="N",
                   help="padded tokens per batch (default: no limit)")
    p.add_argument("--normalize", action="store_true", help="L2-normalise the vectors")
    p.add_argument("--no-cache", dest="use_embedding_cache", action="store_false",
                   help="neither read nor write the persistent embedding cache")  # fmt: skip
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
    from . import encode_ray

    if args.engine == "ray":
        given = [f for f, on in (("--chunk-size", args.chunk_size is not None), ("--no-resume", not args.resume)) if on]
        if given:
            raise InputError(f"{', '.join(given)} only work with the local engine (--engine ray resumes by shard)")
        encode_ray.check_args(args)
        return
    encode_ray.check_local_args(args)
    if Path(args.output).suffix not in OUTPUT_SUFFIXES:
        raise InputError(f"output {args.output!r} should end in one of {list(OUTPUT_SUFFIXES)}")


def run(args: argparse.Namespace) -> int:
    from . import encode_ray

    if args.engine == "ray":
        return encode_ray.run(args)
    out = Path(args.output)
    chunk_size = args.chunk_size or DEFAULT_CHUNK_SIZE
    check_output(out)  # an output that cannot be written fails first,
    with output_lock(out):  # a second run writing the same output next,
        # then the whole input is checked (one streaming pass), all before any model is loaded
        src = open_source(args.input, args.text_column, OUTPUT_FORMATS[out.suffix], chunk_size)
        try:
            encoder = build_encoder(args, use_embedding_cache=args.use_embedding_cache)
            summary = encode_to_file(
                encoder, src, out, chunk_size=chunk_size, batch_size=args.batch_size,
                max_batch_tokens=args.max_batch_tokens, normalize=args.normalize,
                output_dtype=args.output_dtype or "float32", use_embedding_cache=args.use_embedding_cache,
                progress=progress_wanted(args.progress, logs=True), resume=args.resume, lock=False,
            )  # fmt: skip
        finally:
            src.close()
    print(f"wrote {summary['rows']} x {summary['dim']} vectors to {out}", file=sys.stderr)
    return 0
