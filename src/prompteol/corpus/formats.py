"""Input formats of the corpus engine: listing, validation, and the one JSONL parser with its messages.

Used by both executors of ``prompteol encode`` (local: :mod:`prompteol.corpus.local`; Ray:
:mod:`prompteol.corpus.distributed`):

- :func:`list_input_files`: a file, a folder of ``.parquet`` / ``.jsonl`` files, or a glob -> sorted paths;
- :func:`validate_inputs`: every file opened cheaply before any model loads (:class:`InputFile`);
- :func:`parse_jsonl_line` (with :func:`decode_line` and :func:`without_bom`): one JSONL record, checked
  as every reader of JSONL checks it; :func:`check_parquet_text`: every row of a Parquet text column;
- :func:`check_columns` / :func:`output_fields`: no input field named like one the output writes.

What is checked when (every message names the file, and the line or row where there is one):

============================  ==========================================  ===========================
                              up front (:func:`validate_inputs`)          while reading
============================  ==========================================  ===========================
Parquet                       footer readable; text column present and    nulls in the text column
                              of a string type; no nulls where the        (files without statistics)
                              row-group statistics count them; row count;
                              ``full=True``: every value of the text column
JSONL                         readable; rows counted (non-blank lines);   every line: a JSON object
                              the first :data:`HEAD_ROWS` rows parsed     whose text field is a string,
                              and checked as every line is later          no lone surrogate in a field
                              (``full=True``: every line)
both                          no column named like the output column
                              (``embedding``) or starting ``__prompteol``
============================  ==========================================  ===========================

JSONL rows are the non-blank lines (as ``prompteol encode`` reads JSONL); the other fields become
columns, typed over the whole file or row range (ints and floats promote to float; a field whose
values have no common Arrow type is kept as JSON text, with a warning).

pyarrow is imported when a function runs, never at import time.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError

#: file suffix -> format
FORMATS = {".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}


#: the UTF-8 byte-order mark, removed from the start of a text or JSONL file (:func:`without_bom`)
BOM = b"\xef\xbb\xbf"


#: JSONL rows parsed and type-checked up front per file (the rest is checked while reading)
HEAD_ROWS = 100


#: columns starting with this are internal (row bookkeeping of the Ray engine); inputs may not have them
RESERVED_PREFIX = "__prompteol"


@dataclass(frozen=True)
class InputFile:
    """One validated input file: what :func:`validate_inputs` learnt from it cheaply."""

    path: str  #: absolute path
    format: str  #: ``parquet`` or ``jsonl``
    num_rows: int
    size: int
    mtime_ns: int
    columns: tuple[str, ...]  #: Parquet: the schema; JSONL: the fields seen in the first rows

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "format": self.format, "num_rows": self.num_rows, "size": self.size,
                "mtime_ns": self.mtime_ns}  # fmt: skip


def input_format(path: str | os.PathLike) -> str:
    """``parquet`` or ``jsonl`` from the file's suffix, else :class:`InputError`."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise InputError(f"{path}: unsupported input format {suffix or '(no suffix)'!r}; "
                         f"expected one of {sorted(FORMATS)}")  # fmt: skip
    return FORMATS[suffix]


def _visible(path: Path) -> bool:
    return not path.name.startswith((".", "_"))  # _SUCCESS, _manifest, .crc, temporary files


def list_input_files(pattern: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """Absolute paths, sorted, of a file, a folder (its ``.parquet`` / ``.jsonl`` files, not recursive;
    names starting with ``.`` or ``_`` are skipped), a glob (``**`` recurses), or a list of these."""
    if isinstance(pattern, (list, tuple)):
        found: dict[str, None] = {}
        for p in pattern:
            found.update(dict.fromkeys(list_input_files(p)))
        if not found:
            raise InputError("no input files given")
        return sorted(found)
    text = os.fspath(pattern)  # type: ignore[arg-type]
    path = Path(text).expanduser()
    if text == "-":
        raise InputError("reading from stdin is not supported here; give a Parquet/JSONL file, a folder or a glob")
    if path.is_dir():
        files = [p for p in path.iterdir() if p.is_file() and _visible(p) and p.suffix.lower() in FORMATS]
        if not files:
            raise InputError(f"folder {text} holds no {'/'.join(sorted(FORMATS))} files")
        return sorted(str(p.resolve()) for p in files)
    if path.is_file():
        input_format(path)
        return [str(path.resolve())]
    if glob.has_magic(text):
        matches = [Path(m) for m in glob.glob(os.path.expanduser(text), recursive=True)]
        files = [p for p in matches if p.is_file() and _visible(p) and p.suffix.lower() in FORMATS]
        if not files:
            raise InputError(f"no {'/'.join(sorted(FORMATS))} files match {text!r}")
        return sorted(str(p.resolve()) for p in files)
    raise InputError(f"input {text!r} does not exist")


def _is_string_type(t) -> bool:
    import pyarrow as pa

    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t) or getattr(pa.types, "is_string_view", bool)(t)


