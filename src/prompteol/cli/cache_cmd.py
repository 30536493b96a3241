"""``prompteol cache``: where the embedding cache lives, what it holds, and clearing it; the backends' graph exports.

Both ``info`` and ``clear`` work on a damaged file: opening the cache moves a damaged file
aside (see :mod:`prompteol.cache.store`), ``info`` reports it and ``clear`` also deletes the damaged
copies moved aside earlier.
"""

from __future__ import annotations

import argparse
import json
import sys


def register(sub) -> None:
    p = sub.add_parser("cache", help="inspect or clear the persistent embedding cache and the graph exports")
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
    ex = csub.add_parser("exports", help="the graph exports of the onnxruntime/openvino backends (size, layer, "
                         "graph); --clear removes them")  # fmt: skip
    ex.add_argument("--clear", nargs="*", metavar="KEY", default=None,
                    help="remove these exports (their keys, as listed), or every export without a key")  # fmt: skip
    ex.add_argument("--json", action="store_true", help="print one JSON document instead of the list")
    ex.set_defaults(func=run_exports)


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


def _exports_folder(args: argparse.Namespace):
    from ..paths import cache_root

    return cache_root(getattr(args, "cache_dir", None)) / "onnx"


def _exports(folder) -> list[dict]:
    """The graph exports under ``folder`` (one sub-folder each: ``model.onnx`` + ``identity.json``), newest first."""
    rows = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []:
        files = [f for f in sub.rglob("*") if f.is_file()]
        try:
            ident = json.loads((sub / "identity.json").read_text())
        except (OSError, ValueError):
            ident = {}
        weights = ident.get("identity", {}).get("weights") if isinstance(ident.get("identity"), dict) else None
        rows.append({"key": sub.name, "path": str(sub), "bytes": sum(f.stat().st_size for f in files),
                     "modified": max((f.stat().st_mtime for f in files), default=sub.stat().st_mtime),
                     "complete": (sub / "model.onnx").is_file(), "layer": ident.get("layer"),
                     "export": ident.get("export"), "attention": ident.get("attention", "expanded" if ident else None),
                     "weights": weights.get("weights") if isinstance(weights, dict) else weights})  # fmt: skip
    return sorted(rows, key=lambda r: -r["modified"])


def run_exports(args: argparse.Namespace) -> int:
    import datetime as dt
    import shutil

    folder = _exports_folder(args)
    rows = _exports(folder)
    if args.clear is not None:
        keys = set(args.clear) if args.clear else {r["key"] for r in rows}
        unknown = sorted(keys - {r["key"] for r in rows})
        if unknown:
            print(f"error: no export {', '.join(unknown)} under {folder}", file=sys.stderr)
            return 2
        for row in rows:
            if row["key"] in keys:
                shutil.rmtree(row["path"])
                (folder / f"{row['key']}.lock").unlink(missing_ok=True)
        freed = sum(r["bytes"] for r in rows if r["key"] in keys)
        print(f"removed {len(keys)} export(s) under {folder} ({_size(freed)}); they are made again on first use")
        return 0
    if getattr(args, "json", False):
        print(json.dumps({"schema": "prompteol.exports/1", "folder": str(folder), "exports": rows}, indent=2, default=str))
        return 0
    total = sum(r["bytes"] for r in rows)
    print(f"Graph exports (backend onnxruntime / openvino) under {folder}: {len(rows)}, {_size(total)}")
    for r in rows:
        when = dt.datetime.fromtimestamp(r["modified"]).strftime("%Y-%m-%d %H:%M")
        state = "" if r["complete"] else "  (incomplete: no model.onnx)"
        print(f"  {r['key']}  {_size(r['bytes']):>9}  {when}  layer {r['layer']}  attention {r['attention']}  "
              f"{str(r['weights'])[:40]}{state}")  # fmt: skip
    if rows:
        print("An export is reused only by the same weights, layer, torch/transformers versions and graph; one made by "
              "another version is never read again. `prompteol cache exports --clear [KEY ...]` removes them.")  # fmt: skip
    return 0
