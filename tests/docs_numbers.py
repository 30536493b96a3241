"""Every number the docs present as a measurement, checked against the record it cites.

The convention (docs/development.md, "Numbers in the docs"):

- A document is split into blocks: a paragraph, a list item, a whole table, a heading, a fenced code block.
- A block's **sources** are the records cited in its section (between two headings): every path of an
  existing ``.json``, ``.jsonl`` or ``.csv`` file written anywhere in the section (text, inline code, a
  command in a code block), plus the files named by a ``<!-- record: PATH ... -->`` comment on the block
  (any file of the repository: a record, or a source file whose settings the block quotes).
- A **measurement** is a number outside code (fenced blocks and inline code are commands and examples)
  that has a fractional part (``67.04``, ``3.8e-05``), a unit (``1546 s``, ``37 min``, ``93 MB``,
  ``26.7 sentences/s``, ``2.04x``, ``-5%``, ``24.2k``) or a ``±``. Version numbers (``torch 2.13``),
  identifiers (``opt-1.3b``, ``STS12``), dates and exponents without a fraction (tolerances such as
  ``1e-4``) are not measurements.
- A measurement must equal a value of its sources, rounded to the digits it is written with (a record's
  seconds may be written in ms, min or h; bytes or KiB in MB/GB; fractions as percent; totals of a field
  over a record's members), or, for a signed number, a ratio (``x``) or a percentage, the difference,
  ratio or relative change of two values that other numbers of the same block matched (in a table: of its
  row or column), or, in a table, the mean of its row. In a table, a column's numbers (two decimals or
  more) must come from one field of the records and a row's from one record.
- Otherwise it fails, unless its block is marked ``<!-- published: SOURCE -->`` (a number from elsewhere;
  when SOURCE is a document we keep a copy of in ``tests/data/shared/``, such as ``method.md``, the number
  must appear in that copy) or ``<!-- example -->`` (an illustration or a computed example, not a
  measurement). A marker on a line of its own applies to the next block; inside a block, to that block.

``python tests/docs_numbers.py [FILE ...]`` prints every unchecked number with its line.
"""

from __future__ import annotations

import bisect
import csv
import io
import json
import math
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_COPIES = ROOT / "tests" / "data" / "shared"
RECORD_DIRS = ("docs/results/", "docs/methods/", "docs/scaling/", "benchmarks/results/")


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


# ------------------------------------------------------------------------------------------- blocks
@dataclass
class Block:
    path: Path
    start: int  # first line (1-based)
    lines: list[str]
    kind: str  # "text", "table", "code", "heading"
    section: int
    markers: list[str] = field(default_factory=list)
    parent: int = -1  # for a heading: the section it is nested in

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


_COMMENT = re.compile(r"<!--(.*?)-->", re.S)
_CODE_SPAN = re.compile(r"`[^`]*`")
_LIST_ITEM = re.compile(r"^\s{0,3}(?:[-*+]|\d+[.)])\s")
_FENCE = re.compile(r"^\s*(```|~~~)")


def parse_blocks(path: Path, text: str | None = None) -> list[Block]:
    """The blocks of a Markdown file, each with its section number and its markers."""
    lines = (path.read_text(encoding="utf-8") if text is None else text).splitlines()
    blocks: list[Block] = []
    pending: list[str] = []  # markers on lines of their own, for the next block
    section = 0
    levels: list[tuple[int, int]] = [(0, 0)]  # (heading level, section) of the open headings
    cur: Block | None = None
    fence: str | None = None

    def close() -> None:
        nonlocal cur
        if cur is not None:
            cur.markers += pending
            pending.clear()
            blocks.append(cur)
        cur = None

    for i, line in enumerate(lines, start=1):
        if fence is not None:
            cur.lines.append(line)  # type: ignore[union-attr]
            if line.strip().startswith(fence):
                fence = None
                close()
            continue
        m = _FENCE.match(line)
        if m:
            close()
            fence = m.group(1)
            cur = Block(path, i, [line], "code", section)
            continue
        stripped = line.strip()
        if not stripped:
            close()
            continue
        if _COMMENT.fullmatch(stripped):
            close()
            pending.extend(c.strip() for c in _COMMENT.findall(stripped))
            continue
        markers = [c.strip() for c in _COMMENT.findall(_CODE_SPAN.sub(" ", line))]  # not those quoted in code
        if stripped.startswith("#"):
            close()
            section += 1
            level = len(stripped) - len(stripped.lstrip("#"))
            while levels[-1][0] >= level:
                levels.pop()
            # a document's title (level 1) passes nothing down: its opening cites the records of the opening only
            cur = Block(path, i, [line], "heading", section, parent=levels[-1][1] if levels[-1][0] > 1 else -1)
            levels.append((level, section))
            close()
            continue
        kind = "table" if stripped.startswith("|") else "text"
        if cur is not None and (cur.kind != kind or (kind == "text" and _LIST_ITEM.match(line))):
            close()
        if cur is None:
            cur = Block(path, i, [], kind, section)
        cur.lines.append(line)
        cur.markers += markers
    close()
    return blocks