def _check_columns(path: str, columns: Iterable[str], reserved: Sequence[str]) -> None:
    for name in columns:
        if name in reserved:
            raise InputError(f"{path}: has a field {name!r}, which the output writes itself "
                             f"({', '.join(map(repr, reserved))}); rename or drop it in the input first")  # fmt: skip
        if name.startswith(RESERVED_PREFIX):
            raise InputError(f"{path}: has a field {name!r}; names starting with {RESERVED_PREFIX!r} are prompteol's "
                             "own (row bookkeeping); rename or drop it in the input first")  # fmt: skip


def _validate_parquet(path: str, text_column: str, reserved: Sequence[str]) -> tuple[int, tuple[str, ...]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"{path}: cannot read it as Parquet ({exc})") from None
    schema = pf.schema_arrow
    if text_column not in schema.names:
        raise InputError(f"{path}: no column {text_column!r} (columns: {schema.names}); choose one with --text-column")
    field = schema.field(text_column)
    if not _is_string_type(field.type):
        raise InputError(f"{path}: column {text_column!r} has type {field.type}, expected strings")
    _check_columns(path, schema.names, reserved)
    md = pf.metadata
    leaf = [i for i in range(md.num_columns) if md.schema.column(i).path == text_column]
    if leaf:
        for rg in range(md.num_row_groups):
            stats = md.row_group(rg).column(leaf[0]).statistics
            if stats is not None and stats.has_null_count and stats.null_count:
                raise InputError(f"{path}: column {text_column!r} has {stats.null_count} null values "
                                 f"(row group {rg}); every row needs a string")  # fmt: skip
    return md.num_rows, tuple(schema.names)


def _json_type(value: Any) -> str:
    names = {type(None): "null", bool: "a boolean", int: "a number", float: "a number", dict: "an object",
             list: "an array", str: "a string"}  # fmt: skip
    return names.get(type(value), type(value).__name__)


def without_bom(raw: bytes, line_no: int) -> bytes:
    """A file's first line without its UTF-8 byte-order mark (Excel and Notepad write one): the mark
    says how the file is encoded, it is not text. Only at the start of a file (line 1)."""
    return raw[len(BOM):] if line_no == 1 and raw.startswith(BOM) else raw


def decode_line(path: str, line_no: int, raw: bytes, errors: str = "strict") -> str:
    """A line of a text or JSONL file as text (UTF-8, a first line's BOM removed); :class:`InputError`
    names the line when it is not UTF-8."""
    raw = without_bom(raw, line_no)
    try:
        return raw.decode("utf-8", errors)
    except UnicodeDecodeError as exc:
        hint = ""
        if line_no == 1 and raw.startswith((b"\xff\xfe", b"\xfe\xff")):
            hint = "; the file starts with a UTF-16 byte-order mark: save it as UTF-8"
        raise InputError(f"cannot read input {path!r}: line {line_no} is not UTF-8 ({exc}){hint}") from None


def parse_jsonl_line(path: str, line_no: int, line: str | bytes, text_column: str = "text") -> dict:
    """One JSONL record, checked as every reader of JSONL checks it (the local engine of ``prompteol
    encode`` and the Ray engine): a JSON object whose ``text_column`` is a string, and no lone
    surrogate in any key or value (the text could not be tokenized, any other field could not be
    written back). :class:`InputError` names the file and the line."""
    text = decode_line(path, line_no, line) if isinstance(line, bytes) else line
    if line_no == 1:
        text = text.removeprefix("\ufeff")
    try:
        rec = json.loads(text)
    except json.JSONDecodeError as exc:
        why = exc.msg
        if text.lstrip().startswith("\ufeff"):
            why = "it starts with a byte-order mark (U+FEFF), which only the start of a file may have (were two files joined?)"
        raise InputError(f"{path} line {line_no}: not valid JSON ({why})") from None
    want = f"expected an object with a string {text_column!r} field"
    if not isinstance(rec, dict):
        raise InputError(f"{path} line {line_no}: {want}, got {_json_type(rec)}")
    if text_column not in rec:
        raise InputError(f"{path} line {line_no}: {want}: no field {text_column!r} (fields: {list(rec)[:10]}); "
                         "choose one with --text-column")  # fmt: skip
    if not isinstance(rec[text_column], str):
        raise InputError(f"{path} line {line_no}: {want}: field {text_column!r} is {_json_type(rec[text_column])}")
    problem = record_surrogate(rec, text_column) if "\\u" in text else None  # only a \u escape can make one
    if problem is not None:
        raise InputError(f"{path} line {line_no}: {problem}")
    return rec


