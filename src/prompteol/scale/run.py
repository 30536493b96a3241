"""The sweep of ``prompteol scale``: every cell one evaluation, one file, resumable.

:func:`run_sweep` does, in order:

1. checks the data of the tasks (before any model is loaded) and lists the cells
   (:func:`~prompteol.scale.grid.build_cells`); a cell whose file says ``status: ok`` is done and
   skipped (its model is not even loaded), a failed one is run again;
2. plans each model that has cells to run: its size before loading
   (:func:`~prompteol.scale.memory.model_size`), the dtype of the memory rule
   (:func:`~prompteol.scale.memory.choose_dtype`), then the **throughput probe**: the model is
   loaded once and encodes a fixed sample of 64 STS-B dev sentences (after a 4-sentence warm-up,
   without the embedding cache); the estimate of a cell is the number of sentences its tasks
   encode divided by the measured rate (the embedding cache may make it faster; the plan shows
   how many vectors of each cell's encoder are cached already);
3. prints the plan (cells, dtype, sentences, estimate, state); ``dry_run`` stops here;
4. runs the cells model by model: each model is loaded once (the first model's probe load is
   kept and reused) and every cell of it is ``encoder.derive(demonstrations=..., layer=...)``
   evaluated by :func:`prompteol.evaluation.evaluate`; each cell's record is written
   atomically as soon as it is done. Any exception of a cell (or of its model's load) is recorded
   in the cell's file as ``status: failed`` with the message, and the sweep goes on.

Returns a :class:`SweepResult`; the CLI exits non-zero when any cell failed.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..encoder.encode_options import EncodeOptions
from ..encoder.prompts.templates import Demonstration
from ..errors import ConfigError
from ..fileio import FileLock, write_json_atomic
from .grid import CELL_SCHEMA, Cell, build_cells, cell_state, resolve_demo
from .memory import CHARS_PER_TOKEN, DtypeDecision, ModelSize, choose_dtype, model_size, resolve_device

__all__ = ["SweepOptions", "SweepResult", "run_sweep", "PROBE_SENTENCES", "host_info", "PARTIAL_SCHEMA", "partial_path"]

log = logging.getLogger(__name__)

#: sentences of the throughput probe (the first unique ones of STS-B dev, as the harness presents them)
PROBE_SENTENCES = 64
_WARMUP = 4
#: version tag of a cell's partial record (``<cell id>.partial.json``: the tasks finished so far)
PARTIAL_SCHEMA = "prompteol.scale-partial/1"
#: weights (bytes) from which freeing a model runs the garbage collector
_COLLECT_ABOVE = 64 * 2**20


@dataclass
class SweepOptions:
    """What a sweep runs; the CLI fills it from its flags."""

    models: list[str]
    demos: list[str]
    output: Path
    layers: list[int] = field(default_factory=list)
    tasks: str = "sts"
    mode: str = "test"
    data_dir: str | None = None
    #: every encode call's options (batch size, token budget, the embedding cache, ...); ``progress`` shows it
    encode: EncodeOptions = field(default_factory=EncodeOptions)
    classifier: str = "lbfgs"
    seeds: int = 1
    #: ``auto`` (the memory rule) or an explicit dtype
    dtype: str = "auto"
    #: the other encoder options, for every cell (template, pooling, device, quantization, ...)
    encoder_options: dict[str, Any] = field(default_factory=dict)
    cache_dir: str | None = None
    dry_run: bool = False
    probe: bool = True
    progress: bool = False
    #: the command line, recorded in every cell
    command: str = ""
    #: demonstration settings resolved by the caller: ``{setting: (preset name, demonstrations)}``
    #: (the study queue names a cell ``default`` and gives the preset it found itself)
    demo_overrides: dict[str, tuple[str | None, list[Demonstration]]] = field(default_factory=dict)

    def tag_options(self) -> dict[str, Any]:
        """The options that make a cell's file name differ from the defaults' (an explicit dtype is one)."""
        return {**self.encoder_options, **({"dtype": self.dtype} if self.dtype != "auto" else {})}


@dataclass
class CellPlan:
    cell: Cell
    state: str  # done | pending | retry | unreadable
    preset: str | None = None
    demonstrations: list[Demonstration] | None = None
    error: str | None = None
    sentences: int = 0
    cached: int | None = None
    estimate_s: float | None = None

    @property
    def runs(self) -> bool:
        return self.state != "done"


@dataclass
class ModelPlan:
    model: str
    cells: list[CellPlan]
    size: ModelSize | None = None
    decision: DtypeDecision | None = None
    error: str | None = None
    rate: float | None = None  # sentences per second of the probe
    load_s: float | None = None
    num_parameters: int | None = None
    parameters_source: str | None = None
    encoder: Any = None  # the probe's encoder, kept for the sweep (first model only)


@dataclass
class SweepResult:
    cells: list[Cell]
    ok: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    dry_run: bool = False

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def summary(self, output: Path) -> str:
        n = len(self.cells)
        if self.dry_run:
            head = f"scale (dry run): {n} cells, {len(self.skipped)} already done, {n - len(self.skipped)} to run"
            if self.failed:
                head += f"; {len(self.failed)} would fail: {', '.join(self.failed)}"
            return head
        parts = [f"{len(self.ok)} ok", f"{len(self.skipped)} already done (skipped)"]
        line = f"scale: {n} cells: {', '.join(parts)}, {len(self.failed)} failed"
        if self.failed:
            line += f" (recorded in their files and retried on the next run: {', '.join(self.failed)})"
        return line + f"; results in {output}"


# ------------------------------------------------------------------------------------ helpers
def host_info(device: str = "cpu") -> dict[str, Any]:
    """Where a cell ran (the ``cell.host`` block of a cell record): host name, CPU and its flags, threads,
    platform, GPU; from :func:`prompteol.records.machine_info`, the one collector."""
    from ..records import machine_info, package_versions

    machine = machine_info(device=device)
    info: dict[str, Any] = {"hostname": machine["hostname"], "cpu": machine["processor"], "cpus": machine["cpus"],
                            "platform": machine["platform"], "python": package_versions()["python"],
                            "device": device, "flags": machine["flags"]}  # fmt: skip
    if "torch_cpu_capability" in machine:  # torch is importable
        info["torch_threads"] = machine["threads"]
        if machine.get("gpu"):
            info["gpu"] = machine["gpu"]
    return info


def partial_path(cell_file: Path) -> Path:
    """``<cell id>.partial.json`` beside the cell file: the tasks of an unfinished cell."""
    return cell_file.with_name(cell_file.name.removesuffix(".json") + ".partial.json")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _error_text(exc: BaseException) -> str:
    text = str(exc).strip() or repr(exc)
    return f"{type(exc).__name__}: {text}"


def _unique(data) -> list[str]:
    from ..evaluation.data import StsPairs

    if isinstance(data, StsPairs):
        return list(dict.fromkeys(data.sentences1 + data.sentences2))
    return list(dict.fromkeys(s for ex in data.values() for s in ex.sentences()))


def task_sentences(task_list, root) -> dict[str, list[str]]:
    """Each task's unique sentences (what the harness encodes for it)."""
    from ..evaluation.data import load_task_data

    return {t.name: _unique(load_task_data(t, root)) for t in task_list}


