"""Options shared by the CLI commands that build an encoder (encode, eval, demos, serve, bench).

Nothing here imports torch: the encoder is built only when a command runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

__all__ = ["add_encoder_args", "encoder_config_from_args", "build_encoder", "atomic_write", "console"]


def add_encoder_args(p: argparse.ArgumentParser, model_required: bool = False) -> None:
    g = p.add_argument_group("encoder")
    g.add_argument(
        "--model", "-m", default=None if model_required else "smollm2-135m", required=model_required,
        help="packaged alias (see `prompteol models list`), local folder, .gguf file, adapter folder or hub id "
        "(default: %(default)s)",
    )  # fmt: skip
    g.add_argument("--template", "-t", default="prompteol",
                   help="preset (prompteol, promptbert, raw) or a text with {sentence} (default: %(default)s)")  # fmt: skip
    g.add_argument("--demo", action="append", default=[], metavar="'SENTENCE|WORD'",
                   help="in-context demonstration; repeat for k-shot (rendered in order)")  # fmt: skip
    g.add_argument("--demo-preset", default=None, metavar="NAME",
                   help="a named demonstration preset (see `prompteol demos presets`), added before --demo")  # fmt: skip
    g.add_argument("--layer", type=int, default=-1, help="hidden layer; -1 = last (default), 0 = embeddings")
    g.add_argument("--pooling", choices=["last", "mean"], default="last", help="default: %(default)s")
    g.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    g.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, auto (default: %(default)s)")
    g.add_argument("--quantization", choices=["int8-dynamic", "4bit", "8bit"], default=None,
                   help="int8-dynamic (CPU, torch) or 4bit/8bit (CUDA, bitsandbytes)")  # fmt: skip
    g.add_argument("--adapter", default=None, help="LoRA adapter folder made by `prompteol train`")
    g.add_argument("--max-length", type=int, default=None,
                   help="cut sentences to this many tokens before templating (default: never cut)")  # fmt: skip
    g.add_argument("--no-normalize-text", dest="normalize_text", action="store_false",
                   help="do not apply the reference's sentence normalisation")  # fmt: skip
    g.add_argument("--no-prefix-cache", dest="prefix_cache", action="store_false",
                   help="recompute the shared prefix (demonstrations) for every sentence")  # fmt: skip


def encoder_config_from_args(args: argparse.Namespace):
    from ..config import config_from_options

    return config_from_options(
        args.model, getattr(args, "demo_preset", None), args.demo, template=args.template, layer=args.layer,
        pooling=args.pooling, dtype=args.dtype, device=args.device, normalize_text=args.normalize_text,
        max_length=args.max_length, adapter=args.adapter, quantization=args.quantization, prefix_cache=args.prefix_cache,
    )  # fmt: skip


def build_encoder(args: argparse.Namespace, use_cache: bool = True):
    from ..encoder import Encoder

    config = encoder_config_from_args(args)
    return Encoder.from_config(config, cache=use_cache, progress=True)


def atomic_write(path: Path, write) -> None:
    """Write through ``write(tmp_path)`` to a temporary file, then rename: never a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def console(stderr: bool = False):
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, soft_wrap=True, width=None if stream.isatty() else 160)


def progress_wanted(flag: bool | None) -> bool:
    return sys.stderr.isatty() if flag is None else flag
