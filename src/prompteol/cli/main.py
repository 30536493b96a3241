"""The ``prompteol`` command line. Each command lives in its own module with ``register``/``run``.

``prompteol --help`` imports neither torch nor transformers.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from .. import __version__
from ..options import positive_int

# command name -> module (relative to this package); each module has register(subparsers) and run(args)
COMMANDS = {
    "encode": ".encode_cmd",
    "eval": ".eval_cmd",
    "data": ".data_cmd",
    "models": ".models_cmd",
    "cache": ".cache_cmd",
    "demos": ".demos_cmd",
    "train": ".train_cmd",
    "serve": ".serve_cmd",
    "bench": ".bench_cmd",
    "scale": ".scale_cmd",
    "methods": ".methods_cmd",
    "export": ".export_cmd",
    "mteb": ".mteb_cmd",
}


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line (``error: ...``, exit 2) naming the command's help."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"error: {self.prog}: {message} (see `{self.prog} --help`)\n")


#: the global options: given before the command, or after it (each command accepts them too)
GLOBAL_OPTIONS: list[tuple[tuple[str, ...], dict]] = [
    (("--cache-dir",), {"metavar": "DIR", "help": "cache root (default: $PROMPTEOL_CACHE or ~/.cache/prompteol)"}),
    (("--threads",), {"type": positive_int, "metavar": "N", "help": "torch CPU threads (default: torch's choice)"}),
    (("-v", "--verbose"), {"action": "count", "help": "more log output (-vv for debug)"}),
    (("-q", "--quiet"), {"action": "store_true", "help": "only errors"}),
]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="prompteol",
        description="Sentence embeddings from decoder-only LLMs (PromptEOL): encode, evaluate, search "
        "demonstrations, fine-tune, serve.",
    )
    parser.add_argument("--version", action="version", version=f"prompteol {__version__}")
    for flags, kwargs in GLOBAL_OPTIONS:
        default = 0 if kwargs.get("action") == "count" else False if kwargs.get("action") == "store_true" else None
        parser.add_argument(*flags, default=default, **kwargs)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS.values():
        # a command module imports only the standard library and prompteol's light core at the top
        # (its optional dependencies are imported when it runs), so any import error here is a bug
        importlib.import_module(module, __package__).register(sub)
    for command in sub.choices.values():
        _accept_global_options(command)
    return parser


def _accept_global_options(parser: argparse.ArgumentParser) -> None:
    """Let ``prompteol encode ... --threads 1 in.txt`` mean ``prompteol --threads 1 encode ... in.txt``:
    every command (and its actions) accepts the global options; their default is SUPPRESS, so a
    value given before the command is kept when none is given after it."""
    missing = [(f, k) for f, k in GLOBAL_OPTIONS if not any(x in parser._option_string_actions for x in f)]
    if missing:
        group = parser.add_argument_group("global options (also accepted before the command)")
        for flags, kwargs in missing:
            group.add_argument(*flags, default=argparse.SUPPRESS, **kwargs)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _accept_global_options(child)


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for provenance records ("prompteol " + argv)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        print(f"error: prompteol: give a command, one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    _setup_logging(args.verbose, args.quiet)
    from ..errors import PrompteolError, extra_for_module

    try:
        from .checks import check_args

        check_args(args)  # every option, before any input is read or any model loaded
        if args.cache_dir:
            os.environ["PROMPTEOL_CACHE"] = str(args.cache_dir)
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        return int(args.func(args) or 0)
    except PrompteolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        extra = extra_for_module(exc.name)
        if extra is None:
            raise  # not an optional dependency: a broken installation or a bug, shown in full
        print(f"error: `prompteol {args.command}` needs the optional package '{exc.name}', which is not "
              f"installed. Install it with: pip install 'prompteol[{extra}]'", file=sys.stderr)  # fmt: skip
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as exc:  # the system said no (unwritable path, full disk, ...): one line, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
