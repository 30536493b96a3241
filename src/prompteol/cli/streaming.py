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

import base64
import contextlib
import datetime as _dt
import decimal
import hashlib
import io
import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ..encoder.prompts.builder import ContextLengthError, surrogate_problem
from ..errors import InputError
from ..fileio import FileLock, write_atomic, write_text_atomic
from ..tables import check_columns, output_fields, parse_jsonl_line

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import pyarrow as pa

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "OUTPUT_FORMATS",
    "Source",
    "open_source",
    "encode_to_file",
    "partial_paths",
    "output_lock",
    "input_format",
]

#: sentences read, encoded and written per chunk (the unit of memory and of resumption)
DEFAULT_CHUNK_SIZE = 4096
#: output suffix -> format
OUTPUT_FORMATS = {".npy": "npy", ".jsonl": "jsonl", ".parquet": "parquet"}
PROGRESS_SCHEMA = "prompteol.encode-progress/1"
HEAD_BYTES = 1 << 20  # the input's first MiB is hashed for its identity
_SPOOL_READ = 1 << 20
_KILL_ENV = "PROMPTEOL_TEST_KILL_AFTER_CHUNKS"

Say = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def input_format(source: str) -> str:
    """``jsonl`` (``.jsonl``, ``.ndjson``), ``parquet`` (``.parquet``, ``.pq``), else ``text`` (stdin too)."""
    suffix = Path(source).suffix.lower() if source != "-" else ""
    return {".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}.get(suffix, "text")


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


# ---------------------------------------------------------------------------------------------- input
@dataclass
class Chunk:
    """Up to ``chunk_size`` consecutive rows of the input."""

    start: int  #: row index of the first row
    texts: list[str]
    lines: list[int] | None = None  #: 1-based line numbers (text and JSONL input)
    records: list[dict] | None = None  #: JSONL input: the parsed objects
    table: Any = None  #: Parquet input: the rows as an Arrow table, every column
    next_offset: int = 0  #: text / JSONL: byte offset where the row after this chunk starts
    next_line: int = 1  #: ... and its line number

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class Source:
    """A validated input (:func:`open_source`); read it chunk by chunk with :meth:`chunks`."""

    shown: str  #: the input as given (messages name it)
    format: str  #: text, jsonl or parquet
    rows: int
    text_column: str
    identity: dict[str, Any]
    path: str | None = None  #: the file (None: stdin, spooled)
    fields: list[str] = field(default_factory=list)  #: JSONL fields (first seen order) / Parquet columns
    schema: Any = None  #: JSONL -> Parquet: one Arrow schema for every chunk
    as_json: set[str] = field(default_factory=set)  #: JSONL fields kept as JSON text (mixed types)
    _spool: IO[bytes] | None = None

    # -- reading
    def open_binary(self) -> IO[bytes]:
        if self._spool is not None:
            f = open(os.dup(self._spool.fileno()), "rb")  # shares the offset: passes are sequential
            f.seek(0)
            return f
        assert self.path is not None
        return open(self.path, "rb")

    def decode(self, raw: bytes, line_no: int) -> str:
        """One line as text (a file's first line without its BOM): files are strict UTF-8; spooled
        stdin keeps the surrogates its decoding made (refused with the line number when checked)."""
        from ..tables import decode_line

        return decode_line(self.shown, line_no, raw, "surrogatepass" if self._spool is not None else "strict")

    def chunks(self, chunk_size: int, start: int = 0, offset: int = 0, line: int = 1) -> Iterator[Chunk]:
        """Chunks of rows ``start, start+1, ...``; text / JSONL seek to ``offset`` (the byte offset of
        row ``start``, on line ``line``), Parquet skips to row ``start``."""
        if self.format == "parquet":
            yield from self._parquet_chunks(chunk_size, start)
        else:
            yield from self._line_chunks(chunk_size, start, offset, line)

    def _line_chunks(self, chunk_size: int, start: int, offset: int, line: int) -> Iterator[Chunk]:
        jsonl = self.format == "jsonl"
        texts: list[str] = []
        lines: list[int] = []
        records: list[dict] = []
        row, pos, line_no = start, offset, line - 1
        try:
            with self.open_binary() as f:
                f.seek(offset)
                for raw in f:
                    line_no += 1
                    pos += len(raw)
                    text = self.decode(raw, line_no)
                    if jsonl:
                        if not text.strip():
                            continue
                        rec = parse_jsonl_line(self.shown, line_no, text, self.text_column)
                        records.append(rec)
                        texts.append(rec[self.text_column])
                    else:
                        texts.append(_strip_newline(text))
                    lines.append(line_no)
                    if len(texts) == chunk_size:
                        yield Chunk(row, texts, lines, records if jsonl else None, None, pos, line_no + 1)
                        row += len(texts)
                        texts, lines, records = [], [], []
        except OSError as exc:
            raise InputError(f"cannot read input {self.shown!r}: {exc}") from None
        if texts:
            yield Chunk(row, texts, lines, records if jsonl else None, None, pos, line_no + 1)

    def _parquet_chunks(self, chunk_size: int, start: int) -> Iterator[Chunk]:
        import pyarrow as pa

        from ..tables import iter_tables

        assert self.path is not None
        held: list[pa.Table] = []
        count, row = 0, start

        def take(n: int) -> Chunk:
            nonlocal held, count, row
            table = pa.concat_tables(held) if len(held) > 1 else held[0]
            part, rest = table.slice(0, n), table.slice(n)
            held, count = ([rest] if rest.num_rows else []), rest.num_rows
            chunk = Chunk(row, part.column(self.text_column).to_pylist(), table=part)
            row += n
            return chunk

        for table in iter_tables(self.path, self.text_column, start=start, batch_rows=chunk_size):
            held.append(table)
            count += table.num_rows
            while count >= chunk_size:
                yield take(chunk_size)
        if count:
            yield take(count)

    # -- messages
    def where(self, chunk: Chunk, k: int) -> str:
        """The place of the chunk's ``k``-th row: ``FILE line N`` or ``FILE row N`` (Parquet, 0-based)."""
        if chunk.lines is not None:
            return f"{self.shown} line {chunk.lines[k]}"
        return f"{self.shown} row {chunk.start + k}"

    def span(self, chunk: Chunk) -> str:
        if chunk.lines is not None:
            return f"{self.shown} lines {chunk.lines[0]}-{chunk.lines[-1]}"
        return f"{self.shown} rows {chunk.start}-{chunk.start + len(chunk) - 1}"

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()
            self._spool = None


def _strip_newline(text: str) -> str:
    """A line without its ``\\n`` and one ``\\r`` before it (as ``str.split('\\n')`` then ``removesuffix('\\r')``)."""
    return text.removesuffix("\n").removesuffix("\r")


def _spool_stdin() -> tuple[IO[bytes], dict[str, Any]]:
    """stdin copied to an unnamed temporary file (gone when closed, or when the process dies), as
    UTF-8 with the surrogates that its decoding made kept; its identity is the sha256 of all of it."""
    spool = tempfile.TemporaryFile(prefix="prompteol-stdin-")
    digest, size = hashlib.sha256(), 0
    try:
        while True:
            part = sys.stdin.read(_SPOOL_READ)
            if not part:
                break
            data = part.encode("utf-8", "surrogatepass")
            digest.update(data)
            size += len(data)
            spool.write(data)
        spool.flush()
    except (OSError, UnicodeDecodeError) as exc:
        spool.close()
        raise InputError(f"cannot read input '-': {exc}") from None
    return spool, {"stdin": True, "size": size, "sha256": digest.hexdigest()}


def _file_identity(path: str) -> dict[str, Any]:
    st = os.stat(path)
    with open(path, "rb") as f:
        head = hashlib.sha256(f.read(HEAD_BYTES)).hexdigest()
    return {"path": str(Path(path).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256_head": head}


def open_source(source: str, text_column: str | None = None, output_format: str = "npy",
                chunk_size: int = DEFAULT_CHUNK_SIZE) -> Source:  # fmt: skip
    """Validate the whole input in one pass that holds at most one chunk (see the module docstring);
    :class:`InputError` names the line (text, JSONL) or row (Parquet) of the first problem."""
    fmt = input_format(source)
    if fmt == "text" and text_column is not None:
        shown = "stdin" if source == "-" else repr(source)
        raise InputError(f"--text-column applies to JSONL and Parquet input; {shown} is read as plain text "
                         "(one sentence per line)")  # fmt: skip
    column = text_column or "text"
    if source == "-":
        spool, identity = _spool_stdin()
        src = Source(source, fmt, 0, column, identity, _spool=spool)
    else:
        if not os.path.isfile(source):
            why = "it is a directory" if os.path.isdir(source) else "no such file"
            raise InputError(f"cannot read input {source!r}: {why}")
        try:
            identity = _file_identity(source)
        except OSError as exc:
            raise InputError(f"cannot read input {source!r}: {exc}") from None
        src = Source(source, fmt, 0, column, identity, path=source)
    try:
        if fmt == "parquet":
            _validate_parquet(src, output_format, chunk_size)
        else:
            _validate_lines(src, output_format, chunk_size)
    except BaseException:
        src.close()
        raise
    src.identity["rows"] = src.rows
    return src


def _validate_lines(src: Source, output_format: str, chunk_size: int) -> None:
    """Count (and for JSONL parse and check) every line; JSONL -> Parquet: infer the column types."""
    fields: dict[str, None] = {}

    def record_chunks() -> Iterator[list[dict]]:
        for chunk in src.chunks(chunk_size):
            src.rows += len(chunk)
            if chunk.records is not None:
                for rec in chunk.records:
                    fields.update(dict.fromkeys(rec))
                yield chunk.records
            else:
                for k, text in enumerate(chunk.texts):
                    if src._spool is not None:  # a strict UTF-8 file cannot hold a surrogate
                        problem = surrogate_problem(text)
                        if problem is not None:
                            raise InputError(f"{src.where(chunk, k)}: the text {problem}")

    if src.format == "jsonl" and output_format == "parquet":
        from ..tables import jsonl_schema

        src.schema, src.as_json = jsonl_schema(record_chunks(), src.shown, src.text_column)
    else:
        for _ in record_chunks():
            pass
    if src.format == "jsonl":  # the same refusal as Parquet input and the Ray engine: nothing overwritten
        check_columns(src.shown, fields, output_fields(output_format))
    src.fields = list(fields)


def _validate_parquet(src: Source, output_format: str, chunk_size: int) -> None:
    from ..tables import check_parquet_text, validate_inputs

    assert src.path is not None
    (info,) = validate_inputs([src.path], src.text_column, reserved=output_fields(output_format))
    check_parquet_text(src.path, src.text_column, batch_rows=chunk_size)  # nulls, UTF-8: every row, one column
    src.rows = info.num_rows
    src.fields = list(info.columns)


# ---------------------------------------------------------------------------------------------- output
def _json_default(value: Any) -> Any:
    """Parquet values that JSON has no type for (when Parquet input goes to .jsonl output)."""
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    return str(value)


def _jsonl_lines(src: Source, chunk: Chunk, vectors: np.ndarray) -> bytes:
    """The output lines of a chunk: its records (or ``{"text"}``) with ``index`` (if absent) and ``embedding``."""
    if chunk.records is not None:
        records: list[dict] = chunk.records
    elif chunk.table is not None:
        records = chunk.table.to_pylist()
    else:
        records = [{"text": t} for t in chunk.texts]
    out = io.StringIO()
    for k, (rec, vec) in enumerate(zip(records, vectors.tolist())):
        rec = dict(rec)  # (an input field named index or embedding was refused when the input was checked)
        rec["index"] = chunk.start + k
        rec["embedding"] = vec
        out.write(json.dumps(rec, ensure_ascii=False, default=_json_default))
        out.write("\n")
    return out.getvalue().encode("utf-8")


def _parquet_table(src: Source, chunk: Chunk, vectors: np.ndarray, dtype: str) -> pa.Table:
    import pyarrow as pa

    from ..tables import jsonl_table, with_embeddings

    if chunk.table is not None:
        table = chunk.table
    elif chunk.records is not None:
        table = jsonl_table(chunk.records, src.schema, src.as_json, src.shown)
    else:
        table = pa.table({"text": pa.array(chunk.texts, pa.string())})
    return with_embeddings(table, vectors, dtype)


def _empty_parquet_table(src: Source) -> pa.Table:
    import pyarrow as pa

    if src.format == "parquet":
        import pyarrow.parquet as pq

        assert src.path is not None
        return pq.ParquetFile(src.path).schema_arrow.empty_table()
    if src.schema is not None and len(src.schema):
        return src.schema.empty_table()
    return pa.table({"text": pa.array([], pa.string())})


def _npy_header(shape: tuple[int, int], dtype: str) -> bytes:
    import numpy as np

    buf = io.BytesIO()
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue()


def _fsync(f: IO[bytes]) -> None:
    f.flush()
    os.fsync(f.fileno())


class _Sink:
    """Appends chunks to ``OUT.partial``; :meth:`finish` turns it into ``OUT``."""

    def __init__(self, src: Source, out: Path, fmt: str, dtype: str, dim: int, metadata: dict[str, Any]):
        self.src, self.out, self.fmt, self.dtype, self.dim, self.metadata = src, out, fmt, dtype, dim, metadata
        self.partial, _ = partial_paths(out)
        self.f: IO[bytes] | None = None
        self.header = 0
        self.parts = 0

    def open(self, state: dict[str, Any] | None) -> None:
        """Start ``OUT.partial`` (``state`` None) or continue it after the recorded rows."""
        import numpy as np

        if self.fmt == "parquet":
            if state is None:
                _remove(self.partial)
                self.partial.mkdir()
            else:
                self.parts = int(state["parts"])
                keep = {self._part(i).name for i in range(self.parts)}
                for p in self.partial.iterdir():  # a part (or temporary file) written after the last record
                    if p.name not in keep:
                        _remove(p)
            return
        if state is None:
            _remove(self.partial)
            self.f = open(self.partial, "wb")
            if self.fmt == "npy":
                self.f.write(_npy_header((self.src.rows, self.dim), self.dtype))
                self.header = self.f.tell()
            return
        self.f = open(self.partial, "r+b")
        if self.fmt == "npy":
            self.header = int(state["header_bytes"])
            self.f.seek(self.header + int(state["rows_done"]) * self.dim * np.dtype(self.dtype).itemsize)
        else:
            self.f.truncate(int(state["output_offset"]))
            self.f.seek(int(state["output_offset"]))

    def _part(self, i: int) -> Path:
        return self.partial / f"part-{i:06d}.parquet"

    def write(self, chunk: Chunk, vectors: np.ndarray) -> dict[str, Any]:
        """Append one chunk, on disk (fsynced) when this returns; what the progress record needs."""
        import numpy as np

        if self.fmt == "parquet":
            from ..tables import AtomicParquetWriter

            with AtomicParquetWriter(self._part(self.parts)) as w:
                w.write(_parquet_table(self.src, chunk, vectors, self.dtype))
            self.parts += 1
            return self.state()
        assert self.f is not None
        if self.fmt == "npy":
            self.f.write(np.ascontiguousarray(vectors, dtype=self.dtype).tobytes())
        else:
            self.f.write(_jsonl_lines(self.src, chunk, vectors.astype(self.dtype, copy=False)))
        _fsync(self.f)
        return self.state()

    def state(self) -> dict[str, Any]:
        """Where the output stands: what the progress record holds besides the rows."""
        if self.fmt == "parquet":
            return {"parts": self.parts}
        assert self.f is not None
        if self.fmt == "npy":
            return {"header_bytes": self.header}
        return {"output_offset": self.f.tell()}

    def finish(self) -> None:
        """``OUT.partial`` -> ``OUT`` (renamed; Parquet parts copied into one file first)."""
        if self.fmt == "parquet":
            import pyarrow.parquet as pq

            from ..tables import AtomicParquetWriter

            with AtomicParquetWriter(self.out, self.metadata) as w:
                for i in range(self.parts):
                    pf = pq.ParquetFile(self._part(i))
                    for rg in range(pf.metadata.num_row_groups):
                        w.write(pf.read_row_group(rg, use_threads=False))
            shutil.rmtree(self.partial)
            return
        assert self.f is not None
        self.f.truncate()
        _fsync(self.f)
        self.f.close()
        self.f = None
        os.replace(self.partial, self.out)

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _write_record(path: Path, payload: dict[str, Any]) -> None:
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


def _load_progress(out: Path, key: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
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


def _clear(out: Path) -> None:
    for p in partial_paths(out):
        _remove(p)


def _chunk_committed(chunks_done: int) -> None:
    """Called after each recorded chunk. Tests monkeypatch it (or set ``PROMPTEOL_TEST_KILL_AFTER_CHUNKS``)."""
    kill_after = os.environ.get(_KILL_ENV)
    if kill_after and chunks_done >= int(kill_after):
        os.kill(os.getpid(), signal.SIGKILL)


# ---------------------------------------------------------------------------------------------- driver
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
            _clear(out)
        _write_whole(encoder, src, out, fmt, dim, output_dtype, metadata, options)
        return {"rows": src.rows, "dim": dim, "chunks": 1 if src.rows else 0, "resumed_rows": 0}

    key = {"input": src.identity, "output": str(out.resolve()), "format": fmt, "dtype": output_dtype,
           "normalize": bool(normalize), "text_column": src.text_column, "fingerprint": encoder.fingerprint,
           "dim": dim}  # fmt: skip
    return _encode_chunks(encoder, src, out, fmt, key, dim, metadata, options, chunk_size, progress, resume, say)


def _encode_chunks(encoder, src: Source, out: Path, fmt: str, key: dict, dim: int, metadata: dict, options: dict,
                   chunk_size: int, progress: bool, resume: bool, say: Say) -> dict[str, Any]:  # fmt: skip
    _, record = partial_paths(out)
    state, why = _load_progress(out, key) if resume else (None, "--no-resume")
    if state is None and why is not None and any(p.exists() for p in partial_paths(out)):
        say(f"starting over: a previous run's {record.name} is not used ({why})")
    if state is not None:
        say(f"resuming {out}: {state['rows_done']} of {src.rows} rows were done by a previous run")
    sink = _Sink(src, out, fmt, key["dtype"], dim, metadata)
    sink.open(state)
    rows_done = int(state["rows_done"]) if state else 0
    chunks_done = int(state["chunks_done"]) if state else 0
    resumed = rows_done
    if state is None:
        _write_record(record, _progress(key, 0, 0, 0, 1, sink.state()))
    from ..progress import progress_bar

    bar = progress_bar(src.rows, "encode", "sent", enabled=progress, initial=rows_done)
    try:
        start = (rows_done, int(state["input_offset"]), int(state["input_line"])) if state else (0, 0, 1)
        for chunk in src.chunks(chunk_size, *start):
            vectors = _encode_chunk(encoder, src, chunk, options)
            written = sink.write(chunk, vectors)
            rows_done += len(chunk)
            chunks_done += 1
            _write_record(record, _progress(key, rows_done, chunks_done, chunk.next_offset, chunk.next_line,
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
            _clear(out)
        raise
    finally:
        bar.close()
    record.unlink(missing_ok=True)
    return {"rows": rows_done, "dim": dim, "chunks": chunks_done, "resumed_rows": resumed}


def _progress(key, rows_done: int, chunks_done: int, offset: int, line: int, written: dict) -> dict[str, Any]:
    return {"schema": PROGRESS_SCHEMA, "key": key, "rows_done": rows_done, "chunks_done": chunks_done,
            "input_offset": offset, "input_line": line, **written}  # fmt: skip


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
        from ..tables import AtomicParquetWriter, with_embeddings

        if chunk.texts:
            table = _parquet_table(src, chunk, vectors, dtype)
        else:
            table = with_embeddings(_empty_parquet_table(src), vectors, dtype)
        with AtomicParquetWriter(out, metadata) as w:
            w.write(table)
        return

    def write(tmp: Path) -> None:
        if fmt == "npy":
            with open(tmp, "wb") as f:
                np.save(f, vectors.astype(dtype, copy=False))
        else:
            with open(tmp, "wb") as f:
                f.write(_jsonl_lines(src, chunk, vectors.astype(dtype, copy=False)))

    write_atomic(out, write)
