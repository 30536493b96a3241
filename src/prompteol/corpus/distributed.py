"""Corpus-scale encoding on Ray Data: the same vectors as :meth:`prompteol.Encoder.encode`.

Two levels:

- :func:`embed_dataset` takes any ``ray.data.Dataset`` with a text column and returns one with an
  ``embedding`` column added (``fixed_size_list<float32|float16>[dim]``), computed by a pool of
  actors that each load one :class:`~prompteol.Encoder` (once, from the
  :class:`~prompteol.EncoderConfig`) and call :meth:`~prompteol.Encoder.encode` on batches of
  ``batch_rows`` rows with the call's :class:`~prompteol.encoder.encode_options.EncodeOptions`
  (length-sorted inside the batch by ``batch_size`` / ``max_batch_tokens``).
- :func:`encode_files` (``prompteol encode --engine ray``): Parquet / JSONL files in, one Parquet
  file per input shard out, resumable. See docs/distributed.md.

The files engine, in order:

1. list and validate every input file completely, as the local executor does
   (:func:`prompteol.corpus.formats.validate_inputs` with ``full=True``: schema, every row of the text
   column, every JSONL line with the one parser), and every option (:class:`RayJob`); nothing is
   started or loaded before that passes;
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

import logging
import os
import socket
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..encoder.config import EncoderConfig
from ..encoder.encode_options import EncodeOptions
from ..errors import ConfigError, InputError, PrompteolError
from .formats import InputFile, list_input_files, validate_inputs
from .ray_setup import check_resources, max_rss_mib, ray_module, start_ray, user_error
from .resume import MANIFEST_VERSION, manifest_settings, output_lock, prepare_manifest
from .shards import (
    ACTOR_COLUMN,
    RSS_COLUMN,
    SOURCE_COLUMN,
    Assembler,
    Shard,
    check_positive,
    plan_shards,
    read_pieces,
    read_shards,
    remove_temporary,
    shard_complete,
)
from .sinks import OUTPUT_DTYPES, embedding_array

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa
    import ray.data

__all__ = ["RayJob", "embed_dataset", "encode_files", "DEFAULT_BATCH_ROWS"]

log = logging.getLogger(__name__)

#: rows per actor call: small enough that the last batches spread over the actors on CPUs
DEFAULT_BATCH_ROWS = 256


@dataclass(frozen=True)
class RayJob:
    """What a Ray run is asked to do besides its inputs and encoder config, checked once, here, before
    anything starts: the call options of every ``encode`` and the actor pool's shape.

    - ``options``: :class:`~prompteol.encoder.encode_options.EncodeOptions` (the embedding cache is never
      used by the actors);
    - ``num_actors``: a fixed pool size, or ``(min, max)`` for an autoscaling pool; ``cpus_per_actor``:
      CPUs reserved per actor, also its torch threads (at least 1); ``gpus_per_actor``: GPUs per actor,
      fractions share a GPU (``0.5``: two actors per GPU; the config's ``device`` must then be ``cuda``
      or ``auto``);
    - ``batch_rows``: rows per actor call; ``output_dtype``: ``float32`` (exact) or ``float16``.
    """

    options: EncodeOptions = field(default_factory=EncodeOptions)
    text_column: str = "text"
    num_actors: int | tuple[int, int] = 1
    cpus_per_actor: float = 1
    gpus_per_actor: float = 0
    batch_rows: int = DEFAULT_BATCH_ROWS
    output_dtype: str = "float32"
    cache_dir: str | None = None
    progress: bool = False
    quiet: bool = True

    def __post_init__(self) -> None:
        if self.output_dtype not in OUTPUT_DTYPES:
            raise ConfigError(f"output_dtype should be one of {list(OUTPUT_DTYPES)}, got {self.output_dtype!r}")
        if isinstance(self.num_actors, tuple):
            if len(self.num_actors) != 2:
                raise ConfigError(f"num_actors should be an int or (min, max), got {self.num_actors!r}")
            for n in self.num_actors:
                check_positive("num_actors", n, integer=True)
            if self.num_actors[0] > self.num_actors[1]:
                raise ConfigError(f"num_actors (min, max) has min > max: {self.num_actors!r}")
        else:
            check_positive("num_actors", self.num_actors, integer=True)
        check_positive("cpus_per_actor", self.cpus_per_actor)
        check_positive("gpus_per_actor", self.gpus_per_actor, zero=True)
        check_positive("batch_rows", self.batch_rows, integer=True)
        if self.cache_dir is not None:
            object.__setattr__(self, "cache_dir", str(self.cache_dir))

    @property
    def actors(self) -> int:
        """The most actors the pool runs at once."""
        return self.num_actors[1] if isinstance(self.num_actors, tuple) else self.num_actors

    def check_device(self, config: EncoderConfig) -> None:
        """GPUs per actor and the config's device go together (checked before anything starts)."""
        if self.gpus_per_actor and config.device == "cpu":
            raise ConfigError(f"--gpus-per-actor {self.gpus_per_actor:g} (gpus_per_actor) with --device cpu: give "
                              "--device cuda so the actors use the GPUs Ray gives them")  # fmt: skip
        if not self.gpus_per_actor and config.device.startswith("cuda"):
            raise ConfigError(f"--device {config.device} needs --gpus-per-actor > 0 (gpus_per_actor): an actor "
                              "without a GPU from Ray sees none")  # fmt: skip


