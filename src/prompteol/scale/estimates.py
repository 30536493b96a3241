"""The study queue's time estimates (``prompteol scale queue --status``).

Measured encode rates per model and dtype from the finished tasks' records, each step's sentence count, and
the searches' correction by the wall time the finished searches took. A mixin of
:class:`prompteol.scale.study._Study` (it reads ``opts``, ``steps``, ``log``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..evaluation.tasks import TASK_GROUPS
from .steps import (
    DEMO_SEARCH,
    SETTINGS_SEARCH,
    STS_SENTENCES,
    STSB_DEV_SENTENCES,
    TRANSFER_SENTENCES,
    Step,
    StudyOptions,
    fast_dtype,
)

__all__ = ["StudyEstimates", "SEARCH_KINDS"]

#: the step kinds whose estimate is scaled by the finished ones' measured wall time (:meth:`StudyEstimates.search_factors`)
SEARCH_KINDS = ("demos", "methods")
_TRANSFER = frozenset(TASK_GROUPS["transfer"])


class StudyEstimates:
    opts: StudyOptions
    steps: list[Step]
    log: dict[str, Any]

    def _measured(self) -> dict[tuple[str, str], list[tuple[str, str, dict]]]:
        """Per (model, dtype): ``(demo setting, task name, task result)`` of every finished task (cells and partial
        records), from the records of this machine's thread count and CPU kind (AMX, AVX512-BF16 or neither)
        where such records exist (else the same threads, else the same CPU kind, else any)."""
        here = self.host()
        threads, kind = here["torch_threads"], here["cpu_kind"]
        per: dict[tuple[str, str], dict[tuple[bool, bool], list[tuple[str, str, dict]]]] = {}
        for folder in (self.opts.cells_dir, self.opts.precision_dir):
            for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
                for model, dtype, demo, host, name, task in _measured_tasks(path):
                    match = (host.get("torch_threads") == threads, _cpu_kind(host.get("flags") or {}) == kind)
                    per.setdefault((model, dtype), {}).setdefault(match, []).append((demo, name, task))
        return {key: groups[max(groups)] for key, groups in per.items()}

    def rates(self) -> dict[tuple[str, str], float]:
        """Measured sentences/s per (model, dtype) on the STS tasks (7-task cells and STS-B dev): the median over
        the finished tasks of :meth:`_measured` of their encoded sentences / encode seconds. A median, because a
        task's time may include a pause of the queue (slower) or vectors read from the embedding cache (faster)."""
        import statistics

        out = {}
        for key, tasks in self._measured().items():
            got = [_sentences(task) / _encode_s(task) for _, name, task in tasks if name not in _TRANSFER and _timed(task)]
            if got:
                out[key] = statistics.median(got)
        return out

    def cost_ratios(self, rates: dict[tuple[str, str], float]) -> dict[tuple[str, ...], float]:
        """How much longer than :meth:`rates` says a cell takes, measured: ``("transfer",)``: the transfer tasks'
        seconds per sentence (longer sentences, the classifier fits) over the STS seconds per sentence of the same
        model and demonstration setting, the median over the settings that ran some; ``("demo", model, setting)``:
        the model's STS rate over its rate in that setting's cells (a demonstration lengthens the prompt,
        Contrastive Prompting adds a forward). Unmeasured: 1."""
        import statistics

        out: dict[tuple[str, ...], float] = {}
        transfer = []
        for key, tasks in self._measured().items():
            base = rates.get(key)
            if not base:
                continue
            spent: dict[str, list[float]] = {}  # demo setting -> [transfer seconds, transfer sentences]
            by_demo: dict[str, list[float]] = {}
            for demo, name, task in tasks:
                if not _timed(task):
                    continue
                if name in _TRANSFER:  # the task's whole time: encoding and its classifier fits
                    got = spent.setdefault(demo, [0.0, 0.0])
                    got[0] += float((task.get("elapsed_s") or {}).get("total") or _encode_s(task))
                    got[1] += _sentences(task)
                else:
                    by_demo.setdefault(demo, []).append(_sentences(task) / _encode_s(task))
            for demo, got in by_demo.items():
                out[("demo", key[0], demo)] = base / statistics.median(got)
            for demo, (seconds, sentences) in spent.items():  # against the STS rate of the same setting
                transfer.append(seconds / sentences * (statistics.median(by_demo[demo]) if demo in by_demo else base))
        if transfer:
            out[("transfer",)] = statistics.median(transfer)
        return out

    def rate(self, model: str, dtype: str, rates: dict[tuple[str, str], float]) -> float | None:
        from ..models.registry import PACKAGED_MODELS

        dtype = "float32" if dtype == "auto" else dtype
        if (model, dtype) in rates:
            return rates[(model, dtype)]
        other = "float32" if dtype == "bfloat16" else "bfloat16"
        if (model, other) in rates:  # measured in the other dtype: the typical ratio on this CPU
            from ..records import native_bf16

            ratio = 2.5 if native_bf16() else 0.2  # bf16 / fp32 speed, docs/performance.md
            return rates[(model, other)] * (ratio if dtype == "bfloat16" else 1 / ratio)
        params = {m: s.num_parameters for m, s in PACKAGED_MODELS.items()}
        for (m, dt), r in sorted(rates.items()):
            if dt == dtype and m in params and model in params:  # scaled by parameters
                return r * params[m] / params[model]
        return None

    def sentences(self, step: Step) -> int:
        if step.kind == "precision":
            return 2 * STSB_DEV_SENTENCES
        if step.kind == "demos":
            screen = 0 if step.params.get("screen_on") else DEMO_SEARCH["max_candidates"] * 2 * DEMO_SEARCH["max_pairs"]
            return screen + (DEMO_SEARCH["rescore"] + 1) * _split_sentences(step)
        if step.kind == "methods":
            return 70 * 2 * SETTINGS_SEARCH["max_pairs"] + SETTINGS_SEARCH["finalists"] * 1382
        if step.kind == "plain-layers":  # before the selection: the usual two layers
            return STS_SENTENCES * (len(self.cell_files(step)) if self.selection(step.model) is not None else 2)
        return STS_SENTENCES if step.params.get("tasks", "sts") == "sts" else TRANSFER_SENTENCES

    def estimate(self, step: Step, rates: dict[tuple[str, str], float],
                 factors: dict[tuple[str, str | None], float] | None = None, whole: bool = False,
                 ratios: dict[tuple[str, ...], float] | None = None) -> float | None:  # fmt: skip
        """Seconds ``step`` should take: its sentences (``whole``: all of them, else those not yet encoded) at the
        measured rate; a search (``demos``, ``methods``) times ``factors`` (:meth:`search_factors`) where known; a
        cell times its kind's ``ratios`` (:meth:`cost_ratios`) where measured."""
        rate = self.rate(step.model, fast_dtype(step.model), rates)
        if not rate:
            return None
        seconds = max(0, self.sentences(step) - (0 if whole else self.finished_sentences(step))) / rate
        if ratios and step.kind == "cell":
            seconds *= ratios.get(("demo", step.model, str(step.params.get("demo"))), 1.0)
            if step.params.get("tasks", "sts") == "transfer":
                seconds *= ratios.get(("transfer",), 1.0)
        if step.kind == "precision" and fast_dtype(step.model) != "float32":
            f32 = self.rate(step.model, "float32", rates)
            seconds = STSB_DEV_SENTENCES / rate + (STSB_DEV_SENTENCES / f32 if f32 else 0)
        if factors and step.kind in SEARCH_KINDS:
            seconds *= factors.get((step.kind, step.model), factors.get((step.kind, None), 1.0))
        return seconds

    def cell_files(self, step: Step, folder: Path | None = None) -> list[list[Path]]:
        raise NotImplementedError  # :meth:`prompteol.scale.study._Study.cell_files`

    def selection(self, model: str) -> dict | None:
        raise NotImplementedError  # :meth:`prompteol.scale.study._Study.selection`

    def finished_sentences(self, step: Step) -> int:
        """Sentences a started step already encoded: the tasks of its cells' partial records, a demonstration
        search's scored candidates (one JSONL line each, screen and rescore); a resumed step costs the rest."""
        if step.kind == "demos":
            return self._demos_done(step)
        if step.kind == "precision" or step.kind in SEARCH_KINDS:
            return 0
        from .run import partial_path

        done = 0
        for variants in self.cell_files(step):
            for path in variants:
                tasks = _partial_tasks(partial_path(path))
                if tasks:
                    done += sum(int(t.get("sentences") or 0) for t in tasks.values())
                    break
        return done

    def _demos_done(self, step: Step) -> int:
        tag = "leakfree" if step.params["split"] == "stsb-train-heldout" else "stsb-dev"
        folder = self.opts.demos_dir(step.model)
        ds = DEMO_SEARCH
        screened = 0 if step.params.get("screen_on") else min(_scored_lines(folder / f"{tag}.jsonl"), ds["max_candidates"])
        rescored = min(_scored_lines(folder / f"{tag}.rescore{ds['rescore']}.jsonl"), ds["rescore"])
        return screened * 2 * ds["max_pairs"] + rescored * _split_sentences(step)

    def search_factors(self, rates: dict[tuple[str, str], float]) -> dict[tuple[str, str | None], float]:
        """Measured wall time / estimate of the finished searches (the queue log's ``wall_s``), per (kind, model)
        and per kind (``(kind, None)``, all models pooled): a search's sentence count is a rough model (settings
        differ in cost: echo doubles the tokens, Contrastive Prompting adds a forward), so the remaining searches
        are scaled by what the finished ones took. A step resumed across runs logs its last run's time only, so
        it is compared with the part that run computed (the log's ``resumed_sentences``, the sentences already
        encoded when it started); a run that resumed more than half of its step is too short to time the search
        and is left out.

        The estimates use this machine's rates, so a search timed on another kind of machine would skew its
        factor: the log's ``host`` (threads, CPU kind; logged since the queue recorded it) picks the closest
        entries, as :meth:`rates` does, and a model's own factor is used only when it is as close as the pooled
        one (else the pooled factor of this machine's kind)."""
        here = self.host()
        walls: dict[tuple[str, str | None], dict[tuple[bool, bool], list[float]]] = {}
        for step in self.steps:
            entry = self.log["steps"].get(step.id, {})
            est = self.estimate(step, rates, whole=True) if step.kind in SEARCH_KINDS and entry.get("status") == "ok" else None
            resumed = float(entry.get("resumed_sentences") or 0)
            if est and resumed:  # compare the sitting's time with the part it computed
                total = self.sentences(step)
                est = est * (total - resumed) / total if resumed <= total / 2 else None
            if est and entry.get("wall_s"):
                host = entry.get("host") or {}
                match = (host.get("torch_threads") == here["torch_threads"], host.get("cpu_kind") == here["cpu_kind"])
                for key in ((step.kind, step.model), (step.kind, None)):
                    got = walls.setdefault(key, {}).setdefault(match, [0.0, 0.0])
                    got[0], got[1] = got[0] + float(entry["wall_s"]), got[1] + est
        best = {key: max(groups) for key, groups in walls.items()}
        return {key: groups[best[key]][0] / groups[best[key]][1] for key, groups in walls.items()
                if key[1] is None or best[key] >= best[(key[0], None)]}  # fmt: skip

    def host(self) -> dict[str, Any]:
        """What the queue log records of the machine that ran a step (:meth:`search_factors` reads it)."""
        import torch

        from ..records import cpu_flags

        return {"torch_threads": torch.get_num_threads(), "cpu_kind": _cpu_kind(cpu_flags())}


