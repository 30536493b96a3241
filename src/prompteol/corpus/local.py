"""The local engine of ``prompteol encode``, streamed: bounded memory at any corpus size, resumable.

Three passes over the input, none holding more than one chunk:

1. **validate** (:func:`open_source`, before any model loads): every line or row is read once and
   checked (UTF-8, JSON objects with a string text field, lone surrogates, Parquet text column
   of strings without nulls), rows are counted, and the input's identity is taken (size, mtime
   and the sha256 of its first MiB; stdin is spooled to an unnamed temporary file first and
   identified by the sha256 of all of it). JSONL going to Parquet also has its column types
   inferred here, chunk by chunk, so every part has one schema.
2. **encode**, chunk by chunk (:func:`encode_to_file`): ``--chunk-size`` texts are read,
   encoded with :meth:`Encoder.encode` and appended to ``OUT.partial`` (``.npy``: the header is
   written for the final shape from the count, then raw rows; ``.jsonl``: lines; ``.parquet``:
   a folder of one part file per chunk), then ``OUT.partial.json`` records the rows done and
   where the next row starts in the input and in the output (data flushed and fsynced first,
   the record replaced atomically), so a record never claims rows that are not on disk.
3. **finish**: ``OUT.partial`` is renamed to ``OUT`` (Parquet: the parts are copied into one
   file, row group by row group, written under a temporary name and renamed), then the record
   is removed. A file named ``OUT`` is therefore always complete.

A rerun finds ``OUT.partial.json``: with the same input (identity and row count), output,
format, dtype, normalisation, text column and encoder fingerprint, it continues after the last
recorded chunk; with anything else it says what changed and starts over. An input of at most
one chunk is encoded and written in one step (temporary file, then rename; no record).

For tests only: ``PROMPTEOL_TEST_KILL_AFTER_CHUNKS=N`` makes the process SIGKILL itself after
its N-th recorded chunk (and :func:`_chunk_committed` is the hook tests monkeypatch).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..encoder.prompts.builder import ContextLengthError
from ..errors import InputError
from ..fileio import write_atomic
from .resume import clear_partial, load_progress, output_lock, partial_paths, progress_record, write_progress
from .sinks import (
    OUTPUT_FORMATS,
    AtomicParquetWriter,
    Sink,
    empty_parquet_table,
    jsonl_lines,
    parquet_table,
    with_embeddings,
)
from .source import DEFAULT_CHUNK_SIZE, Chunk, Source

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np


_KILL_ENV = "PROMPTEOL_TEST_KILL_AFTER_CHUNKS"


Say = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def _chunk_committed(chunks_done: int) -> None:
    """Called after each recorded chunk. Tests monkeypatch it (or set ``PROMPTEOL_TEST_KILL_AFTER_CHUNKS``)."""
    kill_after = os.environ.get(_KILL_ENV)
    if kill_after and chunks_done >= int(kill_after):
        os.kill(os.getpid(), signal.SIGKILL)


def _located(src: Source, chunk: Chunk, exc: InputError) -> InputError:
    """The encoder's error about the chunk's ``texts[k]``, naming the input line (or row) instead."""
    message = str(exc)
    if isinstance(exc, ContextLengthError):  # the index is into the chunk, as given
        k = exc.index
        message = message.replace(f"texts[{k}]", f"texts[{chunk.start + k}]", 1)
        exc.args = (f"{src.where(chunk, k)}: {message}",)
    else:
        exc.args = (f"{src.span(chunk)}: {message}",)
    return exc


def _encode_chunk(encoder, src: Source, chunk: Chunk, options: dict[str, Any]) -> np.ndarray:
    try:
        return encoder.encode(chunk.texts, **options)
    except InputError as exc:
        raise _located(src, chunk, exc) from None


def encode_to_file(
    encoder,
    src: Source,
    out: Path,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    batch_size: int = 32,
    max_batch_tokens: int | None = None,
    normalize: bool = False,
    output_dtype: str = "float32",
    use_embedding_cache: bool = True,
    progress: bool = False,
    resume: bool = True,
    say: Say = _stderr,
    lock: bool = True,
) -> dict[str, Any]:
    """Encode ``src`` into ``out`` (``.npy`` / ``.jsonl`` / ``.parquet``) chunk by chunk; see the module
    docstring. Returns a summary (rows, dim, chunks, rows resumed). ``lock=False``: the caller holds
    :func:`output_lock` already (``prompteol encode`` takes it before the model loads)."""
    fmt = OUTPUT_FORMATS[out.suffix]
    options = dict(batch_size=batch_size, normalize=normalize, max_batch_tokens=max_batch_tokens,
                   show_progress=False, use_embedding_cache=use_embedding_cache)  # fmt: skip
    dim = int(encoder.dim)
    metadata = {"prompteol": {"config": encoder.config.to_dict(), "fingerprint": encoder.fingerprint,
                              "normalize": bool(normalize), "output_dtype": output_dtype,
                              "text_column": src.text_column, "source": src.identity}}  # fmt: skip
    with output_lock(out) if lock else contextlib.nullcontext():
        return _encode(encoder, src, out, fmt, dim, output_dtype, metadata, options, chunk_size, normalize,
                       progress, resume, say)  # fmt: skip


def _encode(encoder, src: Source, out: Path, fmt: str, dim: int, output_dtype: str, metadata: dict, options: dict,
            chunk_size: int, normalize: bool, progress: bool, resume: bool, say: Say) -> dict[str, Any]:  # fmt: skip
    _, record = partial_paths(out)
    if src.rows <= chunk_size:  # one step, as before streaming: nothing to resume
        if any(p.exists() for p in partial_paths(out)):
            say(f"starting over: removing a previous run's {record.name} (this input fits in one chunk)")
            clear_partial(out)
        _write_whole(encoder, src, out, fmt, dim, output_dtype, metadata, options)
        return {"rows": src.rows, "dim": dim, "chunks": 1 if src.rows else 0, "resumed_rows": 0}

    key = {"input": src.identity, "output": str(out.resolve()), "format": fmt, "dtype": output_dtype,
           "normalize": bool(normalize), "text_column": src.text_column, "fingerprint": encoder.fingerprint,
           "dim": dim}  # fmt: skip
    return _encode_chunks(encoder, src, out, fmt, key, dim, metadata, options, chunk_size, progress, resume, say)


def _encode_chunks(encoder, src: Source, out: Path, fmt: str, key: dict, dim: int, metadata: dict, options: dict,
                   chunk_size: int, progress: bool, resume: bool, say: Say) -> dict[str, Any]:  # fmt: skip
    _, record = partial_paths(out)
    state, why = load_progress(out, key) if resume else (None, "--no-resume")
    if state is None and why is not None and any(p.exists() for p in partial_paths(out)):
        say(f"starting over: a previous run's {record.name} is not used ({why})")
    if state is not None:
        say(f"resuming {out}: {state['rows_done']} of {src.rows} rows were done by a previous run")
    sink = Sink(src, out, fmt, key["dtype"], dim, metadata)
    sink.open(state)
    rows_done = int(state["rows_done"]) if state else 0
    chunks_done = int(state["chunks_done"]) if state else 0
    resumed = rows_done
    if state is None:
        write_progress(record, progress_record(key, 0, 0, 0, 1, sink.state()))
    from ..progress import progress_bar

    bar = progress_bar(src.rows, "encode", "sent", enabled=progress, initial=rows_done)
    try:
        start = (rows_done, int(state["input_offset"]), int(state["input_line"])) if state else (0, 0, 1)
        for chunk in src.chunks(chunk_size, *start):
            vectors = _encode_chunk(encoder, src, chunk, options)
            written = sink.write(chunk, vectors)
            rows_done += len(chunk)
            chunks_done += 1
            write_progress(record, progress_record(key, rows_done, chunks_done, chunk.next_offset, chunk.next_line,
                                            written))  # fmt: skip
            bar.update(len(chunk))
            _chunk_committed(chunks_done)
        if rows_done != src.rows:
            raise InputError(f"{src.shown} has {rows_done} rows now, {src.rows} when it was checked: "
                             "it changed while being encoded")  # fmt: skip
        sink.finish()
    except BaseException:
        sink.close()
        if rows_done:
            say(f"{rows_done} of {src.rows} rows are kept in {sink.partial.name}; run the same command again "
                "to continue from there")  # fmt: skip
        else:  # nothing done: nothing worth keeping
            clear_partial(out)
        raise
    finally:
        bar.close()
    record.unlink(missing_ok=True)
    return {"rows": rows_done, "dim": dim, "chunks": chunks_done, "resumed_rows": resumed}


def _write_whole(encoder, src: Source, out: Path, fmt: str, dim: int, dtype: str, metadata: dict,
                 options: dict) -> None:  # fmt: skip
    """An input of at most one chunk: encoded, then written atomically in one step."""
    import numpy as np

    chunk = next(iter(src.chunks(max(src.rows, 1))), None)
    if chunk is None:
        chunk, vectors = Chunk(0, [], [], [] if src.format == "jsonl" else None), np.zeros((0, dim), np.float32)
    else:
        vectors = _encode_chunk(encoder, src, chunk, options)
    if fmt == "parquet":

        if chunk.texts:
            table = parquet_table(src, chunk, vectors, dtype)
        else:
            table = with_embeddings(empty_parquet_table(src), vectors, dtype)
        with AtomicParquetWriter(out, metadata) as w:
            w.write(table)
        return

    def write(tmp: Path) -> None:
        if fmt == "npy":
            with open(tmp, "wb") as f:
                np.save(f, vectors.astype(dtype, copy=False))
        else:
            with open(tmp, "wb") as f:
                f.write(jsonl_lines(src, chunk, vectors.astype(dtype, copy=False)))

    write_atomic(out, write)
