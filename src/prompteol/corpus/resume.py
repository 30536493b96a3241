"""Resumption of both executors: the output lock, the settings-differ and the resume records.

Resumption of the corpus engine, for both executors: the output lock, the settings-differ, and the
record a rerun resumes from.

- :func:`output_lock`: one ``flock`` per output (the local executor's file, the Ray executor's folder):
  a second run of the same output fails at once instead of interleaving with the first;
- :func:`~prompteol.resume.differences`: what changed between the settings a record holds and this run's;
- the local executor's progress record ``OUT.partial.json`` (:func:`load_progress`: the rows done, where
  the next row starts in the input and in the output; anything changed: start over, saying what) and the
  Ray executor's manifest ``_prompteol_manifest.json`` (:func:`prepare_manifest`: the inputs and settings
  of the folder's run; anything changed: refused, saying what), both read by
  :func:`~prompteol.resume.read_record`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ..encoder.config import EncoderConfig
from ..errors import InputError
from ..fileio import FileLock, write_text_atomic
from ..resume import differences, read_record

__all__ = [
    "output_lock", "differences", "read_record", "partial_paths", "load_progress", "progress_record",
    "write_progress", "clear_partial", "remove_path", "PROGRESS_SCHEMA", "MANIFEST", "MANIFEST_VERSION",
    "manifest_settings", "prepare_manifest",
]  # fmt: skip

PROGRESS_SCHEMA = "prompteol.encode-progress/1"
MANIFEST = "_prompteol_manifest.json"
MANIFEST_VERSION = 1


def output_lock(out: Path, *, folder: bool = False) -> FileLock:
    """The lock a run holds (``flock``) while it writes ``out``, taken before the input is read or a model
    loads: a second run of the same output fails at once instead of interleaving its chunks (a file:
    ``OUT.partial.lock``) or removing the first one's temporary files (a folder: ``.prompteol.lock`` in
    it). The kernel drops the lock when the process dies, so a killed run never blocks the next one; the
    file is removed when the run ends."""
    if folder:
        return FileLock(out / ".prompteol.lock", f"another run is writing to {out}; wait for it or give "
                        "another output folder")  # fmt: skip
    lock = out.with_name(out.name + ".partial.lock")
    return FileLock(lock, f"another `prompteol encode` is writing {out.name} now (it holds {lock.name}); wait "
                    "for it or stop it")  # fmt: skip


# ---------------------------------------------------------------------------------------------- local executor
def partial_paths(out: Path) -> tuple[Path, Path]:
    """``(OUT.partial, OUT.partial.json)``: the unfinished output and its progress record."""
    return out.with_name(out.name + ".partial"), out.with_name(out.name + ".partial.json")


def remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def write_progress(path: Path, payload: dict[str, Any]) -> None:
    """The progress record, atomically (ASCII JSON: a path that is not valid UTF-8 stays writable)."""
    write_text_atomic(path, json.dumps(payload, indent=1))


def load_progress(out: Path, key: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """``(state to resume from, None)``, or ``(None, why a previous run's files are not used)``,
    or ``(None, None)`` when there is nothing from a previous run."""
    partial, record = partial_paths(out)
    if not record.exists():
        return None, ("a partial output without its progress record" if partial.exists() else None)
    try:
        state = read_record(record)
        if state.get("schema") != PROGRESS_SCHEMA:
            return None, f"the progress record has another schema ({state.get('schema')!r})"
        old = state["key"]
        rows_done = int(state["rows_done"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return None, "the progress record is unreadable"
    changed = [path for path, _, _ in differences(old, key)]
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


# ---------------------------------------------------------------------------------------------- Ray executor
def _resumable_fields() -> tuple[str, ...]:
    """Config fields that never change a vector (the device and the ``runtime`` kind: prefix cache, ...):
    a resumed run may change them."""
    return ("device", *EncoderConfig.fields_of_kind("runtime"))


def manifest_settings(config: EncoderConfig, **extra: Any) -> dict[str, Any]:
    vector_config = {k: v for k, v in config.to_dict().items() if k not in _resumable_fields()}
    return {"encoder": vector_config, **extra}


def prepare_manifest(out_dir: Path, manifest: dict[str, Any]) -> None:
    """Create the output folder and its manifest, or check that an existing one matches (resume)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"output {out_dir} is a file; the Ray engine writes a folder of Parquet files")
    path = out_dir / MANIFEST
    if path.is_file():
        try:
            old = read_record(path)
        except ValueError as exc:
            raise InputError(f"{path}: unreadable manifest ({exc}); delete the output folder to start again") from None
        found = differences({"settings": old.get("settings"), "inputs": old.get("inputs")},
                            {"settings": manifest["settings"], "inputs": manifest["inputs"]})  # fmt: skip
        diffs = [f"{k}: {json.dumps(a)[:80]} (before) vs {json.dumps(b)[:80]} (now)" for k, a, b in found]
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
