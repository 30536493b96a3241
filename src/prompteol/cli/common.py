"""Options shared by the CLI commands that build an encoder (encode, eval, demos, serve, bench).

Nothing here imports torch: the encoder is built only when a command runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["add_encoder_args", "add_encode_args", "encode_options_from_args", "encoder_values", "encoder_config_from_args",
           "build_encoder", "console"]


def add_encoder_args(
    p: argparse.ArgumentParser,
    *,
    exclude: Sequence[str] = (),
    defaults: Mapping[str, Any] | None = None,
    title: str = "encoder",
) -> None:
    """One flag per encoder option, derived from :class:`~prompteol.EncoderConfig` (plus
    ``--demo-preset``); every flag defaults to "not given" and the config's default applies."""
    from ..encoder.config import encoder_options
    from ..options import add_arguments

    add_arguments(p.add_argument_group(title), encoder_options(exclude), defaults=defaults)
    # tells the one validation step (checks.py) to check them, with the command's own defaults
    p.set_defaults(encoder_exclude=tuple(exclude), encoder_defaults=dict(defaults or {}))


def add_encode_args(p, names: Sequence[str], *, defaults: Mapping[str, Any] | None = None) -> None:
    """The flags of these :class:`~prompteol.encoder.encode_options.EncodeOptions` fields, from their one
    declaration (flag, short flag, range, help), each with this command's default (``defaults``, else the
    declared one): ``--batch-size/-b``, ``--max-batch-tokens``, ``--normalize``, ``--no-cache``."""
    from ..encoder.encode_options import EncodeOptions
    from ..options import argparse_type

    defaults = dict(defaults or {})
    for name, opt, declared in EncodeOptions.options(tuple(names)):
        default = defaults.get(name, declared)
        flags = [opt.flag or f"--{name.replace('_', '-')}", *([opt.short] if opt.short else [])]
        if isinstance(declared, bool):  # a switch: the flag says what differs from the default
            on = bool(default)
            text = f"do not {opt.help[0].lower()}{opt.help[1:]}" if on else opt.help
            p.add_argument(*flags, dest=name, action="store_false" if on else "store_true", help=text)
            continue
        shown = "%(default)s" if default is not None else "no limit"
        p.add_argument(*flags, dest=name, type=argparse_type(opt.parse or str), default=default,
                       metavar=opt.metavar, help=f"{opt.help.split(' (none')[0]} (default: {shown})")


def encode_options_from_args(args: argparse.Namespace, **fixed: Any):
    """The :class:`~prompteol.encoder.encode_options.EncodeOptions` of the flags a command declared with
    :func:`add_encode_args` (``fixed``: values the command sets itself, such as ``show_progress``)."""
    from ..encoder.encode_options import EncodeOptions

    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(EncodeOptions) if hasattr(args, f.name)}
    return EncodeOptions.of(None, **{**given, **fixed})


def encoder_values(args: argparse.Namespace, exclude: Sequence[str] = ()) -> dict[str, Any]:
    """The encoder options given on the command line (``demo_preset`` included)."""
    from ..encoder.config import encoder_options
    from ..options import values_from_args

    return values_from_args(args, encoder_options(exclude))


def encoder_config_from_args(args: argparse.Namespace, **defaults: Any):
    """The :class:`~prompteol.EncoderConfig` of the flags given (``defaults`` fill the others)."""
    from ..encoder.config import EncoderConfig

    return EncoderConfig.from_options(**{**defaults, **encoder_values(args)})


def build_encoder(args: argparse.Namespace, use_embedding_cache: bool = True, **defaults: Any):
    from ..encoder.encoder import Encoder

    config = encoder_config_from_args(args, **defaults)
    return Encoder.from_config(config, embedding_cache=use_embedding_cache, progress=True)


def console(stderr: bool = False):
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, soft_wrap=True, width=None if stream.isatty() else 160)


def progress_wanted(flag: bool | None, logs: bool = False) -> bool:
    """``--progress`` / ``--no-progress``, else: on a terminal; with ``logs``, also when stderr is a log
    (the command's progress then prints a line every 30 s instead of a bar, :mod:`prompteol.progress`)."""
    if flag is not None:
        return flag
    return True if logs else sys.stderr.isatty()
