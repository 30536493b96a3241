"""Resumption of the corpus engine: the local progress record, the Ray manifest, the settings-differ
and the output locks."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..encoder.config import EncoderConfig
from ..errors import InputError
from ..fileio import FileLock, write_text_atomic

if TYPE_CHECKING:  # pragma: no cover
    pass


PROGRESS_SCHEMA = "prompteol.encode-progress/1"


def partial_paths(out: Path) -> tuple[Path, Path]:
    """``(OUT.partial, OUT.partial.json)``: the unfinished output and its progress record."""
    return out.with_name(out.name + ".partial"), out.with_name(out.name + ".partial.json")


def output_lock(out: Path) -> FileLock:
    """``OUT.partial.lock``, held (``flock``) while a run writes ``OUT`` (``prompteol encode`` takes it
    before reading the input or loading a model): a second run of the same output fails at once
    instead of interleaving its chunks. The kernel drops the lock when the process dies, so a killed
    run never blocks the next one; the file is removed when the run ends."""
    lock = out.with_name(out.name + ".partial.lock")
    return FileLock(lock, f"another `prompteol encode` is writing {out.name} now (it holds {lock.name}); wait "
                    "for it or stop it")  # fmt: skip


def remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def write_progress(path: Path, payload: dict[str, Any]) -> None:
    """The progress record, atomically (ASCII JSON: a path that is not valid UTF-8 stays writable)."""
    write_text_atomic(path, json.dumps(payload, indent=1))


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(_differences(a, b, f"{prefix}{k}."))
        elif a != b:
            out.append(f"{prefix}{k}")
    return out


def load_progress(out: Path, key: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """``(state to resume from, None)``, or ``(None, why a previous run's files are not used)``,
    or ``(None, None)`` when there is nothing from a previous run."""
    partial, record = partial_paths(out)
    if not record.exists():
        return None, ("a partial output without its progress record" if partial.exists() else None)
    try:
        state = json.loads(record.read_text(encoding="utf-8"))
        if state.get("schema") != PROGRESS_SCHEMA:
            return None, f"the progress record has another schema ({state.get('schema')!r})"
        old = state["key"]
        rows_done = int(state["rows_done"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None, "the progress record is unreadable"
    changed = _differences(old, key)
    if changed:
        return None, f"{', '.join(changed)} changed"
    if not partial.exists():
        return None, f"{partial.name} is missing"
    if key["format"] == "npy":
        need = int(state["header_bytes"]) + rows_done * key["dim"] * _itemsize(key["dtype"])
        if partial.stat().st_size < need:
            return None, f"{partial.name} is shorter than the progress record says"
    elif key["format"] == "jsonl":
        if partial.stat().st_size < int(state["output_offset"]):
            return None, f"{partial.name} is shorter than the progress record says"
    else:
        missing = [i for i in range(int(state["parts"])) if not (partial / f"part-{i:06d}.parquet").is_file()]
        if missing:
            return None, f"part {missing[0]} of {partial.name} is missing"
    return state, None


def _itemsize(dtype: str) -> int:
    return {"float32": 4, "float16": 2}[dtype]


def clear_partial(out: Path) -> None:
    for p in partial_paths(out):
        remove_path(p)


def progress_record(key, rows_done: int, chunks_done: int, offset: int, line: int, written: dict) -> dict[str, Any]:
    return {"schema": PROGRESS_SCHEMA, "key": key, "rows_done": rows_done, "chunks_done": chunks_done,
            "input_offset": offset, "input_line": line, **written}  # fmt: skip


MANIFEST = "_prompteol_manifest.json"


MANIFEST_VERSION = 1


def _resumable_fields() -> tuple[str, ...]:
    """Config fields that never change a vector (the device and the ``runtime`` kind: prefix cache, ...):
    a resumed run may change them."""
    return ("device", *EncoderConfig.fields_of_kind("runtime"))


def manifest_settings(config: EncoderConfig, **extra: Any) -> dict[str, Any]:
    vector_config = {k: v for k, v in config.to_dict().items() if k not in _resumable_fields()}
    return {"encoder": vector_config, **extra}


def _describe_differences(old: Mapping, new: Mapping, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += _describe_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {json.dumps(a)[:80]} (before) vs {json.dumps(b)[:80]} (now)")
    return out


def prepare_manifest(out_dir: Path, manifest: dict[str, Any]) -> None:
    """Create the output folder and its manifest, or check that an existing one matches (resume)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"output {out_dir} is a file; the Ray engine writes a folder of Parquet files")
    path = out_dir / MANIFEST
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: unreadable manifest ({exc}); delete the output folder to start again") from None
        diffs = _describe_differences({"settings": old.get("settings"), "inputs": old.get("inputs")},
                                      {"settings": manifest["settings"], "inputs": manifest["inputs"]})  # fmt: skip
        if diffs:
            raise InputError(f"output folder {out_dir} holds a run with other inputs or settings; give a new "
                             "output folder (or delete this one) to start again. Differences: "
                             + "; ".join(diffs[:5]) + (f" (+{len(diffs) - 5} more)" if len(diffs) > 5 else ""))  # fmt: skip
        return
    if out_dir.is_dir() and any(out_dir.glob("part-*.parquet")):
        raise InputError(f"output folder {out_dir} holds part-*.parquet files but no {MANIFEST}; "
                         "give a new output folder")  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")


def folder_lock(out_dir: Path) -> FileLock:
    """An exclusive lock on the output folder (``.prompteol.lock``): a second run on the same folder
    fails at once instead of removing the first one's temporary files (POSIX ``flock``; a no-op elsewhere)."""
    return FileLock(out_dir / ".prompteol.lock", f"another run is writing to {out_dir}; wait for it or give "
                    "another output folder")  # fmt: skip
