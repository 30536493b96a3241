"""Corpus-scale encoding on Ray Data: the same vectors as :meth:`prompteol.Encoder.encode`.

Two levels:

- :func:`embed_dataset` takes any ``ray.data.Dataset`` with a text column and returns one with an
  ``embedding`` column added (``fixed_size_list<float32|float16>[dim]``), computed by a pool of
  actors that each load one :class:`~prompteol.Encoder` (once, from the
  :class:`~prompteol.EncoderConfig`) and call :meth:`~prompteol.Encoder.encode` on batches of
  ``batch_rows`` rows (length-sorted inside the batch with ``batch_size`` / ``max_batch_tokens``).
- :func:`encode_files` (``prompteol encode --engine ray``): Parquet / JSONL files in, one Parquet
  file per input shard out, resumable. See docs/distributed.md.

The files engine, in order:

1. list and validate every input file (:func:`prompteol.tables.validate_inputs`): schema, text
   column, row count; nothing is started or loaded before that passes;
2. plan shards: one per input file, or row ranges of ``shard_rows`` rows (``--shard-rows``); shard
   ``i`` of file ``f`` (files sorted) is written to ``part-{f:05d}.parquet`` (``part-{f:05d}-{i:05d}.parquet``
   with ``shard_rows``);
3. check the output folder's manifest (``_prompteol_manifest.json``): a rerun with the same inputs
   and settings resumes (shards whose file exists with the right row count are skipped; leftover
   temporary files are removed); other inputs or settings are refused;
4. start (or join) Ray; read the pending shards in Ray tasks (every row tagged with its shard and
   row number), embed them with :func:`embed_dataset`, and stream the results back to the driver,
   which writes each shard in input row order under a temporary name and renames it when its
   last row is written. A killed run leaves only complete files and temporary files.

Nothing here imports ray, torch or pyarrow at import time.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import socket
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .encoder.config import EncoderConfig
from .errors import ConfigError, InputError, PrompteolError, require
from .fileio import FileLock, write_text_atomic
from .tables import OUTPUT_DTYPES, RESERVED_PREFIX, InputFile

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa
    import ray.data

__all__ = ["embed_dataset", "encode_files", "plan_shards", "Shard", "DEFAULT_BATCH_ROWS", "MANIFEST"]

log = logging.getLogger(__name__)

#: rows per actor call: small enough that the last batches spread over the actors on CPUs
DEFAULT_BATCH_ROWS = 256
MANIFEST = "_prompteol_manifest.json"
MANIFEST_VERSION = 1
SHARD_COLUMN = f"{RESERVED_PREFIX}_shard"
ROW_COLUMN = f"{RESERVED_PREFIX}_row"
SOURCE_COLUMN = f"{RESERVED_PREFIX}_source"
#: with ``with_actor_stats=True``: the actor that embedded the row ("host:pid") and its peak RSS (MiB) then
ACTOR_COLUMN = f"{RESERVED_PREFIX}_actor"
RSS_COLUMN = f"{RESERVED_PREFIX}_max_rss_mib"


def _resumable_fields() -> tuple[str, ...]:
    """Config fields that never change a vector (the device and the ``runtime`` kind: prefix cache, ...):
    a resumed run may change them."""
    return ("device", *EncoderConfig.fields_of_kind("runtime"))


def _ray():
    require("ray.data", "ray", "Encoding on Ray", package="ray[data]")
    import ray
    import ray.data

    return ray


# ---------------------------------------------------------------------------------------------- the actor
def _max_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


class _EmbedActor:
    """One per actor: loads the encoder once, then embeds a ``pyarrow.Table`` batch per call."""

    def __init__(
        self,
        config: dict,
        text_column: str,
        embedding_column: str,
        batch_size: int,
        max_batch_tokens: int | None,
        normalize: bool,
        output_dtype: str,
        threads: int | None,
        cache_dir: str | None,
        origin_column: str | None,
        with_actor_stats: bool,
    ):
        import torch

        if threads:
            torch.set_num_threads(threads)
        from .encoder.encoder import Encoder

        self.encoder = Encoder.from_config(EncoderConfig.from_dict(config), embedding_cache=None,
                                           cache_dir=cache_dir, progress=False)  # fmt: skip
        self.text_column = text_column
        self.embedding_column = embedding_column
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.normalize = normalize
        self.output_dtype = output_dtype
        self.origin_column = origin_column
        self.with_actor_stats = with_actor_stats
        self.actor = f"{socket.gethostname()}:{os.getpid()}"

    def _where(self, table: pa.Table) -> str:
        if self.origin_column and self.origin_column in table.column_names:
            origins = sorted({str(o) for o in table.column(self.origin_column).to_pylist()})
            return ", ".join(origins[:3]) + (f" (+{len(origins) - 3} more)" if len(origins) > 3 else "")
        return "the dataset"

    def __call__(self, table: pa.Table) -> pa.Table:
        import pyarrow as pa

        from .tables import embedding_array

        if self.text_column not in table.column_names:
            raise InputError(f"{self._where(table)}: no column {self.text_column!r} (columns: {table.column_names})")
        if self.embedding_column in table.column_names:
            raise InputError(f"{self._where(table)}: already has a column {self.embedding_column!r}")
        texts = table.column(self.text_column).to_pylist()
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise InputError(f"{self._where(table)}: column {self.text_column!r} has a "
                                 f"{type(t).__name__} value (row {i} of a batch), expected strings")  # fmt: skip
        try:
            vectors = self.encoder.encode(
                texts, batch_size=self.batch_size, normalize=self.normalize, show_progress=False,
                max_batch_tokens=self.max_batch_tokens, use_embedding_cache=False,
            )  # fmt: skip
        except PrompteolError as exc:
            raise type(exc)(f"{self._where(table)}: {exc}") from None
        out = table.append_column(self.embedding_column, embedding_array(vectors, self.output_dtype))
        if self.with_actor_stats:
            n = table.num_rows
            out = out.append_column(ACTOR_COLUMN, pa.array([self.actor] * n, pa.string()))
            out = out.append_column(RSS_COLUMN, pa.array([_max_rss_mib()] * n, pa.float64()))
        return out


def _check_positive(name: str, value, *, integer: bool = False, zero: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (value >= 0 if zero else value > 0)
    if integer:
        ok = ok and isinstance(value, int)
    if not ok:
        kind = "int" if integer else "number"
        raise ConfigError(f"{name} should be a {'non-negative' if zero else 'positive'} {kind}, got {value!r}")


def embed_dataset(
    ds: ray.data.Dataset,
    config: EncoderConfig | Mapping[str, Any],
    *,
    text_column: str = "text",
    num_actors: int | tuple[int, int] = 1,
    cpus_per_actor: float = 1,
    gpus_per_actor: float = 0,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    batch_size: int = 32,
    max_batch_tokens: int | None = None,
    normalize: bool = False,
    output_dtype: str = "float32",
    embedding_column: str = "embedding",
    cache_dir: str | os.PathLike | None = None,
    origin_column: str | None = None,
    with_actor_stats: bool = False,
    block_batches: bool = False,
    max_restarts: int | None = None,
) -> ray.data.Dataset:
    """``ds`` with an ``embedding_column`` of PromptEOL vectors of ``text_column`` (lazy, like any Dataset).

    - ``config``: an :class:`~prompteol.EncoderConfig` (or its :meth:`~prompteol.EncoderConfig.to_dict`);
      every actor loads ``Encoder.from_config(config)`` once, without the embedding cache;
    - ``num_actors``: a fixed pool size, or ``(min, max)`` for an autoscaling pool;
      ``cpus_per_actor``: CPUs reserved per actor, also its torch threads (at least 1);
      ``gpus_per_actor``: GPUs per actor, fractions share a GPU (``0.5``: two actors per GPU; the
      config's ``device`` must then be ``cuda`` or ``auto``);
    - ``batch_rows``: rows per actor call; inside it the encoder sorts by length and batches by
      ``batch_size`` sequences and ``max_batch_tokens`` padded tokens (as :meth:`Encoder.encode`);
    - ``output_dtype``: ``float32`` (exact) or ``float16`` (half the storage);
    - ``origin_column``: a column naming where rows come from (a file), quoted by encode-time errors;
    - ``with_actor_stats``: add the columns ``__prompteol_actor`` and ``__prompteol_max_rss_mib``.
    - ``block_batches``: each input block is one actor call, never merged with the next (the files
      engine: its read pieces hold at most ``batch_rows`` rows of one file, so a call never mixes two
      files' schemas); otherwise calls of ``batch_rows`` rows, which may span blocks.
    - ``max_restarts``: how often Ray restarts an actor that died (``None``: Ray Data's default,
      without limit). With restarts on, Ray logs an ``E ... core_worker.cc`` line at the start of
      every run (the actors' constructor arguments live in the object store; docs/distributed.md).

    The vectors equal ``Encoder.from_config(config).encode(texts)`` row for row (up to float
    rounding of different batch shapes). Every other column is kept.
    """
    ray = _ray()
    if isinstance(config, Mapping):
        config = EncoderConfig.from_dict(dict(config))
    if not isinstance(config, EncoderConfig):
        raise ConfigError(f"config should be an EncoderConfig or a dict, got {type(config).__name__}")
    if isinstance(num_actors, tuple):
        if len(num_actors) != 2:
            raise ConfigError(f"num_actors should be an int or (min, max), got {num_actors!r}")
        for n in num_actors:
            _check_positive("num_actors", n, integer=True)
        if num_actors[0] > num_actors[1]:
            raise ConfigError(f"num_actors (min, max) has min > max: {num_actors!r}")
        sizes = {"min_size": num_actors[0], "max_size": num_actors[1]}
    else:
        _check_positive("num_actors", num_actors, integer=True)
        sizes = {"size": num_actors}
    # one batch at a time per actor: an actor that is ready first does not queue up the batches of
    # those still loading the model, and the last batches spread over every actor
    compute = ray.data.ActorPoolStrategy(**sizes, max_tasks_in_flight_per_actor=1)
    _check_positive("cpus_per_actor", cpus_per_actor)
    _check_positive("gpus_per_actor", gpus_per_actor, zero=True)
    _check_positive("batch_rows", batch_rows, integer=True)
    _check_positive("batch_size", batch_size, integer=True)
    if max_batch_tokens is not None:
        _check_positive("max_batch_tokens", max_batch_tokens, integer=True)
    if output_dtype not in OUTPUT_DTYPES:
        raise ConfigError(f"output_dtype should be one of {list(OUTPUT_DTYPES)}, got {output_dtype!r}")
    if gpus_per_actor and config.device == "cpu":
        raise ConfigError(f"gpus_per_actor={gpus_per_actor} with device 'cpu': give device 'cuda' (--device cuda) "
                          "so the actors use the GPUs Ray gives them")  # fmt: skip
    if not gpus_per_actor and config.device.startswith("cuda"):
        raise ConfigError(f"device {config.device!r} needs gpus_per_actor > 0 (--gpus-per-actor): an actor "
                          "without a GPU from Ray sees none")  # fmt: skip
    kwargs = {
        "config": config.to_dict(), "text_column": text_column, "embedding_column": embedding_column,
        "batch_size": batch_size, "max_batch_tokens": max_batch_tokens, "normalize": bool(normalize),
        "output_dtype": output_dtype, "threads": max(1, int(cpus_per_actor)),
        "cache_dir": None if cache_dir is None else str(cache_dir), "origin_column": origin_column,
        "with_actor_stats": with_actor_stats,
    }  # fmt: skip
    remote_args: dict[str, Any] = {} if max_restarts is None else {"max_restarts": max_restarts}
    with warnings.catch_warnings():
        # Ray 2.60 has no named parameter for max_restarts yet, and warns about the generic ones
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        return ds.map_batches(
            _EmbedActor, fn_constructor_kwargs=kwargs, batch_size=None if block_batches else batch_rows,
            batch_format="pyarrow",
            num_cpus=cpus_per_actor, num_gpus=gpus_per_actor or None, compute=compute, **remote_args,
        )  # fmt: skip


# ---------------------------------------------------------------------------------------------- shards
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
    from .tables import jsonl_row_offsets

    if shard_rows is not None:
        _check_positive("shard_rows", shard_rows, integer=True)
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


def _read_pieces(shards: Sequence[Shard], rows: int) -> list[dict[str, Any]]:
    """The shards cut into read pieces at the multiples of ``rows`` (each piece is one read task, so
    one block of its own). Without this a shard is one block, which one actor task encodes alone
    while the others wait (measured: a 10,000-row file on 2 actors, all rows on one). The pieces
    keep their shard's index, so the output files are the same."""
    from .tables import jsonl_row_offsets

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


def _read_shards(batch: pa.Table, text_column: str, batch_rows: int):
    """Ray task: the rows of each shard described in ``batch``, tagged with shard, row and file."""
    import pyarrow as pa

    from .tables import iter_tables

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


# ---------------------------------------------------------------------------------------------- manifest
def _settings(config: EncoderConfig, **extra: Any) -> dict[str, Any]:
    vector_config = {k: v for k, v in config.to_dict().items() if k not in _resumable_fields()}
    return {"encoder": vector_config, **extra}


def _describe_differences(old: Mapping, new: Mapping, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += _describe_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {json.dumps(a)[:80]} (before) vs {json.dumps(b)[:80]} (now)")
    return out


def _prepare_output(out_dir: Path, manifest: dict[str, Any]) -> None:
    """Create the output folder and its manifest, or check that an existing one matches (resume)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"output {out_dir} is a file; the Ray engine writes a folder of Parquet files")
    path = out_dir / MANIFEST
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: unreadable manifest ({exc}); delete the output folder to start again") from None
        diffs = _describe_differences({"settings": old.get("settings"), "inputs": old.get("inputs")},
                                      {"settings": manifest["settings"], "inputs": manifest["inputs"]})  # fmt: skip
        if diffs:
            raise InputError(f"output folder {out_dir} holds a run with other inputs or settings; give a new "
                             "output folder (or delete this one) to start again. Differences: "
                             + "; ".join(diffs[:5]) + (f" (+{len(diffs) - 5} more)" if len(diffs) > 5 else ""))  # fmt: skip
        return
    if out_dir.is_dir() and any(out_dir.glob("part-*.parquet")):
        raise InputError(f"output folder {out_dir} holds part-*.parquet files but no {MANIFEST}; "
                         "give a new output folder")  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")


def output_lock(out_dir: Path) -> FileLock:
    """An exclusive lock on the output folder (``.prompteol.lock``): a second run on the same folder
    fails at once instead of removing the first one's temporary files (POSIX ``flock``; a no-op elsewhere)."""
    return FileLock(out_dir / ".prompteol.lock", f"another run is writing to {out_dir}; wait for it or give "
                    "another output folder")  # fmt: skip


def _complete(path: Path, rows: int) -> bool:
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


def _remove_temporary(out_dir: Path) -> int:
    stale = list(out_dir.glob(".part-*.parquet.tmp-*"))
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


# ---------------------------------------------------------------------------------------------- assembly
class _Assembler:
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
        from .tables import AtomicParquetWriter

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


# ---------------------------------------------------------------------------------------------- Ray set-up
def _start_ray(address: str | None, quiet: bool = True) -> bool:
    """Join ``address`` (or ``$RAY_ADDRESS``), or start a local Ray with the machine's cores; reuse a
    running session. Returns whether this call started (and so should stop) it."""
    ray = _ray()
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    level = logging.WARNING if quiet else logging.INFO
    if address:
        ray.init(address=address, logging_level=level, log_to_driver=True)
    else:
        ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, logging_level=level, log_to_driver=True)
    return True


def _user_error(exc: BaseException) -> PrompteolError | None:
    """The prompteol error (bad input, bad option) behind ``exc``: raised in the driver, or in a Ray
    task or actor (Ray wraps it; its ``cause`` is the original, with the original message)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        cause = getattr(e, "cause", None)
        if isinstance(cause, PrompteolError):
            return cause
        if isinstance(e, PrompteolError) and not type(e).__module__.startswith("ray"):
            return e
        todo += [cause if isinstance(cause, BaseException) else None, e.__cause__, e.__context__]
    return None


# ---------------------------------------------------------------------------------------------- files engine
def encode_files(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    output: str | os.PathLike,
    config: EncoderConfig | Mapping[str, Any],
    *,
    text_column: str = "text",
    num_actors: int = 1,
    cpus_per_actor: float = 1,
    gpus_per_actor: float = 0,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    batch_size: int = 32,
    max_batch_tokens: int | None = None,
    normalize: bool = False,
    output_dtype: str = "float32",
    shard_rows: int | None = None,
    address: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
    quiet: bool = True,
) -> dict[str, Any]:
    """Embed Parquet / JSONL files (a file, a folder, a glob or a list) into ``output`` (a folder of
    Parquet files, one per shard, every input column kept plus ``embedding``); resumable. Returns a
    summary (rows, seconds, sentences/s, rows and peak RSS per actor). See the module docstring."""
    from .tables import list_input_files, validate_inputs

    t0 = time.perf_counter()
    if isinstance(config, Mapping):
        config = EncoderConfig.from_dict(dict(config))
    if output_dtype not in OUTPUT_DTYPES:
        raise ConfigError(f"output_dtype should be one of {list(OUTPUT_DTYPES)}, got {output_dtype!r}")
    _check_positive("num_actors", num_actors, integer=True)
    _check_positive("cpus_per_actor", cpus_per_actor)
    _check_positive("gpus_per_actor", gpus_per_actor, zero=True)
    _check_positive("batch_rows", batch_rows, integer=True)
    if gpus_per_actor and config.device == "cpu":  # the same checks as embed_dataset, before anything starts
        raise ConfigError(f"--gpus-per-actor {gpus_per_actor} with --device cpu: give --device cuda")
    if not gpus_per_actor and config.device.startswith("cuda"):
        raise ConfigError(f"--device {config.device} needs --gpus-per-actor > 0")
    files = list_input_files(inputs)
    infos = validate_inputs(files, text_column, reserved=("embedding",))
    shards = plan_shards(infos, shard_rows)
    out_dir = Path(output).expanduser().resolve()
    settings = _settings(config, text_column=text_column, shard_rows=shard_rows, normalize=bool(normalize),
                         output_dtype=output_dtype)  # fmt: skip
    manifest = {
        "manifest_version": MANIFEST_VERSION, "prompteol_version": __version__, "settings": settings,
        "config": config.to_dict(), "inputs": [i.to_dict() for i in infos],
        "shards": [{"name": s.name, "source": s.path, "rows": [s.start, s.stop]} for s in shards],
    }  # fmt: skip
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"output {out_dir} is a file; the Ray engine writes a folder of Parquet files")
    out_dir.mkdir(parents=True, exist_ok=True)
    with output_lock(out_dir):
        _prepare_output(out_dir, manifest)
        return _encode_shards(shards, infos, out_dir, config, t0, text_column=text_column, num_actors=num_actors,
                              cpus_per_actor=cpus_per_actor, gpus_per_actor=gpus_per_actor, batch_rows=batch_rows,
                              batch_size=batch_size, max_batch_tokens=max_batch_tokens, normalize=normalize,
                              output_dtype=output_dtype, address=address, cache_dir=cache_dir, progress=progress,
                              quiet=quiet)  # fmt: skip


def _encode_shards(
    shards: list[Shard], infos: list[InputFile], out_dir: Path, config: EncoderConfig, t0: float, *,
    text_column: str, num_actors: int, cpus_per_actor: float, gpus_per_actor: float, batch_rows: int,
    batch_size: int, max_batch_tokens: int | None, normalize: bool, output_dtype: str, address: str | None,
    cache_dir: str | os.PathLike | None, progress: bool, quiet: bool,
) -> dict[str, Any]:  # fmt: skip
    """The rest of :func:`encode_files`, with the output folder prepared and locked."""
    stale = _remove_temporary(out_dir)
    pending = [s for s in shards if not _complete(out_dir / s.name, s.num_rows)]
    summary: dict[str, Any] = {
        "input_files": len(infos), "empty_files": sum(1 for i in infos if i.num_rows == 0),
        "shards": len(shards), "shards_skipped": len(shards) - len(pending), "shards_written": 0,
        "temporary_files_removed": stale, "rows_total": sum(s.num_rows for s in shards), "rows": 0,
        "output": str(out_dir), "num_actors": num_actors, "cpus_per_actor": cpus_per_actor,
        "gpus_per_actor": gpus_per_actor, "batch_rows": batch_rows, "actors": {},
        "validate_s": round(time.perf_counter() - t0, 3),
    }  # fmt: skip
    if not pending:
        summary.update(wall_s=round(time.perf_counter() - t0, 3), rows_per_s=0.0)
        return summary

    ray = _ray()
    local = not (address or os.environ.get("RAY_ADDRESS"))
    if local and not ray.is_initialized():
        cores = os.cpu_count() or 1
        if num_actors * cpus_per_actor > cores:
            raise ConfigError(f"{num_actors} actors x {cpus_per_actor:g} CPUs need {num_actors * cpus_per_actor:g} "
                              f"CPUs; this machine has {cores}: lower --num-actors or --cpus-per-actor")  # fmt: skip
    t_resolve = time.perf_counter()
    if local:
        # one machine: fetch / convert the model once here (the actors then only load it), and an
        # unknown model fails before Ray starts
        from .models.loading import resolve_model

        resolve_model(config.model, cache_dir=cache_dir, progress=progress, revision=config.revision)
    t_ray = time.perf_counter()
    summary["resolve_model_s"] = round(t_ray - t_resolve, 3)
    started = _start_ray(address, quiet=quiet)
    summary["ray_init_s"] = round(time.perf_counter() - t_ray, 3)
    try:
        _check_resources(ray, num_actors, cpus_per_actor, gpus_per_actor, strict=local)
        t_run = time.perf_counter()
        assembler = _run_pipeline(
            ray, pending, out_dir, config, text_column=text_column, num_actors=num_actors,
            cpus_per_actor=cpus_per_actor, gpus_per_actor=gpus_per_actor, batch_rows=batch_rows,
            batch_size=batch_size, max_batch_tokens=max_batch_tokens, normalize=normalize,
            output_dtype=output_dtype, cache_dir=cache_dir, progress=progress, quiet=quiet,
            # one machine: an actor that dies (out of memory, most likely) fails the run at once and a
            # rerun resumes from the finished shards, rather than being restarted into the same death;
            # this also keeps Ray's "E ... core_worker.cc" line about restarts out of a successful run
            max_restarts=0 if local else None,
        )  # fmt: skip
    finally:
        if started:
            ray.shutdown()
    wall = time.perf_counter() - t0
    summary.update(
        shards_written=len(assembler.done), rows=assembler.rows, wall_s=round(wall, 3),
        encode_s=round(time.perf_counter() - t_run, 3), rows_per_s=round(assembler.rows / wall, 2),
        actors={a: {"rows": n, "max_rss_mib": round(assembler.actor_rss.get(a, 0.0), 1)}
                for a, n in sorted(assembler.actor_rows.items())},
    )  # fmt: skip
    return summary


def _check_resources(ray, num_actors: int, cpus: float, gpus: float, strict: bool) -> None:
    """An actor pool that the cluster cannot place would wait forever: fail (one machine) or warn (a
    cluster, which may scale up)."""
    have = ray.cluster_resources()
    need = {"CPU": num_actors * cpus, "GPU": num_actors * gpus}
    short = {k: v for k, v in need.items() if v > have.get(k, 0.0) + 1e-9}
    if not short:
        return
    msg = (f"the actor pool needs {need['CPU']:g} CPUs and {need['GPU']:g} GPUs; Ray has "
           f"{have.get('CPU', 0):g} CPUs and {have.get('GPU', 0):g} GPUs")  # fmt: skip
    if strict:
        raise ConfigError(msg + ": lower --num-actors, --cpus-per-actor or --gpus-per-actor")
    log.warning("%s; the job waits until the cluster provides them", msg)


def _run_pipeline(
    ray, pending: list[Shard], out_dir: Path, config: EncoderConfig, *, text_column: str, num_actors: int,
    cpus_per_actor: float, gpus_per_actor: float, batch_rows: int, batch_size: int, max_batch_tokens: int | None,
    normalize: bool, output_dtype: str, cache_dir: str | os.PathLike | None, progress: bool, quiet: bool,
    max_restarts: int | None = None,
) -> _Assembler:  # fmt: skip
    """Read, embed and write the pending shards; returns the assembler (what was written, per-actor stats)."""
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # shards come back in order: the driver streams them to disk
    ctx.enable_progress_bars = bool(progress)
    if quiet:
        logging.getLogger("ray.data").setLevel(logging.WARNING)
    if not progress:  # asked for: no need to be told
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    items = _read_pieces(pending, batch_rows)
    try:
        ds = ray.data.from_items(items, override_num_blocks=len(items))
    except TypeError:  # ray < 2.10
        ds = ray.data.from_items(items, parallelism=len(items))
    try:  # a few shards read at once: reading is cheap next to encoding
        read_pool = ray.data.TaskPoolStrategy(size=max(1, min(len(items), num_actors + 1)))
    except (AttributeError, TypeError):  # older ray: no TaskPoolStrategy(size=...)
        read_pool = None
    # num_cpus=0: the readers never wait for a CPU that the actors hold
    ds = ds.map_batches(_read_shards, fn_kwargs={"text_column": text_column, "batch_rows": batch_rows},
                        batch_size=1, batch_format="pyarrow", num_cpus=0, compute=read_pool)  # fmt: skip
    ds = embed_dataset(
        ds, config, text_column=text_column, num_actors=num_actors, cpus_per_actor=cpus_per_actor,
        gpus_per_actor=gpus_per_actor, batch_rows=batch_rows, batch_size=batch_size,
        max_batch_tokens=max_batch_tokens, normalize=normalize, output_dtype=output_dtype, cache_dir=cache_dir,
        origin_column=SOURCE_COLUMN, with_actor_stats=True, block_batches=True, max_restarts=max_restarts,
    )  # fmt: skip
    metadata = {"version": __version__, "config": config.to_dict(), "normalize": bool(normalize),
                "output_dtype": output_dtype, "text_column": text_column}  # fmt: skip
    assembler = _Assembler(pending, out_dir, metadata)
    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            assembler.add(batch)
    except BaseException as exc:
        assembler.abort()
        user = _user_error(exc) if isinstance(exc, Exception) else None
        if user is not None and user is not exc:
            raise user from None  # the message alone, without Ray's wrapping and remote traceback
        raise
    missing = [s.name for s in pending if s.name not in set(assembler.done)]
    if missing:
        raise RuntimeError(f"Ray returned no rows for {len(missing)} shards ({missing[:3]}); rerun to resume")
    return assembler
