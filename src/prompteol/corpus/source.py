"""A validated input of the local executor (text, JSONL, Parquet or stdin), read chunk by chunk."""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ..encoder.prompts.builder import surrogate_problem
from ..errors import InputError
from .formats import check_columns, decode_line, output_fields, parse_jsonl_line, validate_inputs
from .tables import iter_tables, jsonl_schema

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa


#: sentences read, encoded and written per chunk (the unit of memory and of resumption)
DEFAULT_CHUNK_SIZE = 4096


HEAD_BYTES = 1 << 20  # the input's first MiB is hashed for its identity


_SPOOL_READ = 1 << 20


def input_format(source: str) -> str:
    """``jsonl`` (``.jsonl``, ``.ndjson``), ``parquet`` (``.parquet``, ``.pq``), else ``text`` (stdin too)."""
    suffix = Path(source).suffix.lower() if source != "-" else ""
    return {".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}.get(suffix, "text")


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

        src.schema, src.as_json = jsonl_schema(record_chunks(), src.shown, src.text_column)
    else:
        for _ in record_chunks():
            pass
    if src.format == "jsonl":  # the same refusal as Parquet input and the Ray engine: nothing overwritten
        check_columns(src.shown, fields, output_fields(output_format))
    src.fields = list(fields)


def _validate_parquet(src: Source, output_format: str, chunk_size: int) -> None:
    """Every row of the text column (nulls, UTF-8: one column, a chunk at a time), as the Ray executor checks."""
    assert src.path is not None
    (info,) = validate_inputs([src.path], src.text_column, reserved=output_fields(output_format), full=True,
                              batch_rows=chunk_size)  # fmt: skip
    src.rows = info.num_rows
    src.fields = list(info.columns)
