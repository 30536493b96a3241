"""Find, verify and read a SentEval data root, exactly as SentEval reads it.

The data root is the folder that holds ``downstream/`` (SimCSE's ``senteval.tar`` layout).
It is taken from the ``data_dir`` argument, else the ``PROMPTEOL_DATA`` environment
variable, else a :class:`~prompteol.errors.DataError` says how to name one.

Reading follows SentEval line by line (see docs/evaluation.md):

- STS12-16: UTF-8, ``str.splitlines``, tab-separated pairs; pairs whose gold line is empty
  are dropped (STS15 answers-forums holds a 0x85 byte inside UTF-8 characters: decoding it
  as latin-1 would split a line there);
- STS-B, SICK, SST-2, MRPC: UTF-8, iterated line by line (universal newlines, so SICK's CRLF
  endings go), ``strip`` then split on tabs; SICK and MRPC drop their header line;
- MR, CR, SUBJ, MPQA: latin-1, ``splitlines`` (blank lines are kept as empty sentences);
  TREC: latin-1, ``COARSE:fine question``.

Every sentence is then presented as SentEval's batcher presents it: ``' '.join(s.split())``.
Template and text normalisation are the encoder's business, not the harness's.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np

from ..errors import DataError
from .tasks import MANIFEST, STS_SPLITS, TASKS, Part, Task, resolve_tasks

__all__ = [
    "ENV_DATA",
    "DOWNLOAD_HINT",
    "LOCAL_HINT",
    "StsPairs",
    "Examples",
    "FileStatus",
    "senteval_text",
    "resolve_data_dir",
    "check_data",
    "verify_data",
    "load_sts_pairs",
    "load_task_data",
    "sha256_file",
]

ENV_DATA = "PROMPTEOL_DATA"
LOCAL_HINT = (
    "pass --data-dir DIR (Python: data_dir=DIR) or set PROMPTEOL_DATA=DIR, where DIR is a SentEval data root "
    "(the folder that holds downstream/)"
)
DOWNLOAD_HINT = LOCAL_HINT + "; `prompteol data download --dest DIR` fetches one when online"
_TREC_CLASSES = {"ABBR": 0, "DESC": 1, "ENTY": 2, "HUM": 3, "LOC": 4, "NUM": 5}  # SentEval's label ids
_CHUNK = 1 << 20


def senteval_text(sentence: str) -> str:
    """A sentence as SentEval's batcher passes it on: whitespace tokens joined by single spaces."""
    return " ".join(sentence.split())


# ---------------------------------------------------------------------------------------- data root
def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data root: ``data_dir``, else ``$PROMPTEOL_DATA``; it must contain ``downstream/``."""
    source = "data_dir"
    if data_dir is None or str(data_dir) == "":
        env = os.environ.get(ENV_DATA)
        if not env:
            raise DataError(f"no SentEval data root given: {DOWNLOAD_HINT}")
        data_dir, source = env, f"${ENV_DATA}"
    root = Path(data_dir).expanduser()
    if not (root / "downstream").is_dir():
        hint = ""
        if root.name == "downstream":
            hint = f" (that is the downstream/ folder itself; use its parent {root.parent})"
        else:
            for sub in ("senteval", "data", "SentEval/data"):
                if (root / sub / "downstream").is_dir():
                    hint = f" (did you mean {root / sub}?)"
                    break
        raise DataError(f"{source}={str(root)!r} is not a SentEval data root: it has no downstream/ folder{hint}; "
                        f"{DOWNLOAD_HINT}")  # fmt: skip
    return root


_SHA_MEMO: dict[tuple[str, int, int], str] = {}


def sha256_file(path: Path) -> str:
    """sha256 of a file, memoised per (path, size, mtime) within the process."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_MEMO:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(_CHUNK), b""):
                h.update(block)
        _SHA_MEMO[key] = h.hexdigest()
    return _SHA_MEMO[key]


