"""``prompteol encode``: sentences in (text / JSONL / stdin), vectors out (.npy / .jsonl)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import InputError
from ..prompts import surrogate_problem
from .common import add_encoder_args, atomic_write, build_encoder, progress_wanted
from .output import check_output

OUTPUT_SUFFIXES = (".npy", ".jsonl")


def register(sub) -> None:
    p = sub.add_parser(
        "encode",
        help="embed sentences into vectors",
        description="Embed one sentence per line (text file, '-' for stdin, or JSONL with a 'text' field) "
        "and write the vectors as .npy (N, H) float32 or .jsonl (one object with 'embedding' per input).",
    )
    p.add_argument("input", help="text file (one sentence per line), '-' for stdin, or .jsonl with a 'text' field")
    p.add_argument("-o", "--output", required=True, help="output file: .npy or .jsonl (chosen by extension)")
    p.add_argument("--batch-size", "-b", type=int, default=32, help="sentences per batch (default: %(default)s)")
    p.add_argument("--max-batch-tokens", type=int, default=None, help="padded tokens per batch (default: no limit)")
    p.add_argument("--normalize", action="store_true", help="L2-normalise the vectors")
    p.add_argument("--no-cache", dest="use_embedding_cache", action="store_false",
                   help="neither read nor write the persistent embedding cache")  # fmt: skip
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
    ray.add_argument("--text-column", default=None, help="column (field) holding the sentences (default: text)")
    ray.add_argument("--num-actors", type=int, default=None, help="actors, each with its own model (default: 1)")
    ray.add_argument("--cpus-per-actor", type=float, default=None,
                     help="CPUs reserved per actor, also its torch threads (default: 1)")
    ray.add_argument("--gpus-per-actor", type=float, default=None,
                     help="GPUs per actor; 0.5 puts two actors on a GPU; needs --device cuda (default: 0)")
    ray.add_argument("--address", default=None,
                     help="Ray cluster to join (default: $RAY_ADDRESS, else a local Ray on this machine's cores)")
    ray.add_argument("--ray-batch-rows", type=int, default=None,
                     help="rows per actor call, length-sorted inside (default: 256; more on GPUs)")
    ray.add_argument("--output-dtype", choices=("float32", "float16"), default=None,
                     help="dtype of the embedding column (default: float32)")
    ray.add_argument("--shard-rows", type=int, default=None,
                     help="split input files into shards of N rows (the unit of output files and of resumption; "
                     "default: one shard per file)")
    add_encoder_args(p)
    p.set_defaults(func=run)


def read_input(source: str) -> tuple[list[str], list[dict] | None]:
    """Sentences and, for JSONL input, the original records."""
    try:
        if source == "-":
            text = sys.stdin.read()
        else:
            text = Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read input {source!r}: {exc}") from None
    if source.endswith(".jsonl"):
        records, texts = [], []
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{source} line {n}: not valid JSON ({exc.msg})") from None
            if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
                raise InputError(f"{source} line {n}: expected an object with a string 'text' field")
            problem = _record_surrogate(rec) if "\\u" in line else None  # only a \u escape can make one
            if problem is not None:
                raise InputError(f"{source} line {n}: {problem}")
            records.append(rec)
            texts.append(rec["text"])
        return texts, records
    # one sentence per line; a final newline does not add an empty sentence, blank lines inside do
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    lines = [line.removesuffix("\r") for line in lines]
    for n, line in enumerate(lines, start=1):  # stdin decoded with errors='surrogateescape' can hold them
        problem = surrogate_problem(line)
        if problem is not None:
            raise InputError(f"{source} line {n}: the text {problem}")
    return lines, None


def _record_surrogate(rec: dict) -> str | None:
    """What is wrong if a key or value of a JSONL record holds a lone surrogate (the 'text' field
    could not be tokenized, any other could not be written back to a .jsonl output)."""
    for key in sorted(rec, key=lambda k: k != "text"):  # the text first
        value = rec[key]
        shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        for what, text in ((f"the key {key!r}", key), (f"the field {key!r}", shown)):
            problem = surrogate_problem(text)
            if problem is not None:
                return f"{what} {problem}"
    return None


def write_output(path: Path, vectors, texts: list[str], records: list[dict] | None) -> None:
    import numpy as np

    def write(tmp: Path) -> None:
        if path.suffix == ".npy":
            with open(tmp, "wb") as f:
                np.save(f, vectors)
        else:
            with open(tmp, "w", encoding="utf-8") as f:
                for i, (t, v) in enumerate(zip(texts, vectors)):
                    rec = dict(records[i]) if records else {"text": t}
                    rec.setdefault("index", i)
                    rec["embedding"] = [float(x) for x in v]
                    f.write(json.dumps(rec, ensure_ascii=False) + "\n")

    atomic_write(path, write)


def run(args: argparse.Namespace) -> int:
    from . import encode_ray

    if args.engine == "ray":
        return encode_ray.run(args)
    encode_ray.check_local_args(args)
    out = Path(args.output)
    if out.suffix not in OUTPUT_SUFFIXES:
        raise InputError(f"output {args.output!r} should end in one of {list(OUTPUT_SUFFIXES)}")
    texts, records = read_input(args.input)  # fail on bad input before loading any model
    check_output(out)  # and on an output that cannot be written
    encoder = build_encoder(args, use_embedding_cache=args.use_embedding_cache)
    vectors = encoder.encode(
        texts, batch_size=args.batch_size, normalize=args.normalize, max_batch_tokens=args.max_batch_tokens,
        show_progress=progress_wanted(args.progress), use_embedding_cache=args.use_embedding_cache,
    )  # fmt: skip
    write_output(out, vectors, texts, records)
    print(f"wrote {vectors.shape[0]} x {vectors.shape[1]} vectors to {out}", file=sys.stderr)
    return 0