# ------------------------------------------------------------------------------------------- citations
_PATH = re.compile(r"(?<![\w/.-])((?:\.{1,2}/)?(?:[\w.-]+/)*[\w.-]+\.(?:jsonl|json|csv))(?![\w/-])")


_DIR = re.compile(r"(?<![\w/.-])((?:docs/results|docs/methods|docs/scaling|benchmarks/results)(?:/[\w.-]+)+)/?(?![\w/.-])")
RECORD_SUFFIXES = (".json", ".jsonl", ".csv")


def _records_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix in RECORD_SUFFIXES and p.is_file())


def cited_paths(text: str, doc: Path) -> tuple[list[Path], list[str]]:
    """Existing record files named in ``text`` (a folder below a record folder, such as ``docs/scaling/cells``,
    names every record in it), and record paths named that do not exist."""
    found, missing = [], []
    for m in _PATH.finditer(text):
        name = m.group(1)
        for base in (ROOT, doc.parent):
            p = (base / name).resolve()
            if p.is_file():
                found.append(p)
                break
        else:
            if name.startswith(RECORD_DIRS):
                missing.append(name)
    for m in _DIR.finditer(text):
        folder = ROOT / m.group(1)
        if folder.is_dir():
            found += _records_in(folder)
    return found, missing


# ------------------------------------------------------------------------------------------- numbers
@dataclass
class Number:
    text: str
    value: float
    tol: float  # half a unit of the last digit written
    unit: str
    signed: bool
    line: int
    approx: bool = False
    measured: bool = True  # False: a plain integer (a count, a setting), matched only to serve as an operand
    column: int | None = None  # in a table: the column, and the number's place in its cell
    slot: int = 0

    def __str__(self) -> str:
        return self.text


_UNIT_WORDS = {
    "s": "s", "sec": "s", "second": "s", "seconds": "s", "ms": "ms", "µs": "us", "us": "us",
    "min": "min", "minute": "min", "minutes": "min", "h": "h", "hour": "h", "hours": "h",
    "kb": "KB", "kib": "KB", "mb": "MB", "mib": "MB", "gb": "GB", "gib": "GB", "tb": "TB",
}  # fmt: skip
_RATE = re.compile(r"^[A-Za-z-]+/s$|^(?:G|T)FLOP/s$|^µs/\w+$|^ms/\w+$")
_VERSIONED = {
    "torch", "transformers", "peft", "bitsandbytes", "cuda", "python", "llama-cpp-python", "onnxruntime",
    "onnx", "openvino", "sentence-transformers", "mteb", "numpy", "scipy", "scikit-learn", "ray", "pyarrow",
    "fastapi", "uvicorn", "pydantic", "wordnet", "version", "versions", "v", "schema", "opset", "pytorch",
    "arxiv", "optimum", "optimum-onnx", "optimum-intel", "huggingface-hub", "gguf", "accelerate", "tokenizers",
    "safetensors", "matplotlib", "prompteol", "section", "sections", "issue", "llama.cpp", "sqlite", "release",
    "ubuntu", "debian", "gcc", "cmake", "http", "tls", "openai", "oauth", "python3",
}  # fmt: skip
_NUM = re.compile(
    r"(?P<pre>^|[\s(\[|:;,=/>]|\*\*|\*)"
    r"(?P<approx>~|≈)?(?P<sign>[+\-−±]|\+-)?"
    r"(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)(?P<exp>e[+\-]?\d+)?"
    r"(?:(?P<dash>-|–|\.\.)(?P<num2>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?))?"
    r"(?P<suffix>x|%|k|M|B|ms|s)?"
    r"(?=$|[\s)\]|:;,.!?*/'\"]|\*\*)(?![.:]\d)"  # not an address or version: 127.0.0.1, 2.13.0, 10:30
)