@dataclass(frozen=True)
class FileStatus:
    """The state of one data file: ``ok``, ``missing`` or ``bad checksum``."""

    path: str
    status: str
    expected: str
    actual: str | None
    tasks: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _files_of(tasks: Sequence[Task]) -> dict[str, list[str]]:
    files: dict[str, list[str]] = {}
    for t in tasks:
        for f in t.files:
            files.setdefault(f.path, []).append(t.name)
    return files


def check_data(data_dir: str | os.PathLike | None = None, tasks: str | Iterable = "all") -> list[FileStatus]:
    """The state of every file the ``tasks`` read (no exception for bad files; see :func:`verify_data`)."""
    root = resolve_data_dir(data_dir)
    files = _files_of(resolve_tasks(tasks))
    return [
        FileStatus(s.path, s.status, s.expected, s.actual, tuple(files[s.path])) for s in _check_paths(root, list(files))
    ]


def _check_paths(root: Path, rels: Sequence[str]) -> list[FileStatus]:
    out = []
    for rel in rels:
        expected = MANIFEST[rel].sha256
        path = root / rel
        actual = sha256_file(path) if path.is_file() else None
        status = "missing" if actual is None else ("ok" if actual == expected else "bad checksum")
        out.append(FileStatus(rel, status, expected, actual, ()))
    return out


def _raise_for(statuses: Sequence[FileStatus], root: Path) -> None:
    bad = [s for s in statuses if not s.ok]
    if not bad:
        return
    lines = [
        f"  {s.path}: {s.status} (expected sha256 {s.expected}" + (f", got {s.actual})" if s.actual else ")")
        for s in bad
    ]
    raise DataError(
        f"the SentEval data root {root} has {len(bad)} missing or changed file(s):\n" + "\n".join(lines) +
        f"\nThese tasks need the exact SentEval files (SimCSE's senteval.tar); {DOWNLOAD_HINT}"
    )  # fmt: skip


def verify_data(data_dir: str | os.PathLike | None = None, tasks: str | Iterable = "all") -> dict[str, str]:
    """Check that every file of ``tasks`` exists with its sha256; return ``{path: sha256}``.

    Raises :class:`~prompteol.errors.DataError` naming each missing or changed file and its
    expected checksum. Cheap (about 15 MB hashed once per process): call it before loading a model.
    """
    root = resolve_data_dir(data_dir)
    statuses = check_data(root, tasks)
    _raise_for(statuses, root)
    return {s.path: s.expected for s in statuses}


# ---------------------------------------------------------------------------------------- records
@dataclass
class StsPairs:
    """Scored sentence pairs; ``subsets[i]`` names the part pair ``i`` comes from."""

    sentences1: list[str]
    sentences2: list[str]
    scores: np.ndarray  # (N,) float64 gold scores
    subsets: list[str]

    def __len__(self) -> int:
        return len(self.scores)

    def subset(self, name: str) -> StsPairs:
        idx = [i for i, s in enumerate(self.subsets) if s == name]
        if not idx:
            raise KeyError(f"no subset {name!r}; subsets: {list(dict.fromkeys(self.subsets))}")
        return StsPairs([self.sentences1[i] for i in idx], [self.sentences2[i] for i in idx],
                        self.scores[idx], [name] * len(idx))  # fmt: skip


@dataclass
class Examples:
    """Labelled sentences (or sentence pairs, with ``texts_b``) of one split, in SentEval's order."""

    texts: list[str]
    labels: np.ndarray  # (N,) int64
    texts_b: list[str] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def sentences(self) -> list[str]:
        return self.texts + (self.texts_b or [])


def _check_rows(path: str, got: int) -> None:
    want = MANIFEST[path].rows
    if got != want:
        raise DataError(f"{path} gives {got} records where SentEval's file gives {want}: this is not the SentEval "
                        f"version of the file (expected sha256 {MANIFEST[path].sha256})")  # fmt: skip


def _lines(root: Path, rel: str, encoding: str) -> list[str]:
    """``open(...).read().splitlines()``, as SentEval's STS and binary readers do."""
    return (root / rel).read_text(encoding=encoding).splitlines()