def probe_sample(root, fallback: list[str]) -> list[str]:
    """The first :data:`PROBE_SENTENCES` unique STS-B dev sentences (else the tasks' own first ones)."""
    try:
        from ..evaluation.data import load_sts_pairs

        pairs = load_sts_pairs("STSBenchmark-dev", root)
        sentences = list(dict.fromkeys(s for pair in zip(pairs.sentences1, pairs.sentences2) for s in pair))
    except Exception:  # noqa: BLE001 - no STS-B dev in this data root: the tasks' sentences
        sentences = fallback
    return sentences[:PROBE_SENTENCES]


def measure_rate(encoder, sample: list[str], options: EncodeOptions) -> float:
    """Sentences per second of ``encoder`` on ``sample`` with ``options`` (warm-up first, no embedding cache)."""
    probe = options.replace(use_embedding_cache=False, show_progress=False)
    encoder.encode(sample[:_WARMUP], options=probe)
    t0 = time.perf_counter()
    encoder.encode(sample, options=probe)
    return len(sample) / max(time.perf_counter() - t0, 1e-9)


def _fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 90:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _param_count(model_ref: str, encoder) -> tuple[int, str]:
    from ..models.registry import PACKAGED_MODELS

    spec = PACKAGED_MODELS.get(model_ref)
    if spec is not None and spec.num_parameters:
        return spec.num_parameters, "registry"
    return int(sum(p.numel() for p in encoder.model.parameters())), "counted after load"


