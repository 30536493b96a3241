"""``prompteol cache``: where the embedding cache lives, what it holds, and clearing it.

Both ``info`` and ``clear`` work on a damaged file: opening the cache moves a damaged file
aside (see :mod:`prompteol.cache.store`), ``info`` reports it and ``clear`` also deletes the damaged
copies moved aside earlier.
"""

from __future__ import annotations

import argparse
import json
import sys


def register(sub) -> None:
    p = sub.add_parser("cache", help="inspect or clear the persistent embedding cache")
    csub = p.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    csub.add_parser("path", help="print the cache file").set_defaults(func=run_path)
    info = csub.add_parser("info", help="the state of the cache file and its vectors per encoder fingerprint")
    info.add_argument("--check", action="store_true",
                      help="also read the whole file: PRAGMA quick_check and every vector's checksum")  # fmt: skip
    info.add_argument("--json", action="store_true",
                      help="print one JSON document (file, state, notes, damaged copies, check, encoders) "
                      "instead of the text and table")  # fmt: skip
    info.set_defaults(func=run_info)
    cl = csub.add_parser("clear", help="delete cached vectors (all, or one fingerprint) and damaged copies")
    cl.add_argument("--fingerprint", default=None)
    cl.set_defaults(func=run_clear)


def run_path(args: argparse.Namespace) -> int:
    from ..paths import embeddings_db

    print(embeddings_db())
    return 0


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def _state_lines(cache) -> list[str]:
    """What opening (or using) the cache found and did, then where it stands."""
    from ..cache.store import SCHEMA_VERSION

    lines = [f"note: {note}" for note in cache.notes]
    if cache.disabled is not None:
        lines.append(f"state: not usable ({cache.disabled})")
    else:
        size = cache.path.stat().st_size if cache.path.exists() else 0
        lines.append(f"state: ok (schema version {SCHEMA_VERSION}, {_size(size)})")
    return lines


def run_info(args: argparse.Namespace) -> int:
    from rich.table import Table

    from ..cache.store import EmbeddingCache
    from .common import console

    cache = EmbeddingCache()
    rows = cache.info()  # may itself find damage (and repair it): report after
    check = cache.check() if args.check else None
    if getattr(args, "json", False):
        print(json.dumps(_info_document(cache, rows, check), indent=2, ensure_ascii=False, default=str))
        return 0
    print(f"Embedding cache {cache.path}")
    for line in _state_lines(cache):
        print(line)
    copies = cache.damaged_copies()
    if copies:
        total = sum(p.stat().st_size for p in copies if p.exists())
        print(f"damaged copies moved aside: {len(copies)} ({_size(total)}); `prompteol cache clear` deletes them")
    if check is not None:
        print(f"check: quick_check {check['quick_check']}; {check['vectors']} vector(s): {check['ok']} sound, "
              f"{check['failed']} failing their checksum (not served), {check['unverified']} without checksum")  # fmt: skip
    if cache.disabled is not None:
        return 0
    table = Table(title=None)
    for col in ("fingerprint", "vectors", "model", "template", "demos", "layer", "pooling", "dtype"):
        table.add_column(col)
    for row in rows:
        c = row["config"]
        n = str(row["vectors"]) + (f" ({row['unverified']} unverified)" if row.get("unverified") else "")
        table.add_row(row["fingerprint"], n, str(c.get("model", "?")),
                      str((c.get("template") or {}).get("name", "?")), str(len(c.get("demonstrations", []))),
                      str(c.get("layer_index", c.get("layer", "?"))), str(c.get("pooling", "?")), str(c.get("dtype", "?")))  # fmt: skip
    console().print(table)
    return 0


def _info_document(cache, rows: list[dict], check: dict | None) -> dict:
    """What ``cache info`` shows, as data (``prompteol cache info --json``)."""
    from ..cache.store import SCHEMA_VERSION

    copies = cache.damaged_copies()
    exists = cache.path.exists()
    return {
        "schema": "prompteol.cache-info/1",
        "path": str(cache.path),
        "state": "ok" if cache.disabled is None else "not usable",
        "disabled": cache.disabled,
        "schema_version": SCHEMA_VERSION,
        "size_bytes": cache.path.stat().st_size if exists else 0,
        "notes": list(cache.notes),
        "damaged_copies": {"count": len(copies), "bytes": sum(p.stat().st_size for p in copies if p.exists()),
                           "paths": [str(p) for p in copies]},  # fmt: skip
        "check": check,
        "encoders": rows if cache.disabled is None else [],
        "vectors": sum(int(r.get("vectors") or 0) for r in rows) if cache.disabled is None else 0,
    }


def run_clear(args: argparse.Namespace) -> int:
    from ..cache.store import EmbeddingCache

    cache = EmbeddingCache()
    n = cache.clear(args.fingerprint)
    for dest in cache.moved_aside:
        print(f"the cache file {cache.path} was damaged; moved it aside to {dest.name}")
    if cache.disabled is not None:
        print(f"error: cannot clear the embedding cache: {cache.disabled}", file=sys.stderr)
        return 1
    if args.fingerprint is None:
        removed = cache.remove_damaged_copies()
        if removed:
            print(f"removed {len(removed)} damaged cop{'y' if len(removed) == 1 else 'ies'} of the cache file")
    print(f"deleted {n} cached vector(s)")
    return 0
