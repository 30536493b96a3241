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

from ..encoder.encode_options import EncodeOptions
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


def _encode_chunk(encoder, src: Source, chunk: Chunk, options: EncodeOptions) -> np.ndarray:
    try:
        return encoder.encode(chunk.texts, options=options)
    except InputError as exc:
        raise _located(src, chunk, exc) from None


def encode_to_file(
    encoder,
    src: Source,
    out: Path,
    *,
    options: EncodeOptions | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    output_dtype: str = "float32",
    progress: bool = False,
    resume: bool = True,
    say: Say = _stderr,
    lock: bool = True,
) -> dict[str, Any]:
    """Encode ``src`` into ``out`` (``.npy`` / ``.jsonl`` / ``.parquet``) chunk by chunk, each chunk with
    ``encoder.encode(texts, options=options)`` (the call's :class:`~prompteol.encoder.encode_options.EncodeOptions`;
    no per-call progress bar: ``progress`` is the run's); see the module docstring. Returns a summary (rows,
    dim, chunks, rows resumed). ``lock=False``: the caller holds :func:`~prompteol.corpus.resume.output_lock`
    already (``prompteol encode`` takes it before the model loads)."""
    run = _Run(encoder, src, out, (options or EncodeOptions()).replace(show_progress=False), chunk_size,
               output_dtype, progress, resume, say)  # fmt: skip
    with output_lock(out) if lock else contextlib.nullcontext():
        return run.whole() if src.rows <= chunk_size else run.chunked()


class _Run:
    """One local run: what every step of it needs, in one place."""

    def __init__(self, encoder, src: Source, out: Path, options: EncodeOptions, chunk_size: int, output_dtype: str,
                 progress: bool, resume: bool, say: Say):  # fmt: skip
        self.encoder, self.src, self.out, self.options = encoder, src, out, options
        self.chunk_size, self.dtype, self.progress, self.resume, self.say = chunk_size, output_dtype, progress, resume, say
        self.fmt = OUTPUT_FORMATS[out.suffix]
        self.dim = int(encoder.dim)
        self.metadata = {"prompteol": {"config": encoder.config.to_dict(), "fingerprint": encoder.fingerprint,
                                       "normalize": options.normalize, "output_dtype": output_dtype,
                                       "text_column": src.text_column, "source": src.identity}}  # fmt: skip
        #: what a progress record must match for a rerun to continue it
        self.key = {"input": src.identity, "output": str(out.resolve()), "format": self.fmt, "dtype": output_dtype,
                    "normalize": options.normalize, "text_column": src.text_column,
                    "fingerprint": encoder.fingerprint, "dim": self.dim}  # fmt: skip

    def whole(self) -> dict[str, Any]:
        """An input of at most one chunk: encoded, then written atomically in one step (nothing to resume)."""
        import numpy as np

        src, out, fmt, dtype = self.src, self.out, self.fmt, self.dtype
        _, record = partial_paths(out)
        if any(p.exists() for p in partial_paths(out)):
            self.say(f"starting over: removing a previous run's {record.name} (this input fits in one chunk)")
            clear_partial(out)
        chunk = next(iter(src.chunks(max(src.rows, 1))), None)
        if chunk is None:
            chunk = Chunk(0, [], [], [] if src.format == "jsonl" else None)
            vectors = np.zeros((0, self.dim), np.float32)
        else:
            vectors = _encode_chunk(self.encoder, src, chunk, self.options)
        if fmt == "parquet":
            if chunk.texts:
                table = parquet_table(src, chunk, vectors, dtype)
            else:
                table = with_embeddings(empty_parquet_table(src), vectors, dtype)
            with AtomicParquetWriter(out, self.metadata) as w:
                w.write(table)
        else:

            def write(tmp: Path) -> None:
                with open(tmp, "wb") as f:
                    if fmt == "npy":
                        np.save(f, vectors.astype(dtype, copy=False))
                    else:
                        f.write(jsonl_lines(src, chunk, vectors.astype(dtype, copy=False)))

            write_atomic(out, write)
        return {"rows": src.rows, "dim": self.dim, "chunks": 1 if src.rows else 0, "resumed_rows": 0}

    def chunked(self) -> dict[str, Any]:
        """Chunk by chunk into ``OUT.partial``, each chunk recorded, resumed from a matching record."""
        src, out, key = self.src, self.out, self.key
        _, record = partial_paths(out)
        state, why = load_progress(out, key) if self.resume else (None, "--no-resume")
        if state is None and why is not None and any(p.exists() for p in partial_paths(out)):
            self.say(f"starting over: a previous run's {record.name} is not used ({why})")
        if state is not None:
            self.say(f"resuming {out}: {state['rows_done']} of {src.rows} rows were done by a previous run")
        sink = Sink(src, out, self.fmt, self.dtype, self.dim, self.metadata)
        sink.open(state)
        rows_done = int(state["rows_done"]) if state else 0
        chunks_done = int(state["chunks_done"]) if state else 0
        resumed = rows_done
        if state is None:
            write_progress(record, progress_record(key, 0, 0, 0, 1, sink.state()))
        from ..progress import progress_bar

        bar = progress_bar(src.rows, "encode", "sent", enabled=self.progress, initial=rows_done)
        try:
            start = (rows_done, int(state["input_offset"]), int(state["input_line"])) if state else (0, 0, 1)
            for chunk in src.chunks(self.chunk_size, *start):
                vectors = _encode_chunk(self.encoder, src, chunk, self.options)
                written = sink.write(chunk, vectors)
                rows_done += len(chunk)
                chunks_done += 1
                write_progress(record, progress_record(key, rows_done, chunks_done, chunk.next_offset,
                                                       chunk.next_line, written))  # fmt: skip
                bar.update(len(chunk))
                _chunk_committed(chunks_done)
            if rows_done != src.rows:
                raise InputError(f"{src.shown} has {rows_done} rows now, {src.rows} when it was checked: "
                                 "it changed while being encoded")  # fmt: skip
            sink.finish()
        except BaseException:
            sink.close()
            if rows_done:
                self.say(f"{rows_done} of {src.rows} rows are kept in {sink.partial.name}; run the same command "
                         "again to continue from there")  # fmt: skip
            else:  # nothing done: nothing worth keeping
                clear_partial(out)
            raise
        finally:
            bar.close()
        record.unlink(missing_ok=True)
        return {"rows": rows_done, "dim": self.dim, "chunks": chunks_done, "resumed_rows": resumed}