def _iter_lines(root: Path, rel: str, encoding: str) -> list[str]:
    """``for line in open(...)``, as SentEval's other readers do (splits on \\n, \\r\\n and \\r only)."""
    with open(root / rel, encoding=encoding) as f:
        return list(f)


def _read_sts_subset(root: Path, part: Part) -> StsPairs:
    inp, gs = part.files
    lines = _lines(root, inp, "utf-8")
    _check_rows(inp, len(lines))
    fields = [line.split("\t") for line in lines]
    if any(len(f) < 2 for f in fields):
        raise DataError(f"{inp}: every line should hold two tab-separated sentences")
    raw = _lines(root, gs, "utf-8")
    if len(raw) != len(lines):
        raise DataError(f"{gs} has {len(raw)} lines but {inp} has {len(lines)}: the files do not belong together")
    keep = [i for i, s in enumerate(raw) if s != ""]  # SentEval drops pairs whose gold line is empty
    _check_rows(gs, len(keep))
    return StsPairs(
        [senteval_text(fields[i][0]) for i in keep],
        [senteval_text(fields[i][1]) for i in keep],
        np.array([float(raw[i]) for i in keep], dtype=np.float64),
        [part.name] * len(keep),
    )


def _read_columns(root: Path, rel: str, cols: tuple[int, int, int], header: bool, name: str) -> StsPairs:
    rows = [line.strip().split("\t") for line in _iter_lines(root, rel, "utf-8")]
    if header:
        rows = rows[1:]
    _check_rows(rel, len(rows))
    a, b, y = cols
    return StsPairs([senteval_text(r[a]) for r in rows], [senteval_text(r[b]) for r in rows],
                    np.array([float(r[y]) for r in rows], dtype=np.float64), [name] * len(rows))  # fmt: skip


def _read_stsb(root: Path, rel: str, name: str) -> StsPairs:
    return _read_columns(root, rel, (5, 6, 4), header=False, name=name)  # genre,file,year,id,score,s1,s2


def _read_sick(root: Path, rel: str, name: str) -> StsPairs:
    return _read_columns(root, rel, (1, 2, 3), header=True, name=name)  # pair_ID,A,B,score,entailment


def _concat(parts: Sequence[StsPairs]) -> StsPairs:
    return StsPairs(
        [s for p in parts for s in p.sentences1], [s for p in parts for s in p.sentences2],
        np.concatenate([p.scores for p in parts]), [s for p in parts for s in p.subsets],
    )  # fmt: skip


def _senteval_order(ex: Examples) -> Examples:
    """SentEval sorts by (tokens of a, [tokens of b], label) before batching; the k-fold split sees this order."""

    def key(i: int):
        k: tuple[int, ...] = (len(ex.texts[i].split()),)
        if ex.texts_b is not None:
            k += (len(ex.texts_b[i].split()),)
        return k + (int(ex.labels[i]),)

    order = sorted(range(len(ex)), key=key)  # stable, like SentEval's sorted()
    return Examples([ex.texts[i] for i in order], ex.labels[order],
                    None if ex.texts_b is None else [ex.texts_b[i] for i in order])  # fmt: skip


def _read_binary(root: Path, task: Task) -> dict[str, Examples]:
    texts: list[str] = []
    labels: list[int] = []
    for part in task.parts:  # positives first, then negatives, as SentEval concatenates them
        (rel,) = part.files
        lines = _lines(root, rel, "latin-1")
        _check_rows(rel, len(lines))
        texts += [senteval_text(line) for line in lines]
        labels += [int(part.label)] * len(lines)  # type: ignore[arg-type]
    return {"all": _senteval_order(Examples(texts, np.array(labels, dtype=np.int64)))}


def _read_sst(root: Path, rel: str) -> Examples:
    rows = [line.strip().split("\t") for line in _iter_lines(root, rel, "utf-8")]
    _check_rows(rel, len(rows))
    return Examples([senteval_text(r[0]) for r in rows], np.array([int(r[1]) for r in rows], dtype=np.int64))