def _loaded_dtype(encoder) -> str:
    try:
        return str(next(encoder.model.parameters()).dtype).removeprefix("torch.")
    except StopIteration:  # pragma: no cover
        return encoder.config.dtype


# ------------------------------------------------------------------------------------ the sweep
class _Sweep:
    def __init__(self, opts: SweepOptions, console):
        from ..evaluation import resolve_data_dir, resolve_tasks, verify_data

        self.opts = opts
        self.out = console
        self.task_list = resolve_tasks(opts.tasks)
        self.root = resolve_data_dir(opts.data_dir)
        verify_data(self.root, self.task_list)  # a missing or changed file fails here, before any model is loaded
        from ..encoder.config import EncoderConfig

        bad = sorted(set(opts.encoder_options) & {"model", "demonstrations", "layer", "dtype"})
        if bad:
            raise ConfigError(f"the sweep sets {bad} per cell; do not pass them as encoder options")
        EncoderConfig.from_options(**opts.encoder_options)  # a bad option fails before anything runs
        self.device = resolve_device(opts.encoder_options.get("device", "cpu"))
        self.cells = build_cells(opts.models, opts.demos, opts.layers, opts.tasks, opts.mode, opts.tag_options())
        self.result = SweepResult(self.cells, dry_run=opts.dry_run)
        self._sentences: dict[str, list[str]] | None = None
        self.host = host_info(self.device)

    # ---------------------------------------------------------------- data
    @property
    def sentences(self) -> dict[str, list[str]]:
        if self._sentences is None:
            self._sentences = task_sentences(self.task_list, self.root)
        return self._sentences

    def n_sentences(self) -> int:
        return sum(len(v) for v in self.sentences.values())

    def prompt_tokens(self, demos: list[Demonstration]) -> int:
        """The longest prompt of the cell, in tokens, estimated from characters (no tokenizer yet)."""
        from ..encoder.config import EncoderConfig

        cfg = EncoderConfig.from_options(**self.opts.encoder_options)
        longest = max((len(s) for v in self.sentences.values() for s in v), default=0)
        sentence_tokens = math.ceil(longest / CHARS_PER_TOKEN)
        if cfg.max_length:
            sentence_tokens = min(sentence_tokens, cfg.max_length)
        try:
            template = len(cfg.template.render("", tuple(demos)))
        except Exception:  # noqa: BLE001 - a template without demonstrations: the cell fails later, with the message
            template = len(cfg.template.render("", ()))
        return sentence_tokens + math.ceil(template / CHARS_PER_TOKEN) + 2

    # ---------------------------------------------------------------- loading
    def load(self, model: str, dtype: str):
        from ..encoder.config import EncoderConfig
        from ..encoder.encoder import Encoder

        config = EncoderConfig.from_options(model=model, dtype=dtype, **self.opts.encoder_options)
        return Encoder.from_config(config, embedding_cache=self.opts.encode.use_embedding_cache,
                                   cache_dir=self.opts.cache_dir, progress=self.opts.progress)  # fmt: skip

    @staticmethod
    def weights_bytes(encoder) -> int:
        try:
            return int(sum(p.numel() * p.element_size() for p in encoder.model.parameters()))
        except Exception:  # noqa: BLE001
            return _COLLECT_ABOVE

    @staticmethod
    def collect(weights: int) -> None:
        """After the last reference to a model is dropped: collect reference cycles (a full ``gc`` pass
        costs ~1 s in a large process, so only when the weights are big enough to matter) and return
        the CUDA cache, so the next model's memory check sees the memory free."""
        if weights < _COLLECT_ABOVE:
            return
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:  # pragma: no cover
            pass

    def decide(self, plan: ModelPlan) -> DtypeDecision:
        size = plan.size or ModelSize(None, None, "unknown")
        tokens = max((self.prompt_tokens(c.demonstrations or []) for c in plan.cells if c.runs), default=1)
        opts = self.opts
        return choose_dtype(size, opts.dtype, batch_size=opts.encode.batch_size, prompt_tokens=tokens, device=self.device,
                            quantization=opts.encoder_options.get("quantization"),
                            max_batch_tokens=opts.encode.max_batch_tokens)  # fmt: skip

    # ---------------------------------------------------------------- planning
    def plan(self) -> list[ModelPlan]:
        by_model: dict[str, list[CellPlan]] = {}
        for cell in self.cells:
            state = cell_state(cell.path(self.opts.output))
            if state == "unreadable":
                log.warning("%s is unreadable; the cell runs again", cell.path(self.opts.output))
            by_model.setdefault(cell.model, []).append(CellPlan(cell, state))
        plans = [ModelPlan(model, cells) for model, cells in by_model.items()]
        todo = [p for p in plans if any(c.runs for c in p.cells)]
        # the first model is probed last and kept loaded: its sweep reuses the probe's load
        for i, plan in enumerate(todo[1:] + todo[:1]):
            self.plan_model(plan, keep=(i == len(todo) - 1) and not self.opts.dry_run)
        return plans

    def resolve_demos(self, plan: ModelPlan, params: int | None) -> None:
        for cp in plan.cells:
            if not cp.runs:
                continue
            if cp.cell.demo in self.opts.demo_overrides:
                cp.preset, cp.demonstrations = self.opts.demo_overrides[cp.cell.demo]
                cp.error = None
                continue
            try:
                cp.preset, cp.demonstrations = resolve_demo(cp.cell.demo, plan.model, params)
                cp.error = None
            except Exception as exc:  # noqa: BLE001 - an unknown preset: this cell fails, the others run
                cp.preset, cp.demonstrations, cp.error = None, None, _error_text(exc)

    def plan_model(self, plan: ModelPlan, keep: bool) -> None:
        from ..models.registry import PACKAGED_MODELS

        try:
            plan.size = model_size(plan.model, self.opts.cache_dir)
        except Exception as exc:  # noqa: BLE001
            plan.size = ModelSize(None, None, f"unknown: {_error_text(exc)}")
        spec = PACKAGED_MODELS.get(plan.model)
        pre_params = spec.num_parameters if spec else plan.size.num_parameters
        self.resolve_demos(plan, pre_params)
        plan.decision = self.decide(plan)
        if plan.decision.refused:
            plan.error = f"refused by the memory rule: {plan.decision.reason}"
            return
        n = self.n_sentences()
        for cp in plan.cells:
            cp.sentences = n
        if not self.opts.probe:
            return
        self.out.print(f"probing {plan.model} ({plan.decision.dtype}) ...")
        try:
            t0 = time.perf_counter()
            encoder = self.load(plan.model, plan.decision.dtype or "float32")
            plan.load_s = time.perf_counter() - t0
            first_task = next(iter(self.sentences.values()))
            plan.rate = measure_rate(encoder, probe_sample(self.root, first_task), self.opts.encode)
        except Exception as exc:  # noqa: BLE001 - an unknown model, a broken download, ...: its cells fail
            plan.error = f"loading {plan.model} failed: {_error_text(exc)}"
            log.debug("probe of %s failed", plan.model, exc_info=True)
            return
        plan.num_parameters, plan.parameters_source = _param_count(plan.model, encoder)
        self.resolve_demos(plan, plan.num_parameters)
        for cp in plan.cells:
            if not cp.runs or cp.error:
                continue
            cp.estimate_s = cp.sentences / plan.rate if plan.rate else None
            try:
                derived = encoder.derive(demonstrations=tuple(cp.demonstrations or ()), layer=cp.cell.layer)
                cache = derived.embedding_cache
                cp.cached = cache.count(derived.fingerprint) if cache is not None else None
            except Exception as exc:  # noqa: BLE001 - e.g. a layer out of range, a template without demos
                cp.error = _error_text(exc)
        if keep:
            plan.encoder = encoder
        else:
            weights = self.weights_bytes(encoder)
            encoder = derived = None  # the last references: the model is freed here
            self.collect(weights)

    def print_plan(self, plans: list[ModelPlan]) -> None:
        from rich.table import Table

        table = Table(title=f"prompteol scale: {len(self.cells)} cells -> {self.opts.output}", title_justify="left")
        for col in ("#", "cell (file name without .json)", "dtype", "sentences", "estimate", "cached", "state"):
            table.add_column(col, justify="right" if col in ("#", "sentences", "estimate", "cached") else "left")
        i = 0
        for plan in plans:
            for cp in plan.cells:
                i += 1
                if cp.state == "done":
                    table.add_row(str(i), cp.cell.id, "", "", "", "", "done (skipped)")
                    continue
                dtype = plan.decision.dtype if plan.decision and plan.decision.dtype else "-"
                error = plan.error or cp.error
                if error:
                    state = f"will fail: {error}"
                else:
                    state = {"pending": "to run", "retry": "to run again (failed before)",
                             "unreadable": "to run (unreadable file)"}[cp.state]  # fmt: skip
                cached = "" if cp.cached is None else f"{cp.cached:,}"
                table.add_row(str(i), cp.cell.id, dtype, f"{cp.sentences:,}" if cp.sentences else "",
                              _fmt_s(cp.estimate_s) if not error else "", cached, state)  # fmt: skip
        self.out.print(table)
        for plan in plans:
            if plan.decision and any(c.runs for c in plan.cells):
                rate = (f"{plan.rate:.1f} sentences/s on the probe" if plan.rate
                        else "probe failed" if plan.error else "not probed")  # fmt: skip
                params = f"{plan.num_parameters:,} parameters ({plan.parameters_source})" if plan.num_parameters else ""
                self.out.print(f"  {plan.model}: {plan.decision.reason}; {rate}" + (f"; {params}" if params else ""))
        self.out.print(
            "  estimate = sentences the cell's tasks encode / the probe's rate (64 STS-B dev sentences); the "
            "embedding cache may make a cell faster ('cached' = vectors of that cell's encoder already cached; "
            "an STS and a transfer cell of the same encoder share them, demonstration settings do not); transfer "
            "tasks add their classifier fits"
        )

    # ---------------------------------------------------------------- running
    def record(self, cp: CellPlan, plan: ModelPlan, *, status: str, error: str | None = None,
               results: dict | None = None, dtype: str | None = None, wall_s: float = 0.0,
               started: str | None = None, tb: str | None = None, fingerprint: str | None = None,
               resumed: dict | None = None) -> None:  # fmt: skip
        cell = cp.cell
        block: dict[str, Any] = {
            "schema": CELL_SCHEMA, "id": cell.id, "status": status, "error": error,
            "model": cell.model, "demo": cell.demo, "demo_preset": cp.preset,
            "demonstrations": [d.to_dict() for d in cp.demonstrations] if cp.demonstrations is not None else None,
            "layer": cell.layer, "tasks": cell.tasks, "task_names": [t.name for t in self.task_list],
            "mode": cell.mode, "options": dict(self.opts.encoder_options), "options_tag": cell.options_tag,
            "dtype": dtype, "dtype_requested": self.opts.dtype,
            "memory": plan.decision.to_dict() if plan.decision else None,
            "num_parameters": plan.num_parameters, "num_parameters_source": plan.parameters_source,
            "wall_s": round(wall_s, 3), "model_load_s": round(plan.load_s, 3) if plan.load_s is not None else None,
            "started": started or _now(), "finished": _now(), "command": self.opts.command,
            "host": self.host, "imported_from": None, "fingerprint": fingerprint,
        }  # fmt: skip
        if resumed:
            block["resumed_tasks"] = resumed
        if tb:
            block["traceback"] = tb
        data = dict(results) if results else {}
        data["cell"] = block
        from ..records import provenance

        data["provenance"] = provenance(self.opts.command, device=self.device)
        write_json_atomic(cell.path(self.opts.output), data)
        if status == "ok":
            self.result.ok.append(cell.id)
        else:
            self.result.failed[cell.id] = error or "failed"

    def run_model(self, plan: ModelPlan, counter: Callable[[], str]) -> None:
        todo = [cp for cp in plan.cells if cp.runs]
        if not todo:
            return
        encoder = plan.encoder
        plan.encoder = None
        if plan.error is None and encoder is None:
            plan.decision = self.decide(plan)  # memory may have changed since the plan
            if plan.decision.refused:
                plan.error = f"refused by the memory rule: {plan.decision.reason}"
            else:
                self.out.print(f"loading {plan.model} ({plan.decision.dtype}) ...")
                try:
                    t0 = time.perf_counter()
                    encoder = self.load(plan.model, plan.decision.dtype or "float32")
                    plan.load_s = time.perf_counter() - t0
                    plan.num_parameters, plan.parameters_source = _param_count(plan.model, encoder)
                    self.resolve_demos(plan, plan.num_parameters)
                except Exception as exc:  # noqa: BLE001
                    plan.error = f"loading {plan.model} failed: {_error_text(exc)}"
        try:
            for cp in todo:
                tag = counter()
                if plan.error or cp.error:
                    self.out.print(f"{tag} [red]failed[/red] {cp.cell.id}: {plan.error or cp.error}")
                    self.record(cp, plan, status="failed", error=plan.error or cp.error)
                    continue
                self.run_cell(cp, plan, encoder, tag)
        finally:
            if encoder is not None:
                weights = self.weights_bytes(encoder)
                encoder = None  # the last reference: the model is freed here
                self.collect(weights)

    def partial_identity(self, cp: CellPlan, encoder, dtype: str) -> dict[str, Any]:
        """What computed a cell's tasks: a task of a partial record is reused only when all of it matches."""
        opts = self.opts
        return {"cell": cp.cell.id, "fingerprint": encoder.fingerprint, "dtype": dtype,
                "demonstrations": [d.to_dict() for d in cp.demonstrations or []], "layer": cp.cell.layer,
                "options": dict(opts.encoder_options), "mode": cp.cell.mode, "classifier": opts.classifier,
                "seeds": opts.seeds}  # fmt: skip

    def load_partial(self, path: Path, identity: dict[str, Any]) -> tuple[dict[str, dict], dict[str, Any]]:
        """``(tasks to reuse, the partial record to extend)``; another encoder's record is set aside."""
        fresh = {"partial": {"schema": PARTIAL_SCHEMA, "identity": identity}, "tasks": {}}
        if not path.exists():
            return {}, fresh
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            old = data["partial"]["identity"]
            tasks = dict(data["tasks"])
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("%s is unreadable; its tasks run again", path)
            return {}, fresh
        if old != identity:
            changed = sorted(k for k in set(old) | set(identity) if old.get(k) != identity.get(k))
            self.out.print(f"  {path.name} was computed with another {', '.join(changed)}; its tasks run again")
            return {}, fresh
        data["tasks"] = {k: v for k, v in tasks.items() if k in {t.name for t in self.task_list}}
        return {k: {kk: vv for kk, vv in v.items() if kk != "run"} for k, v in data["tasks"].items()}, data

    def run_cell(self, cp: CellPlan, plan: ModelPlan, base, tag: str) -> None:
        from ..evaluation import evaluate

        opts = self.opts
        self.out.print(f"{tag} running {cp.cell.id} ...")
        started, t0 = _now(), time.perf_counter()
        dtype = _loaded_dtype(base)
        cell_file = cp.cell.path(opts.output)
        ppath = partial_path(cell_file)
        fingerprint = None
        resumed: dict[str, Any] = {}
        try:
            encoder = base.derive(demonstrations=tuple(cp.demonstrations or ()), layer=cp.cell.layer)
            fingerprint = encoder.fingerprint
            done, partial = self.load_partial(ppath, self.partial_identity(cp, encoder, dtype))
            if done:
                resumed = {k: v.get("run", {}) for k, v in partial["tasks"].items()}
                self.out.print(f"  resuming from {ppath.name}: {', '.join(done)} done")

            def on_task(name: str, res: dict) -> None:
                partial["tasks"][name] = {**res, "run": {"finished": _now(), "host": self.host,
                                                         "command": opts.command}}  # fmt: skip
                write_json_atomic(ppath, partial)
                self.out.print(f"  {name}: {res['score']:.2f} ({res['sentences']:,} sentences, "
                               f"{_fmt_s(res['elapsed_s']['total'])})")  # fmt: skip

            results = evaluate(encoder, self.task_list, data_dir=self.root, mode=opts.mode,
                               options=opts.encode.replace(show_progress=opts.progress), classifier=opts.classifier,
                               seeds=opts.seeds, done=done, on_task=on_task)  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - any failure of one cell is recorded; the sweep goes on
            error = _error_text(exc)
            self.out.print(f"{tag} [red]failed[/red] {cp.cell.id}: {error}")
            self.record(cp, plan, status="failed", error=error, dtype=dtype, wall_s=time.perf_counter() - t0,
                        started=started, tb="".join(traceback.format_exception(exc))[-4000:],
                        fingerprint=fingerprint)  # fmt: skip
            return
        # the cell's own time: this run plus the tasks finished by earlier runs
        wall = time.perf_counter() - t0 + sum(float(r["elapsed_s"]["total"]) for r in done.values())
        self.record(cp, plan, status="ok", results=results, dtype=dtype, wall_s=wall, started=started,
                    fingerprint=fingerprint, resumed=resumed or None)  # fmt: skip
        ppath.unlink(missing_ok=True)  # everything it held is in the cell file now
        avg = results.get("averages", {})
        scores = ", ".join(f"{k} {v:.2f}" for k, v in avg.items()) or ", ".join(
            f"{k} {v['score']:.2f}" for k, v in list(results["tasks"].items())[:4]
        )
        self.out.print(f"{tag} [green]ok[/green] {cp.cell.id} in {_fmt_s(wall)} ({scores})")


