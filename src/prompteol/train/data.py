"""Triplet files: ``sent0,sent1,hard_neg`` CSV (SimCSE's NLI format) or JSONL with the same fields.

The whole file is validated before training starts: every malformed row is reported with
its line number (all of them, not just the first), so a 275k-row file never fails mid-run
and no row is dropped without saying so.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError

__all__ = ["Triplet", "TripletDataError", "BadRow", "read_triplets", "write_triplets", "file_sha256", "FIELDS"]

log = logging.getLogger(__name__)

#: column names, as in SimCSE's nli_for_simcse.csv: anchor, positive (entailment), hard negative (contradiction)
FIELDS = ("sent0", "sent1", "hard_neg")
SUFFIXES = {".csv": "csv", ".jsonl": "jsonl"}
_SHOWN = 20  # problems listed in an error message (all are in the exception's ``problems``)


@dataclass(frozen=True)
class Triplet:
    """An anchor, a positive (paraphrase/entailment) and an optional hard negative (contradiction)."""

    anchor: str
    positive: str
    negative: str | None = None


@dataclass(frozen=True)
class BadRow:
    line: int  # 1-based line number in the file (where the record starts)
    problem: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.problem}"


class TripletDataError(DataError):
    """A triplet file has malformed rows; ``problems`` lists every one with its line number."""

    def __init__(self, path: str | Path, problems: list[BadRow], rows: int):
        self.path = str(path)
        self.problems = problems
        shown = "\n  ".join(str(p) for p in problems[:_SHOWN])
        more = f"\n  ... and {len(problems) - _SHOWN} more" if len(problems) > _SHOWN else ""
        super().__init__(
            f"{path}: {len(problems)} bad row(s) out of {rows}:\n  {shown}{more}\n"
            f"Fix these rows, or pass --skip-bad-rows to train without them (they are listed in the log)."
        )


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_triplets(path: str | Path, skip_bad_rows: bool = False) -> list[Triplet]:
    """All triplets of a ``.csv`` or ``.jsonl`` file, validated up front.

    The CSV needs a header with ``sent0`` and ``sent1`` (and ``hard_neg`` for hard negatives;
    without that column the file holds pairs and only in-batch negatives are used). JSONL
    rows are objects with the same string fields. Empty fields, wrong field counts, broken
    quoting, invalid UTF-8 and a mix of rows with and without hard negatives are errors:
    :class:`TripletDataError` lists every bad row, unless ``skip_bad_rows`` (then each is
    logged as a warning with its line number and left out).
    """
    path = Path(path)
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"{path}: unknown triplet file type {path.suffix!r}; valid: {sorted(SUFFIXES)}")
    if not path.is_file():
        raise DataError(f"{path}: no such file (a triplet file: .csv with sent0,sent1,hard_neg or .jsonl)")
    # surrogateescape keeps undecodable bytes visible (as lone surrogates) so they are reported per row
    text = path.read_bytes().decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")
    rows, problems = (_parse_csv if kind == "csv" else _parse_jsonl)(text)
    if not rows and not problems:
        raise DataError(f"{path}: holds no rows")
    if problems:
        if not skip_bad_rows:
            raise TripletDataError(path, problems, len(rows) + len(problems))
        for p in problems:
            log.warning("%s: skipped %s", path, p)
        log.warning("%s: skipped %d bad row(s); %d kept", path, len(problems), len(rows))
        if not rows:
            raise TripletDataError(path, problems, len(problems))
    return rows


def _check_fields(values: dict[str, object], want_neg: bool) -> tuple[Triplet | None, str | None]:
    wanted = FIELDS if want_neg else FIELDS[:2]
    for name in wanted:
        value = values.get(name)
        if value is None:
            return None, f"{name} is missing"
        if not isinstance(value, str):
            return None, f"{name} should be a string, got {type(value).__name__}"
        if not value.strip():
            return None, f"{name} is empty"
        if any("\udc80" <= ch <= "\udcff" for ch in value):
            return None, f"{name} is not valid UTF-8"
        if "\n" in value or "\r" in value:
            return None, f"{name} spans several lines (an unclosed quote?)"
        if "\x00" in value:
            return None, f"{name} holds a NUL byte"
    neg = values.get("hard_neg") if want_neg else None
    return Triplet(str(values["sent0"]), str(values["sent1"]), neg if isinstance(neg, str) else None), None


def _parse_csv(text: str) -> tuple[list[Triplet], list[BadRow]]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[Triplet] = []
    problems: list[BadRow] = []
    try:
        header = next(reader)
    except StopIteration:
        return rows, problems
    except csv.Error as exc:
        return rows, [BadRow(1, f"unreadable header ({exc})")]
    header = [h.strip() for h in header]
    missing = [f for f in FIELDS[:2] if f not in header]
    if missing:
        return rows, [BadRow(1, f"the header {header} lacks {missing}; it should be {','.join(FIELDS)}")]
    want_neg = "hard_neg" in header
    index = {name: header.index(name) for name in FIELDS if name in header}
    start = reader.line_num + 1
    while True:
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:  # broken quoting; the reader goes on at the next line
            problems.append(BadRow(start, f"broken CSV quoting ({exc})"))
            start = reader.line_num + 1
            continue
        line, start = start, reader.line_num + 1
        if not record or (len(record) == 1 and not record[0].strip()):
            continue  # a blank line is not a row
        if len(record) != len(header):
            problems.append(BadRow(line, f"expected {len(header)} fields ({','.join(header)}), got {len(record)}"))
            continue
        triplet, problem = _check_fields({name: record[i] for name, i in index.items()}, want_neg)
        if problem:
            problems.append(BadRow(line, problem))
        else:
            rows.append(triplet)  # type: ignore[arg-type]
    return rows, problems


def _parse_jsonl(text: str) -> tuple[list[Triplet], list[BadRow]]:
    rows: list[Triplet] = []
    problems: list[BadRow] = []
    want_neg: bool | None = None
    for n, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(BadRow(n, f"not valid JSON ({exc.msg})"))
            continue
        if not isinstance(record, dict):
            problems.append(BadRow(n, f"expected an object with {', '.join(FIELDS)}, got {type(record).__name__}"))
            continue
        if want_neg is None:
            want_neg = "hard_neg" in record  # the first object decides: triplets or pairs
        elif want_neg != ("hard_neg" in record):
            had = "have" if want_neg else "lack"
            problems.append(BadRow(n, f"hard_neg is {'missing' if want_neg else 'present'}, but earlier rows {had} it"))
            continue
        triplet, problem = _check_fields(record, want_neg)
        if problem:
            problems.append(BadRow(n, problem))
        else:
            rows.append(triplet)  # type: ignore[arg-type]
    return rows, problems


def write_triplets(path: str | Path, triplets: list[Triplet]) -> None:
    """Write ``.csv`` (``sent0,sent1,hard_neg`` header) or ``.jsonl``, chosen by the suffix."""
    path = Path(path)
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"{path}: unknown triplet file type {path.suffix!r}; valid: {sorted(SUFFIXES)}")
    with_neg = all(t.negative is not None for t in triplets)
    names = FIELDS if with_neg else FIELDS[:2]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        if kind == "csv":
            writer = csv.writer(f)
            writer.writerow(names)
            for t in triplets:
                writer.writerow([t.anchor, t.positive, t.negative][: len(names)])
        else:
            for t in triplets:
                record = dict(zip(names, [t.anchor, t.positive, t.negative]))
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
