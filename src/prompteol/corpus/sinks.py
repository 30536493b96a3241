"""Outputs of the corpus engine: ``.npy``, ``.jsonl`` and ``.parquet``, written atomically.

- :func:`embedding_array` / :func:`with_embeddings` / :func:`write_embeddings_parquet` /
  :class:`AtomicParquetWriter`: the vectors as a ``fixed_size_list<float32|float16>[dim]`` column,
  written under a temporary name and renamed when complete;
- :class:`Sink`: the local executor's output, appended chunk by chunk to ``OUT.partial`` and renamed
  to ``OUT`` when complete."""

from __future__ import annotations

import base64
import datetime as _dt
import decimal
import io
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ..errors import InputError
from ..fileio import commit_atomic
from .resume import partial_paths, remove_path
from .source import Chunk, Source
from .tables import jsonl_table

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import pyarrow as pa


OUTPUT_DTYPES = ("float32", "float16")


def embedding_array(vectors: np.ndarray, dtype: str = "float32") -> pa.FixedSizeListArray:
    """An ``(N, H)`` array as a ``fixed_size_list<float32|float16>[H]`` Arrow column."""
    import numpy as np
    import pyarrow as pa

    if dtype not in OUTPUT_DTYPES:
        raise InputError(f"output dtype should be one of {list(OUTPUT_DTYPES)}, got {dtype!r}")
    vectors = np.asarray(vectors)
    if vectors.ndim != 2:
        raise InputError(f"expected vectors of shape (N, H), got {vectors.shape}")
    flat = np.ascontiguousarray(vectors, dtype=np.dtype(dtype)).reshape(-1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat), int(vectors.shape[1]))


def with_embeddings(table: pa.Table, vectors: np.ndarray, dtype: str = "float32", column: str = "embedding"):
    """``table`` with the vectors appended as ``column`` (one row per table row)."""
    if len(vectors) != table.num_rows:
        raise InputError(f"{len(vectors)} vectors for a table of {table.num_rows} rows")
    if column in table.column_names:
        raise InputError(f"the table already has a column {column!r}")
    return table.append_column(column, embedding_array(vectors, dtype))


def _with_metadata(schema: pa.Schema, metadata: Mapping[str, Any] | None) -> pa.Schema:
    if not metadata:
        return schema
    extra = {k.encode(): (v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)).encode()
             for k, v in metadata.items()}  # fmt: skip
    return schema.with_metadata({**(schema.metadata or {}), **extra})


class AtomicParquetWriter:
    """Write a Parquet file table by table under a temporary name (``.NAME.tmp-PID`` beside it) and
    rename it into place on :meth:`close`; :meth:`abort` (or an exception inside ``with``) removes
    it, so a file with the final name is always complete. Every table is cast to the first one's
    schema; ``metadata`` (str -> JSON-able) goes into the file's key-value metadata. Small tables
    are buffered into row groups of about ``row_group_bytes``."""

    def __init__(self, path: str | os.PathLike, metadata: Mapping[str, Any] | None = None,
                 compression: str = "zstd", row_group_bytes: int = 64 << 20):  # fmt: skip
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        self.metadata = metadata
        self.compression = compression
        self.row_group_bytes = row_group_bytes
        self.rows = 0
        self._writer: Any = None
        self._schema: pa.Schema | None = None
        self._buffer: list[pa.Table] = []
        self._buffered = 0

    def write(self, table: pa.Table) -> None:
        import pyarrow.parquet as pq

        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._schema = _with_metadata(table.schema, self.metadata)
            self._writer = pq.ParquetWriter(self.tmp, self._schema, compression=self.compression)
        assert self._schema is not None
        if not table.schema.equals(self._schema):  # metadata is not compared
            table = table.cast(self._schema)
        self._buffer.append(table)
        self._buffered += table.nbytes
        self.rows += table.num_rows
        if self._buffered >= self.row_group_bytes:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if self._buffer:
            table = pa.concat_tables(self._buffer)
            self._writer.write_table(table, row_group_size=max(1, table.num_rows))
            self._buffer, self._buffered = [], 0

    def close(self) -> Path:
        if self._writer is None:
            raise InputError(f"{self.path}: nothing was written")
        self._flush()
        self._writer.close()
        self._writer = None
        commit_atomic(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        self._buffer, self._buffered = [], 0
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:  # pragma: no cover - closing a broken writer
                pass
            self._writer = None
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> AtomicParquetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_embeddings_parquet(
    path: str | os.PathLike,
    table: pa.Table,
    vectors: np.ndarray,
    dtype: str = "float32",
    metadata: Mapping[str, Any] | None = None,
    column: str = "embedding",
) -> Path:
    """Write ``table`` plus the vectors as ``column`` to ``path`` atomically (temporary name, then rename)."""
    with AtomicParquetWriter(path, metadata) as writer:
        writer.write(with_embeddings(table, vectors, dtype, column))
    return Path(path)


#: output suffix -> format
OUTPUT_FORMATS = {".npy": "npy", ".jsonl": "jsonl", ".parquet": "parquet"}


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


def jsonl_lines(src: Source, chunk: Chunk, vectors: np.ndarray) -> bytes:
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


def parquet_table(src: Source, chunk: Chunk, vectors: np.ndarray, dtype: str) -> pa.Table:
    import pyarrow as pa


    if chunk.table is not None:
        table = chunk.table
    elif chunk.records is not None:
        table = jsonl_table(chunk.records, src.schema, src.as_json, src.shown)
    else:
        table = pa.table({"text": pa.array(chunk.texts, pa.string())})
    return with_embeddings(table, vectors, dtype)


def empty_parquet_table(src: Source) -> pa.Table:
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


class Sink:
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
                remove_path(self.partial)
                self.partial.mkdir()
            else:
                self.parts = int(state["parts"])
                keep = {self._part(i).name for i in range(self.parts)}
                for p in self.partial.iterdir():  # a part (or temporary file) written after the last record
                    if p.name not in keep:
                        remove_path(p)
            return
        if state is None:
            remove_path(self.partial)
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

            with AtomicParquetWriter(self._part(self.parts)) as w:
                w.write(parquet_table(self.src, chunk, vectors, self.dtype))
            self.parts += 1
            return self.state()
        assert self.f is not None
        if self.fmt == "npy":
            self.f.write(np.ascontiguousarray(vectors, dtype=self.dtype).tobytes())
        else:
            self.f.write(jsonl_lines(self.src, chunk, vectors.astype(self.dtype, copy=False)))
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
        commit_atomic(self.partial, self.out)

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None