def _clean(text: str) -> str:
    """Prose without code spans, link targets, images, comments and emphasis."""
    text = _COMMENT.sub(" ", text)
    text = re.sub(r"`[^`]*`", " ", text)
    text = re.sub(r"!\[[^\]]*\]\([^)]*\)", " ", text)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = text.replace("\\|", "¦").replace("**", " ").replace("&nbsp;", " ")
    return text


def _parse(num: str) -> tuple[float, float]:
    clean = num.replace(",", "")
    decimals = len(clean.split(".")[1]) if "." in clean else 0
    return float(clean), 0.5 * 10.0**-decimals


def _words_before(text: str, pos: int, n: int = 2) -> list[str]:
    return re.findall(r"[\w.+-]+", text[max(0, pos - 60) : pos])[-n:]


def numbers(block: Block) -> Iterator[Number]:
    """The numbers of a block outside code: the measurements, and plain integers of 10 or more (counts and
    settings, never failed, used only as operands of derived numbers)."""
    if block.kind in ("code", "heading"):
        return
    for offset, raw in enumerate(block.lines):
        text = _clean(raw)
        found: list[tuple[re.Match, str]] = []
        for m in _NUM.finditer(text):
            num, exp, suffix, sign = m["num"], m["exp"], m["suffix"] or "", m["sign"] or ""
            after = text[m.end() :]
            if not after.strip() and offset + 1 < len(block.lines):  # "23.7" at a line's end, "min" on the next
                after = " " + _clean(block.lines[offset + 1])
            nxt = re.match(r"\s*([^\s,;()|]+)", after)
            next_word = nxt.group(1).rstrip(".:") if nxt else ""
            before = [w.lower() for w in _words_before(text, m.start() + len(m["pre"]))]
            if before and before[-1] in ("<", ">", "<=", ">=", "==", "~=") and len(before) > 1:
                before = before[:-1]
            if before and before[-1] in _VERSIONED:
                continue
            if exp and "." not in num:
                continue  # 1e-4: a tolerance or a setting, not a measurement
            if text[m.end() : m.end() + 1] == "^" or text[max(0, m.start() - 1) : m.start()] == "^":
                continue
            unit = ""
            if suffix in ("x", "%", "k", "M", "B"):
                unit = suffix
            elif suffix:
                unit = _UNIT_WORDS[suffix]
            elif next_word.lower() in _UNIT_WORDS:
                unit = _UNIT_WORDS[next_word.lower()]
            elif _RATE.match(next_word):
                unit = "rate:" + next_word
            found.append((m, unit))
        # "1.6 / 3.6 s", "5.4 / 5.1 sentences/s": a number followed by "/" and a number takes that one's unit
        for i in range(len(found) - 2, -1, -1):
            m, unit = found[i]
            nm, nunit = found[i + 1]
            if not unit and nunit and re.fullmatch(r"\s*/\s*", text[m.end() : nm.start() + len(nm["pre"])]):
                found[i] = (m, nunit)
        slots: dict[int, int] = {}
        for m, unit in found:
            num, exp, sign = m["num"], m["exp"], m["sign"] or ""
            column = text[: m.start()].count("|") if block.kind == "table" else None
            slot = slots.get(column or 0, 0)
            slots[column or 0] = slot + 1
            measured = "." in num or bool(unit) or sign in ("±", "+-")
            parts = [num] + ([m["num2"]] if m["num2"] else [])
            for k, part in enumerate(parts):
                value, tol = _parse(part)
                if not measured and value < 10:
                    continue
                if exp:
                    value, tol = value * 10.0 ** int(exp[1:]), tol * 10.0 ** int(exp[1:])
                signed = bool(sign) and k == 0 and sign not in ("±", "+-")
                if signed and sign in ("-", "−"):
                    value = -value
                text_shown = m.group(0)[len(m["pre"]) :]
                yield Number(text_shown, value, tol, unit, signed, block.start + offset, bool(m["approx"]), measured,
                             column, slot)  # fmt: skip


# ------------------------------------------------------------------------------------------- sources
_ANY_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?:e[+\-]?\d+)?")


