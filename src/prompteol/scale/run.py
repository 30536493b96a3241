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

import logging
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
from ..resume import differences, read_record
from .grid import CELL_SCHEMA, Cell, build_cells, transfer_tag
from .memory import resolve_device
from .plan import PROBE_SENTENCES, CellPlan, ModelPlan, SweepPlanner, error_text, fmt_seconds, loaded_dtype, param_count

__all__ = ["SweepOptions", "SweepResult", "run_sweep", "PROBE_SENTENCES", "host_info", "PARTIAL_SCHEMA", "partial_path"]

log = logging.getLogger(__name__)

#: version tag of a cell's partial record (``<cell id>.partial.json``: the tasks finished so far)
PARTIAL_SCHEMA = "prompteol.scale-partial/1"
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
        """The options that make a cell's file name differ from the defaults' (an explicit dtype is one; a
        transfer classifier other than lbfgs or several seeds, for cells with transfer tasks)."""
        return {**self.encoder_options, **({"dtype": self.dtype} if self.dtype != "auto" else {}),
                **transfer_tag(self.tasks, self.classifier, self.seeds)}  # fmt: skip


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


# ------------------------------------------------------------------------------------ the sweep
class _Sweep(SweepPlanner):
    """A sweep: its plan (:class:`~prompteol.scale.plan.SweepPlanner`), then its cells run model by model."""

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
                    plan.num_parameters, plan.parameters_source = param_count(plan.model, encoder)
                    self.resolve_demos(plan, plan.num_parameters)
                except Exception as exc:  # noqa: BLE001
                    plan.error = f"loading {plan.model} failed: {error_text(exc)}"
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
            data = read_record(path)
            old = data["partial"]["identity"]
            tasks = dict(data["tasks"])
        except (ValueError, KeyError, TypeError):
            log.warning("%s is unreadable; its tasks run again", path)
            return {}, fresh
        changed = sorted({key.split(".")[0] for key, _, _ in differences(old, identity)})
        if changed:
            self.out.print(f"  {path.name} was computed with another {', '.join(changed)}; its tasks run again")
            return {}, fresh
        data["tasks"] = {k: v for k, v in tasks.items() if k in {t.name for t in self.task_list}}
        return {k: {kk: vv for kk, vv in v.items() if kk != "run"} for k, v in data["tasks"].items()}, data

    def run_cell(self, cp: CellPlan, plan: ModelPlan, base, tag: str) -> None:
        from ..evaluation import evaluate

        opts = self.opts
        self.out.print(f"{tag} running {cp.cell.id} ...")
        started, t0 = _now(), time.perf_counter()
        dtype = loaded_dtype(base)
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
                               f"{fmt_seconds(res['elapsed_s']['total'])})")  # fmt: skip

            results = evaluate(encoder, self.task_list, data_dir=self.root, mode=opts.mode,
                               options=opts.encode.replace(show_progress=opts.progress), classifier=opts.classifier,
                               seeds=opts.seeds, done=done, on_task=on_task)  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - any failure of one cell is recorded; the sweep goes on
            error = error_text(exc)
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
        self.out.print(f"{tag} [green]ok[/green] {cp.cell.id} in {fmt_seconds(wall)} ({scores})")


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