def _sentences(task: dict) -> float:
    return float(task.get("sentences") or 0)


def _encode_s(task: dict) -> float:
    return float((task.get("elapsed_s") or {}).get("encode") or 0.0)


def _timed(task: dict) -> bool:
    """A task that encoded something (not all from the embedding cache: over a second of encoding)."""
    return _encode_s(task) > 1 and _sentences(task) > 0


def _cpu_kind(flags: dict) -> str:
    return "amx" if flags.get("amx_bf16") else "avx512bf16" if flags.get("avx512_bf16") else "other"


def _split_sentences(step: Step) -> int:
    """Sentences of a demonstration search's whole split (each rescored candidate encodes them all)."""
    return 1082 if step.params["split"] == "stsb-train-heldout" else STSB_DEV_SENTENCES


def _scored_lines(path: Path) -> int:
    """The lines of a demonstration search's JSONL that score a candidate (not its header nor the no-demo row)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    except OSError:
        return 0
    scored = 0
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:  # a line cut by a stop: the search rescores it
            continue
        scored += isinstance(row, dict) and "key" in row and bool(row.get("demonstrations"))
    return scored


def _partial_tasks(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    tasks = data.get("tasks") if isinstance(data.get("partial"), dict) else None
    return tasks if isinstance(tasks, dict) else {}


def _measured_tasks(path: Path):
    """``(model, dtype, demo setting, host, task name, task result)`` of each task computed (not imported) in a
    cell or partial file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if isinstance(data.get("cell"), dict):
        c = data["cell"]
        if c.get("status") != "ok" or c.get("imported_from"):
            return
        resumed = c.get("resumed_tasks") or {}
        for name, task in (data.get("tasks") or {}).items():
            host = (resumed.get(name) or {}).get("host") or c.get("host") or {}
            yield str(c.get("model")), str(c.get("dtype")), str(c.get("demo")), host, name, task
    elif isinstance(data.get("partial"), dict):
        ident = data["partial"].get("identity", {})
        model, demo = (str(ident.get("cell", "")).split("__") + [""])[:2]
        for name, task in (data.get("tasks") or {}).items():
            yield model, str(ident.get("dtype")), demo, (task.get("run") or {}).get("host") or {}, name, task
