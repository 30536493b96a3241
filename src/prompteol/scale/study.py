"""The study queue (``prompteol scale queue``): the whole study as one resumable list of steps.

The study queue (``prompteol scale queue``): the whole study of the packaged models as one
resumable list of steps, cheapest and most informative first, run across as many sittings as it takes.

Steps, in this order (each stage gives every model a result before the next spends more on one):

a. ``precision``: STS-B dev in float32 and in bfloat16 (``<root>/docs/scaling/precision``); the ``none``
   cells (7 STS tasks, no demonstration) of every model (``<root>/docs/scaling/cells``);
b. ``demos``: each model's leak-free demonstration (``searched-leakfree``): 200 candidates screened on
   40 pairs of ``stsb-train-heldout``, the 8 best rescored on the whole split; qwen2.5-coder-1.5b
   reuses qwen2.5-coder-0.5b's screen (same family and tokenizer) and rescores the finalists itself.
   The preset is written into ``<root>/src/prompteol/data/demo_presets.json`` (it ships);
c. the ``paper`` and ``default`` cells;
d. ``methods``: each model's settings search (:mod:`prompteol.scale.selection`, records in
   ``<root>/docs/methods/<model>/selection``), stored as its ``best-training-free`` preset; then the
   best setting on the 7 STS tasks, with plain PromptEOL at the same read-out layer and at its own best layer;
f. the ``stsb-dev`` demonstration (the paper's protocol, not leak-free) and its cells; fast transfer
   cells for ``none`` and ``best-training-free`` on smollm2-135m, gemma3-270m and qwen2.5-coder-0.5b.

What makes a step done is its output on disk (a cell file with ``status: ok``, a preset, a selection
record), so a rerun skips it, on this machine or another one with the committed files. A cell keeps each
finished task in ``<cell>.partial.json`` (:mod:`prompteol.scale.run`), searches keep one JSONL line per
scored candidate or setting: a stop loses at most the task or setting in progress. A step that fails is
logged in ``<root>/docs/scaling/queue.json`` with its message and the queue goes on (its dependants wait).
A lock (``<root>/docs/scaling/.queue.lock``) refuses a second queue on the same root.

Precision: smollm2-135m's cells are float32 (as its first cells); the other models run in bfloat16 where
the CPU has it natively (AVX512-BF16 / AMX), else float32; a cell already started continues in the dtype
it started with, and a finished cell in either dtype counts as done. (A float32 cell's file name carries no
dtype tag, the default's; a bfloat16 one has the ``__o<hash>`` of ``dtype=bfloat16``.)
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..encoder.encode_options import EncodeOptions
from ..fileio import FileLock, write_json_atomic
from .estimates import StudyEstimates
from .grid import Cell, cell_state, options_tag
from .run import partial_path
from .steps import (
    CANDIDATES,
    DEMO_SEARCH,
    FLOAT32_MODELS,
    QUEUE_SCHEMA,
    SETTINGS_SEARCH,
    STUDY_MODELS,
    Step,
    StudyOptions,
    build_plan,
    fast_dtype,
)

__all__ = ["STUDY_MODELS", "Step", "StudyOptions", "build_plan", "run_queue", "QUEUE_SCHEMA"]

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ helpers
def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _tag(options: dict[str, Any], dtype: str) -> str | None:
    """The options hash of a cell's file name (float32, the default dtype, adds nothing)."""
    return options_tag({**options, **({"dtype": dtype} if dtype != "auto" else {})})