def _numbers_in_text(text: str) -> Iterator[float]:
    for m in _ANY_NUMBER.finditer(text):
        try:
            yield float(m.group(0))
        except ValueError:  # pragma: no cover
            continue


def _flatten(data, path: tuple = ()) -> Iterator[tuple[tuple, float]]:
    """``(path, number)`` for every number of a JSON value (numbers written inside strings too)."""
    if isinstance(data, bool) or data is None:
        return
    if isinstance(data, (int, float)):
        if math.isfinite(data):
            yield path, float(data)
    elif isinstance(data, str):
        for v in _numbers_in_text(data):
            yield path + ("#text",), v
    elif isinstance(data, dict):
        for k, v in data.items():
            yield from _flatten(v, path + (str(k),))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from _flatten(v, path + (i,))


Match = tuple[float, str]  # a value (in the doc's scale) and the key path it came from
_SEP = "\x1f"  # between the components of a key path (keys may hold dots: "qwen2.5-coder-0.5b")


def _key(path: tuple) -> str:
    return _SEP.join(str(c) for c in path)


def _entries(data) -> list[tuple[float, str]]:
    """``(number, key path)`` of a record, plus the totals over siblings: for every mapping or list, the sum
    of the same field over its members (``sum(tasks.*.sentences)``), as docs quote them."""
    flat = list(_flatten(data))
    entries = [(v, _key(p)) for p, v in flat]
    sums: dict[tuple, list[float]] = {}
    for path, v in flat:
        if path and path[-1] == "#text":
            continue
        for i in range(len(path) - 1):
            sums.setdefault(path[:i] + ("*",) + path[i + 1 :], []).append(v)
    entries += [(sum(vs), f"sum({_key(k)})") for k, vs in sums.items() if len(vs) > 1]
    return entries


@dataclass(frozen=True)
class Pool:
    """The numbers of some sources, sorted, each with the key path it came from."""

    values: tuple[float, ...] = ()
    keys: tuple[str, ...] = ()

    @staticmethod
    def of(entries: Iterable[tuple[float, str]]) -> Pool:
        ordered = sorted(set(entries))
        return Pool(tuple(v for v, _ in ordered), tuple(k for _, k in ordered))


@cache
def source_pool(path: Path) -> Pool:
    """Every number a file holds: the leaves of a JSON/JSONL record (numbers inside strings too), the cells
    of a CSV (keyed by their column), the numbers written in any other text file."""
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix == ".json":
        entries = _entries(json.loads(text))
    elif path.suffix == ".jsonl":
        entries = [e for line in text.splitlines() if line.strip() for e in _entries(json.loads(line))]
    elif path.suffix == ".csv":
        rows = list(csv.reader(io.StringIO(text)))
        header = rows[0] if rows else []
        entries = [(v, header[i] if i < len(header) else str(i)) for row in rows[1:] for i, cell in enumerate(row)
                   for v in _numbers_in_text(cell)]  # fmt: skip
    else:
        entries = [(v, "text") for v in _numbers_in_text(text)]
    return Pool.of(entries)


@cache
def merged_pool(paths: tuple[Path, ...]) -> Pool:
    """The numbers of several files, each key path led by its file's name."""
    return Pool.of((v, f"{p.name}{_SEP}{k}") for p in paths for v, k in zip(source_pool(p).values, source_pool(p).keys))


_SCALES = {
    "": (1.0, 100.0), "%": (1.0, 100.0), "x": (1.0,),
    "s": (1.0, 1e-3), "ms": (1e3, 1.0), "us": (1e6, 1.0), "min": (1 / 60,), "h": (1 / 3600,),
    "KB": (1e-3, 1 / 1024, 1.0), "MB": (1e-6, 2.0**-20, 1 / 1024, 1.0),
    "GB": (1e-9, 2.0**-30, 2.0**-20, 1 / 1024, 1e-3, 1.0), "TB": (1e-12, 2.0**-40, 1.0),
    "k": (1e-3,), "M": (1e-6,), "B": (1e-9,),
}  # fmt: skip


def _scales(unit: str) -> tuple[float, ...]:
    if unit.startswith("rate:"):
        return (1.0, 1e-9, 1e-12) if "FLOP" in unit else (1.0,)
    return _SCALES.get(unit, (1.0,))


_TIME = ("s", "ms", "us", "min", "h")