def record_surrogate(rec: Mapping[str, Any], text_column: str = "text") -> str | None:
    """What is wrong if a key or value of a JSONL record holds a lone surrogate, else ``None``."""
    from ..encoder.prompts.builder import surrogate_problem

    for key in sorted(rec, key=lambda k: k != text_column):  # the text first
        value = rec[key]
        shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        for what, text in ((f"the key {key!r}", key), (f"the field {key!r}", shown)):
            problem = surrogate_problem(text)
            if problem is not None:
                return f"{what} {problem}"
    return None


def _validate_jsonl(path: str, text_column: str, reserved: Sequence[str], head: int | None = HEAD_ROWS
                    ) -> tuple[int, tuple[str, ...]]:  # fmt: skip
    rows = 0
    seen: dict[str, None] = {}
    try:
        with open(path, "rb") as f:
            for line_no, line in enumerate(f, start=1):
                if not without_bom(line, line_no).strip():
                    continue
                if head is None or rows < head:
                    rec = parse_jsonl_line(path, line_no, line, text_column)
                    seen.update(dict.fromkeys(rec))
                rows += 1
    except OSError as exc:
        raise InputError(f"{path}: cannot read it ({exc})") from None
    _check_columns(path, seen, reserved)
    return rows, tuple(seen)


def validate_inputs(
    files: Iterable[str | os.PathLike], text_column: str = "text", reserved: Sequence[str] = ("embedding",),
    *, full: bool = False, batch_rows: int = 65536,
) -> list[InputFile]:  # fmt: skip
    """Open every file cheaply and check it (see the module docstring for what is checked up front);
    the first problem raises :class:`InputError` naming the file and the column. ``full``: check every
    row too, as both executors do before a model loads (every JSONL line with :func:`parse_jsonl_line`,
    every value of a Parquet text column with :func:`check_parquet_text`, ``batch_rows`` at a time)."""
    out = []
    for f in files:
        path = str(Path(f).expanduser().resolve())
        fmt = input_format(path)
        try:
            st = os.stat(path)
        except OSError as exc:
            raise InputError(f"{path}: cannot read it ({exc})") from None
        if fmt == "parquet":
            rows, columns = _validate_parquet(path, text_column, reserved)
            if full:
                check_parquet_text(path, text_column, batch_rows)
        else:
            rows, columns = _validate_jsonl(path, text_column, reserved, head=None if full else HEAD_ROWS)
        out.append(InputFile(path, fmt, rows, st.st_size, st.st_mtime_ns, columns))
    return out


#: the fields each output format writes beside the input's (an input field of the same name is refused)
OUTPUT_FIELDS = {"npy": (), "jsonl": ("index", "embedding"), "parquet": ("embedding",)}


def output_fields(output_format: str) -> tuple[str, ...]:
    """The fields an output format (``npy``, ``jsonl``, ``parquet``) writes beside the input's own."""
    return OUTPUT_FIELDS[output_format]


def check_columns(path: str, columns: Iterable[str], reserved: Sequence[str] = ("embedding",)) -> None:
    """:class:`InputError` if a column would be overwritten by the output (``reserved``) or is internal."""
    _check_columns(path, columns, reserved)


def check_parquet_text(path: str | os.PathLike, text_column: str = "text", batch_rows: int = 65536) -> int:
    """Read the text column of a Parquet file (that column only, ``batch_rows`` at a time): every value
    a string (no nulls, even where the file has no statistics) of valid UTF-8; :class:`InputError`
    names the first bad row (0-based). Returns the number of rows."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    path = str(path)
    try:
        pf = pq.ParquetFile(path)
        row = 0
        for batch in pf.iter_batches(batch_size=batch_rows, columns=[text_column], use_threads=False):
            col = batch.column(0)
            nulls = pc.is_null(col)
            if pc.any(nulls).as_py():
                bad = row + int(pc.index(nulls, True).as_py())
                raise InputError(f"{path} row {bad}: column {text_column!r} is null, expected a string")
            try:
                col.validate(full=True)
            except pa.ArrowInvalid as exc:
                raise InputError(f"{path} rows {row}-{row + batch.num_rows - 1}: column {text_column!r} holds "
                                 f"text that is not valid UTF-8 ({exc})") from None  # fmt: skip
            row += batch.num_rows
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"{path}: cannot read it as Parquet ({exc})") from None
    return row


def jsonl_row_offsets(path: str | os.PathLike, every: int) -> list[tuple[int, int]]:
    """``(byte offset, line number)`` of rows ``0, every, 2*every, ...`` of a JSONL file (rows are the
    non-blank lines), so that a row range can be read without scanning from the start."""
    out: list[tuple[int, int]] = []
    row, pos = 0, 0
    with open(path, "rb") as f:
        for line_no, line in enumerate(f, start=1):
            if without_bom(line, line_no).strip():
                if row % every == 0:
                    out.append((pos, line_no))
                row += 1
            pos += len(line)
    return out
