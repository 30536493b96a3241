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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prompteol",
        description="Sentence embeddings from decoder-only LLMs (PromptEOL): encode, evaluate, search "
        "demonstrations, fine-tune, serve.",
    )
    parser.add_argument("--version", action="version", version=f"prompteol {__version__}")
    parser.add_argument("--cache-dir", default=None, help="cache root (default: $PROMPTEOL_CACHE or ~/.cache/prompteol)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS.values():
        # a command module imports only the standard library and prompteol's light core at the top
        # (its optional dependencies are imported when it runs), so any import error here is a bug
        importlib.import_module(module, __package__).register(sub)
    return parser


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for provenance records ("prompteol " + argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    _setup_logging(args.verbose, args.quiet)
    if args.cache_dir:
        os.environ["PROMPTEOL_CACHE"] = str(args.cache_dir)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from ..errors import PrompteolError, extra_for_module

    try:
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