@cache
def _reciprocals(pool: Pool) -> Pool:
    return Pool.of((1 / v, f"1/{k}") for v, k in zip(pool.values, pool.keys) if v > 0)


def match(n: Number, pool: Pool) -> list[Match]:
    """The ``(value in n's scale, key path)`` of every number of ``pool`` that ``n`` shows, rounded as written
    (after the unit's scale: a record's seconds shown in min, bytes in MB, a fraction in percent; a time per
    item may be the reciprocal of a rate)."""
    pools = [pool] + ([_reciprocals(pool)] if n.unit in _TIME else [])
    found: list[Match] = []
    for p in pools:
        for scale in _scales(n.unit):
            for sign in (1, -1) if n.signed else (1,):
                shown = n.value * sign
                width = ((max(n.tol, 0.1 * abs(shown)) if n.approx else n.tol) * (1 + 1e-9) + 1e-12) / scale
                i = bisect.bisect_left(p.values, shown / scale - width)
                while i < len(p.values) and p.values[i] <= shown / scale + width:
                    found.append((p.values[i] * scale * sign, p.keys[i]))
                    i += 1
    return found


def _patterns(key: str) -> set[str]:
    """A key path and its forms with one component replaced by ``*`` (a table column's cells share one)."""
    parts = key.split(_SEP)
    return {key} | {_SEP.join(parts[:i] + ["*"] + parts[i + 1 :]) for i in range(len(parts)) if len(parts) > 1}


def column_pattern(cells: list[tuple[Number, list[Match]]], own: frozenset[str] = frozenset()) -> tuple[str | None, dict[int, set[str]]]:
    """The key path most cells of one table column share (``*.tasks.STS12.score``: that field in every row's
    record; ``run.json.results.*.sentences_per_s``: every configuration's), and each cell's row identity:
    what stands at the pattern's ``*`` in the keys it matches (the record, the configuration). ``own``: the
    names of the records the table's own section cites (under a heading naming one record, its table is that
    record's even where a record cited further up holds the same rounded values)."""
    units = [n.unit for n, _ in cells]
    unit = max(set(units), key=units.count) if units else ""
    cells = [(n, found) for n, found in cells if n.unit == unit]  # a cell in another unit is another quantity
    # numbers written inside a record's strings (a command, a date) are weak evidence: no column pattern
    cells = [(n, [f for f in found if "#text" not in f[1]]) for n, found in cells]
    cells = [(n, found) for n, found in cells if found]
    if len(cells) < 3:
        return None, {}
    counts: dict[str, int] = {}
    shown: dict[str, set[float]] = {}
    for n, found in cells:
        for pattern in set().union(*(_patterns(k) for _, k in found)):
            counts[pattern] = counts.get(pattern, 0) + 1
            shown.setdefault(pattern, set()).add(n.value)
    # a pattern two thirds of the cells share, with at least two different values among them (cells that all
    # show 1.0000 match any key holding 1.0), naming a field (not only a file: "run.json.*")
    common = [k for k, c in counts.items() if len(shown[k]) >= 2 and 3 * c >= 2 * len(cells)
              and len([c for c in k.split(_SEP)[1:] if c != "*"]) >= 1]  # fmt: skip
    if not common:
        return None, {}  # no common path: a column of mixed numbers

    def varied(pattern: str) -> int:
        """How many different things stand at the pattern's ``*`` over the cells: a row identity varies from
        row to row (``results.*.cos_mean``), a field name does not (``results.one-config.*``, which cells
        all showing 1.0000 and 0.9999 may match by chance)."""
        parts = pattern.split(_SEP)
        if "*" not in parts:
            return 0
        at = parts.index("*")
        return len({k.split(_SEP)[at] for _, found in cells for _, k in found if pattern in _patterns(k)})

    # the widest, then the one whose star varies most, then the most specific
    best = max(common, key=lambda k: (counts[k], k.split(_SEP)[0] in own, varied(k), -k.count("*"), k))
    star = best.split(_SEP).index("*") if "*" in best.split(_SEP) else None
    identities: dict[int, set[str]] = {}
    for n, found in cells:
        keys = [k for _, k in found if best in _patterns(k)]
        identities[id(n)] = {k.split(_SEP)[star] for k in keys} if star is not None else {""}
        if not keys:
            identities[id(n)] = set()
    return best, identities