def _read_trec(root: Path, rel: str) -> Examples:
    texts, labels = [], []
    for line in _iter_lines(root, rel, "latin-1"):
        target, sample = line.strip().split(":", 1)
        if target not in _TREC_CLASSES:
            raise DataError(f"{rel}: unknown TREC class {target!r}; valid: {list(_TREC_CLASSES)}")
        texts.append(senteval_text(sample.split(" ", 1)[1]))  # drop the fine label
        labels.append(_TREC_CLASSES[target])
    _check_rows(rel, len(texts))
    return Examples(texts, np.array(labels, dtype=np.int64))


def _read_mrpc(root: Path, rel: str) -> Examples:
    rows = [line.strip().split("\t") for line in _iter_lines(root, rel, "utf-8")][1:]  # Quality, #1 ID, #2 ID, s1, s2
    _check_rows(rel, len(rows))
    return Examples([senteval_text(r[3]) for r in rows], np.array([int(r[0]) for r in rows], dtype=np.int64),
                    [senteval_text(r[4]) for r in rows])  # fmt: skip


def load_task_data(task: Task | str, data_dir: str | os.PathLike | None = None) -> StsPairs | dict[str, Examples]:
    """The records of a task: :class:`StsPairs` (STS) or ``{split: Examples}`` (transfer; ``all`` for
    MR/CR/SUBJ/MPQA). Files are read as they are; call :func:`verify_data` first to check them."""
    if isinstance(task, str):
        task = TASKS[task] if task in TASKS else resolve_tasks(task)[0]
    root = resolve_data_dir(data_dir)
    if task.reader == "sts-subset":
        return _concat([_read_sts_subset(root, p) for p in task.parts])
    if task.reader in ("stsb", "sick"):
        (part,) = task.parts
        read = _read_stsb if task.reader == "stsb" else _read_sick
        return read(root, part.files[0], part.name)
    if task.reader == "binary":
        return _read_binary(root, task)
    split_reader = {"sst": _read_sst, "trec": _read_trec, "mrpc": _read_mrpc}.get(task.reader)
    if split_reader is None:
        raise DataError(f"task {task.name} has an unknown reader {task.reader!r}")
    return {p.name: _senteval_order(split_reader(root, p.files[0])) for p in task.parts}


def load_sts_pairs(name: str, data_dir: str | os.PathLike | None = None, verify: bool = True) -> StsPairs:
    """Scored pairs of an STS task or split, as the harness sees them.

    ``name`` is an STS task (``STS12`` ... ``STS16`` = all subsets concatenated, ``STSBenchmark``
    = test, ``STSBenchmark-dev``, ``SICKRelatedness`` = test), ``STS12/MSRpar`` for one subset,
    or a split of :data:`~prompteol.evaluation.tasks.STS_SPLITS` (``STSBenchmark-train``,
    ``SICK-train``, ``SICK-trial``, ...), e.g. to search demonstrations on data disjoint from
    every reported test set. ``verify`` checks the files' sha256 first.
    """
    root = resolve_data_dir(data_dir)
    task_name, _, subset = name.partition("/")
    if task_name in STS_SPLITS and not subset:
        reader, rel = STS_SPLITS[task_name]
        if verify:
            _raise_for(_check_paths(root, [rel]), root)
        read = _read_stsb if reader == "stsb" else _read_sick
        return read(root, rel, task_name.rsplit("-", 1)[-1])
    sts = {n: t for n, t in TASKS.items() if t.kind == "sts"}
    matches = [t for n, t in sts.items() if n.lower() == task_name.lower()]
    if not matches:
        raise DataError(f"{name!r} is not an STS task or split; valid: {list(sts)}, "
                        f"{list(STS_SPLITS)}, or TASK/SUBSET such as 'STS12/MSRpar'")  # fmt: skip
    task = matches[0]
    if verify:
        verify_data(root, [task])
    pairs = cast(StsPairs, load_task_data(task, root))
    return pairs.subset(subset) if subset else pairs