def run_sweep(opts: SweepOptions, console=None) -> SweepResult:
    """Run (or with ``opts.dry_run`` only plan) the sweep; see the module docstring."""
    if console is None:
        from rich.console import Console

        console = Console(soft_wrap=True)
    sweep = _Sweep(opts, console)
    if opts.dry_run:
        return _plan_and_run(sweep, opts)
    lock = FileLock(Path(opts.output) / ".scale.lock",
                    f"another `prompteol scale` is writing into {opts.output} now; wait for it or stop it")
    with lock:
        return _plan_and_run(sweep, opts)


def _plan_and_run(sweep: _Sweep, opts: SweepOptions) -> SweepResult:
    plans = sweep.plan()
    sweep.print_plan(plans)
    result = sweep.result
    result.skipped = [cp.cell.id for p in plans for cp in p.cells if cp.state == "done"]
    if opts.dry_run:
        for plan in plans:
            for cp in plan.cells:
                if cp.runs and (plan.error or cp.error):
                    result.failed[cp.cell.id] = plan.error or cp.error or ""
        return result
    total = sum(1 for p in plans for cp in p.cells if cp.runs)
    done = iter(range(1, total + 1))

    def counter() -> str:
        return f"[{next(done)}/{total}]"

    for plan in plans:
        sweep.run_model(plan, counter)
    return result