def row_outliers(cells: list[tuple[Number, set[str]]]) -> list[tuple[Number, str]]:
    """The cells of one table row whose row identity differs from the one the row's other cells agree on
    (each row's numbers come from one record, or one configuration of a record)."""
    counts: dict[str, int] = {}
    for _, ids in cells:
        for i in ids:
            counts[i] = counts.get(i, 0) + 1
    if not counts:
        return []
    consensus = max(counts, key=lambda i: (counts[i], i))
    if counts[consensus] < 2 or counts[consensus] < len(cells) - 1:
        return []
    return [(n, consensus) for n, ids in cells if consensus not in ids]


def derived(n: Number, operands: list[tuple[Number, float]], row: Sequence[float] = ()) -> bool:
    """A number computed from values that other numbers of the same block matched: a signed number as a
    difference, a ratio (``x``) as a quotient, a percentage as a quotient or a relative change, an
    approximate number (``~``, "about") as any of these, a table cell as the mean of the first numbers of its
    row's other cells (an average column). In a table the first value is in the number's row or column and
    the second in the number's row or column or in the first one's column."""
    candidates: list[float] = []
    if len(row) > 1:
        candidates.append(sum(row) / len(row))

    def near(m: Number, line: int, column: int | None) -> bool:
        return n.column is None or m.line == line or m.column == column

    for ma, a in operands:
        if not near(ma, n.line, n.column):
            continue
        for mb, b in operands:
            if ma is mb and not (n.unit in ("x", "%") and a == b and a):  # a quantity against itself: 1.00x, 100%
                continue
            if not (near(mb, n.line, n.column) or mb.column == ma.column):
                continue
            if n.signed or n.approx:
                candidates += [a - b]
            if b and (n.unit == "x" or n.approx):
                candidates.append(a / b)
            if b and (n.unit == "%" or n.approx):
                candidates += [100 * (a / b - 1), 100 * a / b, 100 * (1 - a / b)]
    value = n.value
    width = (max(n.tol, 0.1 * abs(value)) if n.approx else n.tol) * (1 + 1e-9) + 1e-12
    scales = _scales(n.unit) if n.approx else (1.0,)
    return any(abs(c * f - value) <= width or (not n.signed and abs(abs(c * f) - value) <= width)
               for c in candidates for f in scales)  # fmt: skip


# ------------------------------------------------------------------------------------------- checking
@dataclass
class Problem:
    path: Path
    line: int
    number: str
    reason: str

    def __str__(self) -> str:
        return f"{_rel(self.path)}:{self.line}: {self.number}: {self.reason}"


def _marker(markers: Iterable[str], name: str) -> str | None:
    for m in markers:
        key, _, rest = m.partition(":")
        if key.strip().lower() == name:
            return rest.strip()
    return None


def _is_example(markers: Iterable[str]) -> bool:
    return any(m.strip().lower() == "example" for m in markers)


def _shared_copy(source: str) -> Path | None:
    first = source.split()[0].rstrip(",;") if source.split() else ""
    p = SHARED_COPIES / Path(first).name
    return p if first and p.is_file() else None


