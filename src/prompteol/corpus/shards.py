"""The Ray executor's shards: planned from the inputs, read in Ray tasks, assembled in row order.

The Ray executor's shards: plan them from the validated inputs, cut them into read pieces, read them in
Ray tasks (rows tagged with shard and row), and assemble the embedded rows back into one Parquet file per
shard, in input row order, renamed into place when complete."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, InputError
from .formats import RESERVED_PREFIX, InputFile, jsonl_row_offsets
from .sinks import AtomicParquetWriter
from .tables import iter_tables

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa


log = logging.getLogger(__name__)


SHARD_COLUMN = f"{RESERVED_PREFIX}_shard"


ROW_COLUMN = f"{RESERVED_PREFIX}_row"


SOURCE_COLUMN = f"{RESERVED_PREFIX}_source"


#: with ``with_actor_stats=True``: the actor that embedded the row ("host:pid") and its peak RSS (MiB) then
ACTOR_COLUMN = f"{RESERVED_PREFIX}_actor"


RSS_COLUMN = f"{RESERVED_PREFIX}_max_rss_mib"


def check_positive(name: str, value, *, integer: bool = False, zero: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (value >= 0 if zero else value > 0)
    if integer:
        ok = ok and isinstance(value, int)
    if not ok:
        kind = "int" if integer else "number"
        raise ConfigError(f"{name} should be a {'non-negative' if zero else 'positive'} {kind}, got {value!r}")


@dataclass(frozen=True)
class Shard:
    """Rows ``[start, stop)`` of input file number ``file_index``, written to ``name``."""

    index: int
    name: str
    file_index: int
    path: str
    format: str
    start: int
    stop: int
    offset_pos: int = -1  #: JSONL: byte offset of row ``start`` (-1: scan from the start)
    offset_line: int = -1

    @property
    def num_rows(self) -> int:
        return self.stop - self.start


def plan_shards(inputs: Sequence[InputFile], shard_rows: int | None = None) -> list[Shard]:
    """One shard per input file (``part-00000.parquet``, numbered in the order given), or with
    ``shard_rows`` row ranges of that many rows (``part-00000-00000.parquet``). Empty files get no
    shard (and no output file)."""

    if shard_rows is not None:
        check_positive("shard_rows", shard_rows, integer=True)
    shards: list[Shard] = []
    for f, info in enumerate(inputs):
        if info.num_rows == 0:
            continue
        if shard_rows is None:
            shards.append(Shard(len(shards), f"part-{f:05d}.parquet", f, info.path, info.format, 0, info.num_rows))
            continue
        offsets = jsonl_row_offsets(info.path, shard_rows) if info.format == "jsonl" else None
        for j, start in enumerate(range(0, info.num_rows, shard_rows)):
            pos, line = offsets[j] if offsets else (-1, -1)
            shards.append(Shard(len(shards), f"part-{f:05d}-{j:05d}.parquet", f, info.path, info.format, start,
                                min(start + shard_rows, info.num_rows), pos, line))  # fmt: skip
    return shards


def read_pieces(shards: Sequence[Shard], rows: int) -> list[dict[str, Any]]:
    """The shards cut into read pieces at the multiples of ``rows`` (each piece is one read task, so
    one block of its own). Without this a shard is one block, which one actor task encodes alone
    while the others wait (measured: a 10,000-row file on 2 actors, all rows on one). The pieces
    keep their shard's index, so the output files are the same."""

    offsets: dict[str, list[tuple[int, int]]] = {}
    items = []
    for shard in shards:
        bounds = [shard.start, *range((shard.start // rows + 1) * rows, shard.stop, rows), shard.stop]
        for start, stop in zip(bounds, bounds[1:]):
            item = {**asdict(shard), "start": start, "stop": stop}
            if start != shard.start and shard.format == "jsonl":  # a multiple of rows: its offset is known
                if shard.path not in offsets:
                    offsets[shard.path] = jsonl_row_offsets(shard.path, rows)
                item["offset_pos"], item["offset_line"] = offsets[shard.path][start // rows]
            items.append(item)
    return items


def read_shards(batch: pa.Table, text_column: str, batch_rows: int):
    """Ray task: the rows of each shard described in ``batch``, tagged with shard, row and file."""
    import pyarrow as pa


    for d in batch.to_pylist():
        offset = (d["offset_pos"], d["offset_line"]) if d["offset_pos"] >= 0 else None
        row = d["start"]
        for table in iter_tables(d["path"], text_column, d["start"], d["stop"], batch_rows, offset):
            n = table.num_rows
            table = table.append_column(SHARD_COLUMN, pa.array([d["index"]] * n, pa.int32()))
            table = table.append_column(ROW_COLUMN, pa.array(range(row, row + n), pa.int64()))
            table = table.append_column(SOURCE_COLUMN, pa.array([d["path"]] * n, pa.string()))
            row += n
            yield table
        if row != d["stop"]:
            raise InputError(f"{d['path']}: expected rows {d['start']}..{d['stop']}, read up to {row} "
                             "(did the file change since the run started?)")  # fmt: skip


def shard_complete(path: Path, rows: int) -> bool:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.is_file():
        return False
    try:
        if pq.read_metadata(path).num_rows == rows:
            return True
    except (OSError, pa.ArrowException):
        pass
    log.warning("%s is not a complete output (unreadable or wrong row count); it is computed again", path)
    return False


def remove_temporary(out_dir: Path) -> int:
    stale = list(out_dir.glob(".part-*.parquet.tmp-*"))
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


class Assembler:
    """Driver side: rows come back tagged (shard, row); each shard is written in row order (rows that
    arrive early wait in memory) and renamed into place when its last row is written."""

    def __init__(self, shards: Sequence[Shard], out_dir: Path, metadata: dict[str, Any]):
        self.shards = {s.index: s for s in shards}
        self.out_dir = out_dir
        self.metadata = metadata
        self.writers: dict[int, Any] = {}
        self.next_row: dict[int, int] = {}
        self.waiting: dict[int, dict[int, pa.Table]] = {}
        self.done: list[str] = []
        self.rows = 0
        self.actor_rows: dict[str, int] = {}
        self.actor_rss: dict[str, float] = {}

    def add(self, table: pa.Table) -> None:
        import numpy as np
        import pyarrow.compute as pc

        if table.num_rows == 0:
            return
        if ACTOR_COLUMN in table.column_names:
            actors = table.column(ACTOR_COLUMN)
            counts = pc.value_counts(actors).to_pylist()
            for item in counts:
                self.actor_rows[item["values"]] = self.actor_rows.get(item["values"], 0) + item["counts"]
            rss = table.column(RSS_COLUMN).to_numpy()
            for a, r in zip(actors.to_pylist(), rss):
                self.actor_rss[a] = max(self.actor_rss.get(a, 0.0), float(r))
        shard = table.column(SHARD_COLUMN).to_numpy()
        row = table.column(ROW_COLUMN).to_numpy()
        payload = table.drop_columns([c for c in table.column_names if c.startswith(RESERVED_PREFIX)])
        # runs of consecutive rows of one shard
        cut = np.flatnonzero((shard[1:] != shard[:-1]) | (row[1:] != row[:-1] + 1)) + 1
        bounds = [0, *cut.tolist(), table.num_rows]
        for a, b in zip(bounds[:-1], bounds[1:]):
            self._add_run(int(shard[a]), int(row[a]), payload.slice(a, b - a))

    def _add_run(self, index: int, first: int, table: pa.Table) -> None:

        shard = self.shards[index]
        if index not in self.writers:
            meta = {"prompteol": {**self.metadata, "source": shard.path, "rows": [shard.start, shard.stop]}}
            self.writers[index] = AtomicParquetWriter(self.out_dir / shard.name, meta)
            self.next_row[index] = shard.start
            self.waiting[index] = {}
        expected = self.next_row[index]
        if first != expected:
            if first < expected or first in self.waiting[index]:
                raise RuntimeError(f"{shard.name}: row {first} arrived twice")
            self.waiting[index][first] = table
            return
        writer, waiting = self.writers[index], self.waiting[index]
        while True:
            writer.write(table)
            self.rows += table.num_rows
            self.next_row[index] += table.num_rows
            if self.next_row[index] not in waiting:
                break
            table = waiting.pop(self.next_row[index])
        if self.next_row[index] == shard.stop:
            writer.close()
            del self.writers[index], self.waiting[index]
            self.done.append(shard.name)
            log.info("wrote %s (%d rows of %s)", shard.name, shard.num_rows, shard.path)
        elif self.next_row[index] > shard.stop:
            raise RuntimeError(f"{shard.name}: more rows than the {shard.num_rows} planned")

    def abort(self) -> None:
        for writer in self.writers.values():
            writer.abort()
        self.writers.clear()
