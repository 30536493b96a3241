"""``prompteol cache``: where the embedding cache lives, what it holds, and clearing it."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser("cache", help="inspect or clear the persistent embedding cache")
    csub = p.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    csub.add_parser("path", help="print the cache file").set_defaults(func=run_path)
    csub.add_parser("info", help="vectors per encoder fingerprint").set_defaults(func=run_info)
    cl = csub.add_parser("clear", help="delete cached vectors (all, or one fingerprint)")
    cl.add_argument("--fingerprint", default=None)
    cl.set_defaults(func=run_clear)


def run_path(args: argparse.Namespace) -> int:
    from ..paths import embeddings_db

    print(embeddings_db())
    return 0


def run_info(args: argparse.Namespace) -> int:
    from rich.table import Table

    from ..cache import EmbeddingCache
    from .common import console

    cache = EmbeddingCache()
    table = Table(title=f"Embedding cache {cache.path}")
    for col in ("fingerprint", "vectors", "model", "template", "demos", "layer", "pooling", "dtype"):
        table.add_column(col)
    for row in cache.info():
        c = row["config"]
        table.add_row(row["fingerprint"], str(row["vectors"]), str(c.get("model", "?")),
                      str((c.get("template") or {}).get("name", "?")), str(len(c.get("demonstrations", []))),
                      str(c.get("layer_index", c.get("layer", "?"))), str(c.get("pooling", "?")), str(c.get("dtype", "?")))  # fmt: skip
    console().print(table)
    return 0


def run_clear(args: argparse.Namespace) -> int:
    from ..cache import EmbeddingCache

    n = EmbeddingCache().clear(args.fingerprint)
    print(f"deleted {n} cached vector(s)")
    return 0