def _job(job: RayJob | None, options: EncodeOptions | None, **given: Any) -> RayJob:
    """``job`` (default: a new one) with ``options`` and the ``given`` fields that are not ``None``."""
    encode = {k: given.pop(k) for k in ("batch_size", "max_batch_tokens", "normalize") if k in given}
    base = job if job is not None else RayJob()
    opts = EncodeOptions.of(options if options is not None else base.options, **encode)
    return replace(base, options=opts, **{k: v for k, v in given.items() if v is not None})


def _as_config(config: EncoderConfig | Mapping[str, Any]) -> EncoderConfig:
    if isinstance(config, Mapping):
        config = EncoderConfig.from_dict(dict(config))
    if not isinstance(config, EncoderConfig):
        raise ConfigError(f"config should be an EncoderConfig or a dict, got {type(config).__name__}")
    return config


class _EmbedActor:
    """One per actor: loads the encoder once, then embeds a ``pyarrow.Table`` batch per call."""

    def __init__(self, config: dict, job: RayJob, embedding_column: str, origin_column: str | None,
                 with_actor_stats: bool):  # fmt: skip
        import torch

        torch.set_num_threads(max(1, int(job.cpus_per_actor)))
        from ..encoder.encoder import Encoder

        self.encoder = Encoder.from_config(EncoderConfig.from_dict(config), embedding_cache=None,
                                           cache_dir=job.cache_dir, progress=False)  # fmt: skip
        self.job = job
        self.options = job.options.replace(show_progress=False, use_embedding_cache=False)
        self.embedding_column = embedding_column
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

        column = self.job.text_column
        if column not in table.column_names:
            raise InputError(f"{self._where(table)}: no column {column!r} (columns: {table.column_names})")
        if self.embedding_column in table.column_names:
            raise InputError(f"{self._where(table)}: already has a column {self.embedding_column!r}")
        texts = table.column(column).to_pylist()
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise InputError(f"{self._where(table)}: column {column!r} has a "
                                 f"{type(t).__name__} value (row {i} of a batch), expected strings")  # fmt: skip
        try:
            vectors = self.encoder.encode(texts, options=self.options)
        except PrompteolError as exc:
            raise type(exc)(f"{self._where(table)}: {exc}") from None
        out = table.append_column(self.embedding_column, embedding_array(vectors, self.job.output_dtype))
        if self.with_actor_stats:
            n = table.num_rows
            out = out.append_column(ACTOR_COLUMN, pa.array([self.actor] * n, pa.string()))
            out = out.append_column(RSS_COLUMN, pa.array([max_rss_mib()] * n, pa.float64()))
        return out


