"""A Parquet or JSONL file (or a row range of it) as Arrow tables, every column kept.

Reading a Parquet or JSONL file (or a row range of it) as Arrow tables, every column kept, the
text column checked; JSONL records typed into one schema over the range. pyarrow is imported when a
function runs."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError
from .formats import InputFile, input_format, parse_jsonl_line, without_bom

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa


log = logging.getLogger(__name__)


_BATCH_ROWS = 1024


def jsonl_schema(chunks: Iterable[list[dict]], path: str, text_column: str = "text") -> tuple[pa.Schema, set[str]]:
    """One Arrow schema for JSONL records given chunk by chunk (field order: first appearance; ints and
    floats promote to float; a field without a common type becomes JSON text, with a warning) and the
    set of such fields; pass both to :func:`jsonl_table`. Holds one chunk at a time."""
    return _jsonl_schema(chunks, path, text_column)


def jsonl_table(records: list[dict], schema: pa.Schema, as_json: set[str], path: str) -> pa.Table:
    """JSONL records as an Arrow table of ``schema`` (from :func:`jsonl_schema`); fields in ``as_json`` as JSON text."""
    return _jsonl_table(records, schema, as_json, path)


def _as_input(file: InputFile | str | os.PathLike) -> tuple[str, str]:
    if isinstance(file, InputFile):
        return file.path, file.format
    path = str(Path(file).expanduser())
    return path, input_format(path)


def _iter_parquet(path: str, text_column: str, start: int, stop: int | None, batch_rows: int) -> Iterator[pa.Table]:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"{path}: cannot read it as Parquet ({exc})") from None
    md = pf.metadata
    stop = md.num_rows if stop is None else min(stop, md.num_rows)
    first = 0  # file row of the current row group's first row
    for rg in range(md.num_row_groups):
        n = md.row_group(rg).num_rows
        if first + n <= start:
            first += n
            continue
        if first >= stop:
            break
        pos = first
        for batch in pf.iter_batches(batch_size=batch_rows, row_groups=[rg], use_threads=False):
            lo, hi = max(start - pos, 0), min(stop - pos, batch.num_rows)
            if hi > lo:
                table = pa.Table.from_batches([batch.slice(lo, hi - lo)])
                if text_column not in table.column_names:
                    raise InputError(f"{path}: no column {text_column!r}")
                nulls = pc.is_null(table.column(text_column))
                if pc.any(nulls).as_py():
                    bad = pos + lo + int(pc.index(nulls, True).as_py())
                    raise InputError(f"{path} row {bad}: column {text_column!r} is null, expected a string")
                yield table
            pos += batch.num_rows
        first += n


def _record_chunks(
    path: str, text_column: str, start: int, stop: int | None, batch_rows: int, offset: tuple[int, int] | None
) -> Iterator[list[dict]]:
    """Parsed, checked JSONL records of rows ``[start, stop)`` in chunks of ``batch_rows``
    (``offset``: the ``(byte offset, line number)`` of row ``start``, from :func:`jsonl_row_offsets`)."""
    row = start if offset else 0
    chunk: list[dict] = []
    try:
        with open(path, "rb") as f:
            pos, first_line = offset or (0, 1)
            f.seek(pos)
            for line_no, line in enumerate(f, start=first_line):
                if not without_bom(line, line_no).strip():
                    continue
                if stop is not None and row >= stop:
                    break
                if row >= start:
                    chunk.append(parse_jsonl_line(path, line_no, line, text_column))
                    if len(chunk) >= batch_rows:
                        yield chunk
                        chunk = []
                row += 1
    except OSError as exc:
        raise InputError(f"{path}: cannot read it ({exc})") from None
    if chunk:
        yield chunk


def _jsonl_schema(chunks: Iterable[list[dict]], path: str, text_column: str) -> tuple[pa.Schema, set[str]]:
    """One Arrow schema for every chunk (field order: first appearance) and the fields kept as JSON text."""
    import pyarrow as pa

    types: dict[str, pa.DataType] = {}
    as_json: set[str] = set()
    for chunk in chunks:
        names: dict[str, None] = {}
        for rec in chunk:
            names.update(dict.fromkeys(rec))
        for name in names:
            types.setdefault(name, pa.null())
            if name in as_json or name == text_column:
                continue
            try:
                t = pa.array([rec.get(name) for rec in chunk]).type
                merged = pa.unify_schemas([pa.schema([(name, types[name])]), pa.schema([(name, t)])],
                                          promote_options="permissive")  # fmt: skip
                types[name] = merged.field(name).type
            except (pa.ArrowException, OverflowError, TypeError, ValueError):
                as_json.add(name)
    for name in sorted(as_json):
        log.warning("%s: field %r has values of different types; it is kept as JSON text", path, name)
        types[name] = pa.string()
    if text_column in types:
        types[text_column] = pa.string()
    return pa.schema(list(types.items())), as_json


def _jsonl_table(chunk: list[dict], schema: pa.Schema, as_json: set[str], path: str) -> pa.Table:
    import pyarrow as pa

    if as_json:
        chunk = [{k: (json.dumps(v, ensure_ascii=False) if k in as_json and v is not None else v)
                  for k, v in rec.items()} for rec in chunk]  # fmt: skip
    try:
        return pa.Table.from_pylist(chunk, schema=schema)
    except (pa.ArrowException, OverflowError, TypeError, ValueError) as exc:  # pragma: no cover - inference covers it
        raise InputError(f"{path}: cannot convert the fields to columns ({exc})") from None


def iter_tables(
    file: InputFile | str | os.PathLike,
    text_column: str = "text",
    start: int = 0,
    stop: int | None = None,
    batch_rows: int = _BATCH_ROWS,
    offset: tuple[int, int] | None = None,
) -> Iterator[pa.Table]:
    """Rows ``[start, stop)`` of a Parquet or JSONL file as Arrow tables of at most ``batch_rows`` rows,
    every column kept, the text column checked (strings, no nulls): :class:`InputError` names the
    file and the row (Parquet, 0-based) or line (JSONL, 1-based). JSONL tables share one schema over
    the range (read twice: types first, then values). ``offset`` (JSONL): where row ``start`` begins,
    from :func:`jsonl_row_offsets`."""
    path, fmt = _as_input(file)
    if fmt == "parquet":
        yield from _iter_parquet(path, text_column, start, stop, batch_rows)
        return
    schema, as_json = _jsonl_schema(_record_chunks(path, text_column, start, stop, batch_rows, offset), path,
                                    text_column)  # fmt: skip
    for chunk in _record_chunks(path, text_column, start, stop, batch_rows, offset):
        yield _jsonl_table(chunk, schema, as_json, path)


def read_table(
    file: InputFile | str | os.PathLike, text_column: str = "text", start: int = 0, stop: int | None = None
) -> pa.Table:
    """Rows ``[start, stop)`` of a file as one Arrow table (see :func:`iter_tables`)."""
    import pyarrow as pa

    tables = list(iter_tables(file, text_column, start, stop, batch_rows=1 << 16))
    if not tables:
        path, fmt = _as_input(file)
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(path).schema_arrow.empty_table()
        return pa.table({text_column: pa.array([], pa.string())})
    return pa.concat_tables(tables)


def read_texts(
    file: InputFile | str | os.PathLike, text_column: str = "text", start: int = 0, stop: int | None = None
) -> list[str]:
    """The sentences of rows ``[start, stop)`` of a file, checked (see :func:`iter_tables`)."""
    out: list[str] = []
    for table in iter_tables(file, text_column, start, stop):
        out.extend(table.column(text_column).to_pylist())
    return out
