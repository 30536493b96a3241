"""Planning a sweep: model sizes, the dtype of the memory rule, the throughput probe, the plan.

Planning a sweep (``prompteol scale``): each model's size before loading, the dtype of the memory rule,
the throughput probe, every cell's estimate and state, and the printed plan. :class:`SweepPlanner` is the
first half of the sweep (:mod:`prompteol.scale.run` runs the cells)."""

from __future__ import annotations

import gc
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..encoder.encode_options import EncodeOptions
from ..encoder.prompts.templates import Demonstration
from .grid import Cell, cell_state, resolve_demo
from .memory import CHARS_PER_TOKEN, DtypeDecision, ModelSize, choose_dtype, model_size

if TYPE_CHECKING:  # pragma: no cover
    from .run import SweepOptions

__all__ = ["SweepPlanner", "CellPlan", "ModelPlan", "PROBE_SENTENCES", "probe_sample", "measure_rate"]

log = logging.getLogger(__name__)

#: sentences of the throughput probe (the first unique ones of STS-B dev, as the harness presents them)
PROBE_SENTENCES = 64


_WARMUP = 4


#: weights (bytes) from which freeing a model runs the garbage collector
_COLLECT_ABOVE = 64 * 2**20


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


def error_text(exc: BaseException) -> str:
    text = str(exc).strip() or repr(exc)
    return f"{type(exc).__name__}: {text}"


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 90:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def param_count(model_ref: str, encoder) -> tuple[int, str]:
    from ..models.registry import PACKAGED_MODELS

    spec = PACKAGED_MODELS.get(model_ref)
    if spec is not None and spec.num_parameters:
        return spec.num_parameters, "registry"
    return int(sum(p.numel() for p in encoder.model.parameters())), "counted after load"


def loaded_dtype(encoder) -> str:
    try:
        return str(next(encoder.model.parameters()).dtype).removeprefix("torch.")
    except StopIteration:  # pragma: no cover
        return encoder.config.dtype


class SweepPlanner:
    """The planning half of a sweep (a base of :class:`prompteol.scale.run._Sweep`, which sets the
    options, tasks, data root, cells and device): each model's plan (size, dtype, probe rate, the cells'
    estimates) and the printed plan."""

    opts: SweepOptions
    out: Any  #: the console the plan is printed on
    task_list: list[Any]  #: the tasks (:class:`~prompteol.evaluation.tasks.Task`)
    root: Path
    cells: list[Cell]
    device: str
    _sentences: dict[str, list[str]] | None

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
                cp.preset, cp.demonstrations, cp.error = None, None, error_text(exc)

    def plan_model(self, plan: ModelPlan, keep: bool) -> None:
        from ..models.registry import PACKAGED_MODELS

        try:
            plan.size = model_size(plan.model, self.opts.cache_dir)
        except Exception as exc:  # noqa: BLE001
            plan.size = ModelSize(None, None, f"unknown: {error_text(exc)}")
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
            plan.error = f"loading {plan.model} failed: {error_text(exc)}"
            log.debug("probe of %s failed", plan.model, exc_info=True)
            return
        plan.num_parameters, plan.parameters_source = param_count(plan.model, encoder)
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
                cp.error = error_text(exc)
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
                              fmt_seconds(cp.estimate_s) if not error else "", cached, state)  # fmt: skip
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