def embed_dataset(
    ds: ray.data.Dataset,
    config: EncoderConfig | Mapping[str, Any],
    job: RayJob | None = None,
    *,
    options: EncodeOptions | None = None,
    embedding_column: str = "embedding",
    origin_column: str | None = None,
    with_actor_stats: bool = False,
    block_batches: bool = False,
    max_restarts: int | None = None,
    **fields: Any,
) -> ray.data.Dataset:
    """``ds`` with an ``embedding_column`` of PromptEOL vectors of the job's text column (lazy, like any Dataset).

    - ``config``: an :class:`~prompteol.EncoderConfig` (or its :meth:`~prompteol.EncoderConfig.to_dict`);
      every actor loads ``Encoder.from_config(config)`` once, without the embedding cache;
    - ``job`` (:class:`RayJob`) and/or its fields as keywords (``num_actors=2``, ``batch_rows=...``,
      ``output_dtype=...``, ``cache_dir=...``, ``text_column=...``), and the call's ``options`` (or
      ``batch_size``, ``max_batch_tokens``, ``normalize`` as keywords);
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
    ray = ray_module()
    config = _as_config(config)
    job = _job(job, options, **fields)
    job.check_device(config)
    if isinstance(job.num_actors, tuple):
        sizes = {"min_size": job.num_actors[0], "max_size": job.num_actors[1]}
    else:
        sizes = {"size": job.num_actors}
    # one batch at a time per actor: an actor that is ready first does not queue up the batches of
    # those still loading the model, and the last batches spread over every actor
    compute = ray.data.ActorPoolStrategy(**sizes, max_tasks_in_flight_per_actor=1)
    kwargs = {"config": config.to_dict(), "job": job, "embedding_column": embedding_column,
              "origin_column": origin_column, "with_actor_stats": with_actor_stats}  # fmt: skip
    remote_args: dict[str, Any] = {} if max_restarts is None else {"max_restarts": max_restarts}
    with warnings.catch_warnings():
        # Ray 2.60 has no named parameter for max_restarts yet, and warns about the generic ones
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        return ds.map_batches(
            _EmbedActor, fn_constructor_kwargs=kwargs, batch_size=None if block_batches else job.batch_rows,
            batch_format="pyarrow", num_cpus=job.cpus_per_actor, num_gpus=job.gpus_per_actor or None,
            compute=compute, **remote_args,
        )  # fmt: skip


def encode_files(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    output: str | os.PathLike,
    config: EncoderConfig | Mapping[str, Any],
    job: RayJob | None = None,
    *,
    options: EncodeOptions | None = None,
    shard_rows: int | None = None,
    address: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """Embed Parquet / JSONL files (a file, a folder, a glob or a list) into ``output`` (a folder of
    Parquet files, one per shard, every input column kept plus ``embedding``); resumable. ``job`` and
    ``options`` (or their fields as keywords) as :func:`embed_dataset` takes them. Returns a summary
    (rows, seconds, sentences/s, rows and peak RSS per actor). See the module docstring."""
    t0 = time.perf_counter()
    config = _as_config(config)
    job = _job(job, options, **fields)  # every option checked, before any file is read
    job.check_device(config)
    if shard_rows is not None:
        check_positive("shard_rows", shard_rows, integer=True)
    infos = validate_inputs(list_input_files(inputs), job.text_column, reserved=("embedding",), full=True)
    shards = plan_shards(infos, shard_rows)
    out_dir = Path(output).expanduser().resolve()
    settings = manifest_settings(config, text_column=job.text_column, shard_rows=shard_rows,
                                 normalize=job.options.normalize, output_dtype=job.output_dtype)  # fmt: skip
    manifest = {
        "manifest_version": MANIFEST_VERSION, "prompteol_version": __version__, "settings": settings,
        "config": config.to_dict(), "inputs": [i.to_dict() for i in infos],
        "shards": [{"name": s.name, "source": s.path, "rows": [s.start, s.stop]} for s in shards],
    }  # fmt: skip
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"output {out_dir} is a file; the Ray engine writes a folder of Parquet files")
    out_dir.mkdir(parents=True, exist_ok=True)
    with output_lock(out_dir, folder=True):
        prepare_manifest(out_dir, manifest)
        return _encode_shards(shards, infos, out_dir, config, job, address, t0)


def _encode_shards(shards: list[Shard], infos: list[InputFile], out_dir: Path, config: EncoderConfig, job: RayJob,
                   address: str | None, t0: float) -> dict[str, Any]:  # fmt: skip
    """The rest of :func:`encode_files`, with the output folder prepared and locked."""
    stale = remove_temporary(out_dir)
    pending = [s for s in shards if not shard_complete(out_dir / s.name, s.num_rows)]
    summary: dict[str, Any] = {
        "input_files": len(infos), "empty_files": sum(1 for i in infos if i.num_rows == 0),
        "shards": len(shards), "shards_skipped": len(shards) - len(pending), "shards_written": 0,
        "temporary_files_removed": stale, "rows_total": sum(s.num_rows for s in shards), "rows": 0,
        "output": str(out_dir), "num_actors": job.num_actors, "cpus_per_actor": job.cpus_per_actor,
        "gpus_per_actor": job.gpus_per_actor, "batch_rows": job.batch_rows, "actors": {},
        "validate_s": round(time.perf_counter() - t0, 3),
    }  # fmt: skip
    if not pending:
        summary.update(wall_s=round(time.perf_counter() - t0, 3), rows_per_s=0.0)
        return summary

    ray = ray_module()
    local = not (address or os.environ.get("RAY_ADDRESS"))
    if local and not ray.is_initialized():
        cores = os.cpu_count() or 1
        need = job.actors * job.cpus_per_actor
        if need > cores:
            raise ConfigError(f"{job.actors} actors x {job.cpus_per_actor:g} CPUs need {need:g} "
                              f"CPUs; this machine has {cores}: lower --num-actors or --cpus-per-actor")  # fmt: skip
    t_resolve = time.perf_counter()
    if local:
        # one machine: fetch / convert the model once here (the actors then only load it), and an
        # unknown model fails before Ray starts
        from ..models.loading import resolve_model

        resolve_model(config.model, cache_dir=job.cache_dir, progress=job.progress, revision=config.revision)
    t_ray = time.perf_counter()
    summary["resolve_model_s"] = round(t_ray - t_resolve, 3)
    started = start_ray(address, quiet=job.quiet)
    summary["ray_init_s"] = round(time.perf_counter() - t_ray, 3)
    try:
        check_resources(ray, job, strict=local)
        t_run = time.perf_counter()
        # one machine: an actor that dies (out of memory, most likely) fails the run at once and a
        # rerun resumes from the finished shards, rather than being restarted into the same death;
        # this also keeps Ray's "E ... core_worker.cc" line about restarts out of a successful run
        assembler = _run_pipeline(ray, pending, out_dir, config, job, max_restarts=0 if local else None)
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


def _run_pipeline(ray, pending: list[Shard], out_dir: Path, config: EncoderConfig, job: RayJob,
                  max_restarts: int | None = None) -> Assembler:  # fmt: skip
    """Read, embed and write the pending shards; returns the assembler (what was written, per-actor stats)."""
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # shards come back in order: the driver streams them to disk
    ctx.enable_progress_bars = bool(job.progress)
    if job.quiet:
        logging.getLogger("ray.data").setLevel(logging.WARNING)
    if not job.progress:  # asked for: no need to be told
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    items = read_pieces(pending, job.batch_rows)
    try:
        ds = ray.data.from_items(items, override_num_blocks=len(items))
    except TypeError:  # ray < 2.10
        ds = ray.data.from_items(items, parallelism=len(items))
    try:  # a few shards read at once: reading is cheap next to encoding
        read_pool = ray.data.TaskPoolStrategy(size=max(1, min(len(items), job.actors + 1)))
    except (AttributeError, TypeError):  # older ray: no TaskPoolStrategy(size=...)
        read_pool = None
    # num_cpus=0: the readers never wait for a CPU that the actors hold
    ds = ds.map_batches(read_shards, fn_kwargs={"text_column": job.text_column, "batch_rows": job.batch_rows},
                        batch_size=1, batch_format="pyarrow", num_cpus=0, compute=read_pool)  # fmt: skip
    ds = embed_dataset(ds, config, job, origin_column=SOURCE_COLUMN, with_actor_stats=True, block_batches=True,
                       max_restarts=max_restarts)  # fmt: skip
    metadata = {"version": __version__, "config": config.to_dict(), "normalize": job.options.normalize,
                "output_dtype": job.output_dtype, "text_column": job.text_column}  # fmt: skip
    assembler = Assembler(pending, out_dir, metadata)
    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            assembler.add(batch)
    except BaseException as exc:
        assembler.abort()
        user = user_error(exc) if isinstance(exc, Exception) else None
        if user is not None and user is not exc:
            raise user from None  # the message alone, without Ray's wrapping and remote traceback
        raise
    missing = [s.name for s in pending if s.name not in set(assembler.done)]
    if missing:
        raise RuntimeError(f"Ray returned no rows for {len(missing)} shards ({missing[:3]}); rerun to resume")
    return assembler