class _Study(StudyEstimates):
    def __init__(self, opts: StudyOptions, out: Callable[[str], None]):
        self.opts = opts
        self.say = out
        self.steps = build_plan(opts.models, opts.stages)
        self.log = self._read_log()

    # ------------------------------------------------------------------ records
    def _read_log(self) -> dict[str, Any]:
        try:
            data = json.loads(self.opts.log_file.read_text(encoding="utf-8"))
            if isinstance(data, dict) and isinstance(data.get("steps"), dict):
                return data
        except (OSError, ValueError):
            pass
        return {"schema": QUEUE_SCHEMA, "steps": {}}

    def _write_log(self, step: Step, **entry: Any) -> None:
        self.log["steps"][step.id] = {**self.log["steps"].get(step.id, {}), **entry}
        write_json_atomic(self.opts.log_file, self.log)

    def presets(self, model: str) -> dict[str, dict]:
        try:
            return json.loads(self.opts.presets_file.read_text(encoding="utf-8")).get(model, {})
        except (OSError, ValueError):
            return {}

    def selection(self, model: str) -> dict | None:
        try:
            return json.loads((self.opts.selection_dir(model) / "selection.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    # ------------------------------------------------------------------ cells of a step
    def cell_spec(self, step: Step) -> tuple[list[tuple[str, int, dict, tuple[str | None, list] | None]], str, str]:
        """``([(demo, layer, options, override)], tasks, mode)`` of a cell step (empty while blocked)."""
        p = step.params
        tasks, mode = p.get("tasks", "sts"), p.get("mode", "test")
        if step.kind == "plain-layers":
            sel = self.selection(step.model)
            if sel is None:
                return [], tasks, mode
            from .selection import ChosenSetting

            chosen = ChosenSetting.of(sel["best"]["options"])
            layers = [x for x in dict.fromkeys([chosen.layer, int(sel["best_plain_layer"])]) if x != -1]
            return [("none", layer, {}, None) for layer in layers], tasks, mode
        if p["demo"] == "best-training-free":
            rec = self.presets(step.model).get("best-training-free")
            if rec is None:
                return [], tasks, mode
            from ..encoder.prompts.templates import Demonstration
            from .selection import ChosenSetting

            chosen = ChosenSetting.of(rec["options"])
            demos = [Demonstration(d["sentence"], d["word"]) for d in chosen.demonstrations]
            return [("best-training-free", chosen.layer, chosen.options, ("best-training-free", demos))], tasks, mode
        return [(p["demo"], p.get("layer", -1), {}, None)], tasks, mode

    def cell_files(self, step: Step, folder: Path | None = None) -> list[list[Path]]:
        """Per cell of the step: its file in every dtype the study may have used."""
        specs, tasks, mode = self.cell_spec(step)
        folder = folder or self.opts.cells_dir
        dtypes = ["float32"] if step.model in FLOAT32_MODELS else ["bfloat16", "float32"]
        return [[Cell(step.model, demo, layer, tasks, mode, _tag(options, dt)).path(folder) for dt in dtypes]
                for demo, layer, options, _ in specs]  # fmt: skip

    def is_done(self, step: Step) -> bool:
        if step.kind == "precision":
            return all(cell_state(p) == "done" for p in self.precision_files(step.model))
        if step.kind == "demos":
            return step.params["preset"] in self.presets(step.model)
        if step.kind == "methods":
            return self.selection(step.model) is not None and "best-training-free" in self.presets(step.model)
        files = self.cell_files(step)
        if step.kind == "plain-layers" and self.selection(step.model) is not None:
            # plain PromptEOL at the chosen and the best plain layer; none when both are -1 (the `none` cell)
            return all(any(cell_state(p) == "done" for p in variants) for variants in files)
        return bool(files) and all(any(cell_state(p) == "done" for p in variants) for variants in files)

    def precision_files(self, model: str) -> list[Path]:
        return [Cell(model, "none", -1, "STSBenchmark-dev", "test", _tag({}, dt)).path(self.opts.precision_dir)
                for dt in ("float32", "bfloat16")]  # fmt: skip

    def blocked_by(self, step: Step, done: dict[str, bool]) -> list[str]:
        return [n for n in step.needs if not done.get(n, False)]

    # ------------------------------------------------------------------ status
    def status(self) -> tuple[list[tuple[Step, str, float | None]], dict[str, bool]]:
        rates = self.rates()
        factors = self.search_factors(rates)
        ratios = self.cost_ratios(rates)
        done = {s.id: self.is_done(s) for s in self.steps}
        rows = []
        for step in self.steps:
            if done[step.id]:
                state = "done"
            elif self.blocked_by(step, done):
                state = "waits for " + ", ".join(self.blocked_by(step, done))
            elif (err := self.log["steps"].get(step.id, {}).get("error")) and self.log["steps"][step.id].get("status") == "failed":
                state = f"failed before ({err[:80]}); runs again"
            else:
                state = "to run"
            rows.append((step, state, None if done[step.id] else self.estimate(step, rates, factors, ratios=ratios)))
        return rows, done

    def print_status(self) -> None:
        rows, done = self.status()
        rates = self.rates()
        self.say(f"study queue: {sum(done.values())} of {len(rows)} steps done; records under {self.opts.root}")
        for step, state, est in rows:
            self.say(f"  [{step.stage}] {step.id:<48} {state:<40} {'' if state == 'done' else _fmt_s(est)}")
        remaining = [est for _, state, est in rows if state != "done"]
        known = sum(e for e in remaining if e is not None)
        unknown = sum(1 for e in remaining if e is None)
        self.say(f"remaining: {len(remaining)} steps, about {_fmt_s(known)} at the measured rates"
                 + (f" (+{unknown} steps without a rate yet)" if unknown else ""))  # fmt: skip
        if rates:
            self.say("measured rates (sentences/s, 7-task and STS-B dev encodes, this thread count where known): "
                     + ", ".join(f"{m} {d} {r:.1f}" for (m, d), r in sorted(rates.items())))  # fmt: skip
        ratios = self.cost_ratios(rates)
        if ratios:
            self.say("cells scaled by their measured cost (time per sentence against the model's STS rate): "
                     + ", ".join(" ".join(k[1:] if k[0] == "demo" else k) + f" x{r:.2f}" for k, r in sorted(ratios.items())))  # fmt: skip
        pooled = {kind: f for (kind, model), f in self.search_factors(rates).items() if model is None}
        if pooled:
            self.say("searches scaled by the wall time of the finished ones (per model where measured, else pooled): "
                     + ", ".join(f"{kind} x{f:.2f}" for kind, f in pooled.items()))  # fmt: skip

    # ------------------------------------------------------------------ running
    def run(self) -> int:
        failures = 0
        ran = 0
        for entry in self.log["steps"].values():  # (left by a run that was killed)
            entry.pop("tried_this_run", None)
        while True:
            rows, done = self.status()
            nxt = next((s for s, state, _ in rows if state == "to run" or state.startswith("failed before")
                        and not self.log["steps"][s.id].get("tried_this_run")), None)  # fmt: skip
            if nxt is None:
                break
            if self.opts.max_steps is not None and ran >= self.opts.max_steps:
                break
            ran += 1
            self.say(f"\n== [{nxt.stage}] {nxt.id} ({_now()})")
            t0 = time.perf_counter()
            self._write_log(nxt, status="running", started=_now(), error=None,
                            resumed_sentences=self.finished_sentences(nxt))  # what this run does not pay for
            try:
                self.run_step(nxt)
                ok = self.is_done(nxt)
                error = None if ok else "the step ended without its output (see the log above)"
            except Exception as exc:  # noqa: BLE001 - one step's failure is recorded; the queue goes on
                log.debug("step %s failed", nxt.id, exc_info=True)
                ok, error = False, f"{type(exc).__name__}: {exc}"
            wall = round(time.perf_counter() - t0, 1)
            self._write_log(nxt, status="ok" if ok else "failed", finished=_now(), wall_s=wall, error=error,
                            tried_this_run=True, command=self.opts.command, host=self.host())  # fmt: skip
            self.say(f"== {nxt.id}: {'done' if ok else 'FAILED: ' + str(error)} in {_fmt_s(wall)}")
            failures += 0 if ok else 1
        for entry in self.log["steps"].values():
            entry.pop("tried_this_run", None)
        write_json_atomic(self.opts.log_file, self.log)
        self.print_status()
        return 1 if failures else 0

    def run_step(self, step: Step) -> None:
        if step.kind == "precision":
            for dtype in ("float32", "bfloat16"):
                self.sweep(step.model, [("none", -1, {}, None)], "STSBenchmark-dev", "test", dtype,
                           self.opts.precision_dir)  # fmt: skip
            return
        if step.kind == "demos":
            self.run_demos(step)
            return
        if step.kind == "methods":
            self.run_methods(step)
            return
        specs, tasks, mode = self.cell_spec(step)
        for spec, variants in zip(specs, self.cell_files(step)):
            if any(cell_state(p) == "done" for p in variants):
                continue
            self.sweep(step.model, [spec], tasks, mode, self.dtype_for(step.model, variants), self.opts.cells_dir)

    def dtype_for(self, model: str, variants: list[Path]) -> str:
        """The dtype of a started cell (its partial record), else the study's dtype on this machine."""
        for p in variants:
            pp = partial_path(p)
            if pp.exists():
                try:
                    return str(json.loads(pp.read_text(encoding="utf-8"))["partial"]["identity"]["dtype"])
                except (OSError, ValueError, KeyError):
                    continue
        return fast_dtype(model)

    def sweep(self, model: str, specs: list, tasks: str, mode: str, dtype: str, output: Path) -> None:
        from rich.console import Console

        from .run import SweepOptions, run_sweep

        for demo, layer, options, override in specs:
            opts = SweepOptions(models=[model], demos=[demo], layers=[layer], output=output, tasks=tasks, mode=mode,
                                data_dir=self.opts.data_dir, encode=EncodeOptions(batch_size=self.opts.batch_size),
                                dtype=dtype,
                                encoder_options=dict(options), probe=False, command=self.opts.command,
                                demo_overrides={demo: override} if override else {})  # fmt: skip
            result = run_sweep(opts, console=Console(soft_wrap=True, force_terminal=False, width=160))
            if result.failed:
                raise RuntimeError("; ".join(f"{k}: {v}" for k, v in result.failed.items()))

    def load(self, model: str, dtype: str):
        from ..encoder.config import EncoderConfig
        from ..encoder.encoder import Encoder

        if dtype == "auto":
            dtype = "float32"
        return Encoder.from_config(EncoderConfig.from_options(model=model, dtype=dtype), embedding_cache=True,
                                   progress=False)  # fmt: skip

    def run_demos(self, step: Step) -> None:
        from ..demos.candidates import read_candidates
        from ..demos.search import read_results
        from ..demos.select import preset_record, select_demonstration
        from ..encoder.prompts.presets import save_preset

        root = self.opts.root
        cands = [c for f in CANDIDATES for c in read_candidates(root / f)[0]]
        split, screen_on = step.params["split"], step.params.get("screen_on")
        tag = "leakfree" if split == "stsb-train-heldout" else "stsb-dev"
        screen_rows = None
        if screen_on:
            _, screen_rows = read_results(self.opts.demos_dir(screen_on) / f"{tag}.jsonl")
            if not screen_rows:
                raise RuntimeError(f"the screen of {screen_on} ({tag}) is not there yet")
        base = self.load(step.model, fast_dtype(step.model))
        ds = DEMO_SEARCH
        sel = select_demonstration(base, cands, split, self.opts.demos_dir(step.model) / f"{tag}.jsonl",
                                   data_dir=self.opts.data_dir, max_candidates=ds["max_candidates"],
                                   max_pairs=ds["max_pairs"], rescore=ds["rescore"], seed=ds["seed"],
                                   batch_size=self.opts.batch_size, screen_rows=screen_rows)  # fmt: skip
        record = preset_record(sel, candidates=list(CANDIDATES), command=self.opts.command, max_pairs=ds["max_pairs"],
                               rescore=ds["rescore"], seed=ds["seed"], screened_on=screen_on)  # fmt: skip
        record.update(dtype=str(next(base.model.parameters()).dtype).removeprefix("torch."),
                      results=f"docs/demos/{step.model}/{tag}*.jsonl")  # fmt: skip
        save_preset(step.model, step.params["preset"], record, self.opts.presets_file)
        self.say(f"  {step.model} {step.params['preset']}: {_demo_text(record['demonstrations'])} "
                 f"{record['score']:.2f} (none {record['no_demo_score']:.2f}) on {record['split']}")  # fmt: skip

    def run_methods(self, step: Step) -> None:
        from ..demos.search import load_selection_split
        from ..encoder.prompts.presets import save_preset
        from .selection import SETTINGS_NOTE, choose_setting

        base = self.load(step.model, fast_dtype(step.model))
        ss = SETTINGS_SEARCH
        split = load_selection_split("stsb-train-heldout", (), self.opts.data_dir, ss["max_pairs"], ss["seed"])
        full = load_selection_split("stsb-train-heldout", (), self.opts.data_dir, None, ss["seed"])
        demos = (self.presets(step.model).get("searched-leakfree") or {}).get("demonstrations") or []
        record = choose_setting(base, split, full, self.opts.selection_dir(step.model), demos,
                                finalists=ss["finalists"], batch_size=self.opts.batch_size, log=self.say)  # fmt: skip
        best = record["best"]
        save_preset(step.model, "best-training-free", {
            "options": best["options"], "score": best["score"], "sample_score": best["sample_score"],
            "split": full.name, "split_description": full.description, "n_pairs": len(full), "leak_free": True,
            "selected_on": f"{split.description} ({len(split)} pairs), the {ss['finalists']} best rescored on all "
                           f"{len(full)} pairs", "plain_score": record["plain_full"], "dtype": record["dtype"],
            "command": self.opts.command, "record": f"docs/methods/{step.model}/selection/selection.json",
            "note": SETTINGS_NOTE,
        }, self.opts.presets_file)  # fmt: skip
        self.say(f"  {step.model} best-training-free: {json.dumps(best['options'])} {best['score']:.2f} "
                 f"(plain {record['plain_full']:.2f}) on {full.name}")  # fmt: skip


def _demo_text(demos: list[dict]) -> str:
    return " + ".join(f"{d['sentence']!r} -> {d['word']}" for d in demos) or "(no demonstration)"


def run_queue(opts: StudyOptions, out: Callable[[str], None] = print) -> int:
    """Print the queue's state; unless ``dry_run``, run every step that can run, in order."""
    os.environ["PROMPTEOL_PRESET_FILES"] = str(opts.presets_file)  # `default` and the presets resolve from the root
    study = _Study(opts, out)
    if opts.dry_run:
        study.print_status()
        return 0
    lock = FileLock(opts.root / "docs" / "scaling" / ".queue.lock",
                    f"another study queue is running on {opts.root} now; wait for it or stop it")  # fmt: skip
    with lock:
        study.print_status()
        return study.run()