def check_document(path: Path, text: str | None = None) -> list[Problem]:
    blocks = parse_blocks(path, text)
    problems: list[Problem] = []
    by_section: dict[int, list[Path]] = {}
    parents = {b.section: b.parent for b in blocks if b.kind == "heading"}
    for b in blocks:
        found, missing = cited_paths(b.text, path)
        by_section.setdefault(b.section, []).extend(found)
        if not _is_example(b.markers):  # an example may name a record it does not cite
            for name in missing:
                problems.append(Problem(path, b.start, name, "cites a record that does not exist"))
    for b in blocks:
        sources, sec = [], b.section
        while sec >= 0:  # the section's citations and those of the sections it is nested in
            sources += by_section.get(sec, [])
            sec = parents.get(sec, -1) if sec else -1
        sources = list(dict.fromkeys(sources))
        extra = _marker(b.markers, "record")
        if extra is not None:
            for name in extra.split():
                p = (ROOT / name).resolve()
                if p.is_dir():
                    sources += _records_in(p)
                elif p.is_file():
                    sources.append(p)
                else:
                    problems.append(Problem(path, b.start, name, "record: names a file that does not exist"))
        published = _marker(b.markers, "published")
        if published == "":
            problems.append(Problem(path, b.start, "published:", "a published marker must name its source"))
        example = _is_example(b.markers)
        pool = merged_pool(tuple(dict.fromkeys(sources)))
        copy = _shared_copy(published) if published else None
        published_pool = source_pool(copy) if copy else Pool()
        matched: list[tuple[Number, list[Match]]] = []
        unmatched: list[Number] = []
        for n in numbers(b):
            found = match(n, pool) or match(n, published_pool)
            if found:
                matched.append((n, found))
            else:
                unmatched.append(n)
        outliers: dict[int, str] = {}
        if b.kind == "table":  # each column's numbers come from one key path, each row's from one record
            groups: dict[tuple, list] = {}
            for n, found in matched:
                if n.measured and n.tol <= 0.005:  # two decimals or more: where chance matches are likely
                    groups.setdefault((n.column, n.slot), []).append((n, found))
            rows: dict[int, list[tuple[Number, set[str]]]] = {}
            for cells in groups.values():
                best, identities = column_pattern(cells, frozenset(p.name for p in by_section.get(b.section, [])))
                if best is None:
                    continue
                at = best.replace(_SEP, ".")
                for n, _ in cells:
                    if id(n) in identities and not identities[id(n)]:
                        outliers[id(n)] = f"none at {at}, where the other numbers of its column are"
                    elif id(n) in identities and best.count("*"):
                        rows.setdefault(n.line, []).append((n, identities[id(n)]))
            for row in rows.values():
                for n, consensus in row_outliers(row):
                    outliers[id(n)] = f"none of {consensus}, where the other numbers of its row are"
        # every value a number matched (rounded as written, several records may hold one): a difference or ratio
        # of the block is checked against each pair, not only against the smallest value each number matched
        operands = [(n, v) for n, found in matched if id(n) not in outliers for v in dict.fromkeys(f[0] for f in found)]
        for n, _ in matched:
            if id(n) in outliers and not derived(n, operands):
                problems.append(Problem(path, n.line, n.text, f"matches values of its records, but {outliers[id(n)]}"))
        for n in unmatched:
            if not n.measured:
                continue
            row = [f[0][0] for m, f in matched  # the first number of each other cell of the row, in n's unit
                   if b.kind == "table" and m.line == n.line and m.measured and m.slot == 0 and not m.signed
                   and m.unit == n.unit and m.column != n.column]  # fmt: skip
            if derived(n, operands, row):
                continue
            if example or (published and not copy):
                continue
            if published and copy:
                reason = f"not in its records nor in {_rel(copy)}"
            elif sources:
                names = ", ".join(_rel(s) for s in sources[:4]) + (" ..." if len(sources) > 4 else "")
                reason = f"matches no value of {names}"
            else:
                reason = "no record cited in its section, and not marked published or example"
            problems.append(Problem(path, n.line, n.text, reason))
    return problems


def hand_edits(path: Path) -> tuple[list[str], list[str]]:
    """Change the last digit of each measurement that passes (one at a time, +1), check again: the edits made,
    and those the check did not catch (``file:line: old -> new``)."""
    text = path.read_text(encoding="utf-8")
    base = {str(p) for p in check_document(path, text)}
    lines = text.splitlines()
    made: list[str] = []
    missed: list[str] = []
    for block in parse_blocks(path, text):
        for n in numbers(block):
            if not n.measured or any(f":{n.line}: {n.text}:" in b for b in base):
                continue
            m = re.search(r"\d(?=\D*$)", n.text)
            line = lines[n.line - 1]
            at = line.find(n.text)
            if m is None or at < 0:
                continue
            edited = n.text[: m.start()] + str((int(m.group(0)) + 1) % 10) + n.text[m.end() :]
            changed = lines.copy()
            changed[n.line - 1] = line[:at] + edited + line[at + len(n.text) :]
            made.append(f"{_rel(path)}:{n.line}: {n.text} -> {edited}")
            if {str(p) for p in check_document(path, "\n".join(changed))} <= base:
                missed.append(made[-1])
    return made, missed


def main(argv: list[str]) -> int:
    paths = [Path(a).resolve() for a in argv] or documents()
    count = 0
    for p in paths:
        for problem in check_document(p):
            print(problem)
            count += 1
    print(f"{count} unchecked number(s)", file=sys.stderr)
    return 1 if count else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
