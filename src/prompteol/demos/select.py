"""Choosing a model's demonstration (screen, rescore, preset record) and the demonstration search.

Choosing a model's demonstration: screen candidates on a sample, rescore the best on the whole
split, and describe the choice as a preset record (used by ``prompteol demos search`` and the
study queue, so the library can redo what made a shipped preset).

Two stages, each resumable through its results file (:func:`~prompteol.demos.search.search`):

1. **screen**: every candidate scored on a seeded sample of ``max_pairs`` pairs of the split;
2. **rescore**: the ``rescore`` best of the screen (and no demonstration) scored on the whole split;
   the best of these is the choice.

The screen may come from another model (``screen_rows``: rows of a screen already run, e.g. by a
smaller model of the same family and tokenizer); only the rescoring then runs on ``base``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .candidates import Candidate
from .search import SelectionSplit, load_selection_split, search

__all__ = ["Selection", "DemoSearch", "select_demonstration", "preset_record", "run_demo_search"]


@dataclass
class Selection:
    """The outcome of :func:`select_demonstration`: rows best first (of the last stage run)."""

    rows: list[dict]
    split: SelectionSplit
    n_candidates: int
    n_screened: int
    screen_rows: list[dict]

    @property
    def best(self) -> dict:
        return self.rows[0]

    @property
    def no_demo_score(self) -> float | None:
        return next((r["score"] for r in self.rows if r["k"] == 0), None)


def sample_candidates(candidates: Sequence[Candidate], max_candidates: int | None, seed: int) -> list[Candidate]:
    """A seeded sample of ``max_candidates`` candidates (all of them when ``None`` or more)."""
    cands = list(candidates)
    if max_candidates is not None and max_candidates < len(cands):
        cands = random.Random(seed).sample(cands, max_candidates)
    return cands


def select_demonstration(
    base, candidates: Sequence[Candidate], split_name: str, results: str | Path, *, data_dir=None,
    max_candidates: int | None = None, max_pairs: int | None = None, rescore: int = 0, seed: int = 0, k: int = 1,
    beam: int = 1, pool: int = 20, batch_size: int = 64, progress: bool | None = None,
    screen_rows: Sequence[dict] | None = None,
) -> Selection:  # fmt: skip
    """Screen (unless ``screen_rows`` are given) and rescore; see the module docstring.

    The split excludes every pair sharing a sentence with any candidate given (not only the
    sampled ones), in both stages. Results: ``results`` (screen) and ``<results stem>.rescore<N>.jsonl``.
    """
    results = Path(results)
    sampled = sample_candidates(candidates, max_candidates, seed)
    if screen_rows is None:
        split = load_selection_split(split_name, candidates, data_dir, max_pairs, seed)
        screen = search(base, sampled, split, results, k=k, beam=beam, pool=pool, batch_size=batch_size,
                        progress=progress)  # fmt: skip
    else:
        split = load_selection_split(split_name, candidates, data_dir, max_pairs, seed)
        screen = sorted(screen_rows, key=lambda r: -r["score"])
    n_screened = sum(1 for r in screen if r["k"] == 1)
    if not rescore:
        return Selection(screen, split, len(sampled), n_screened, screen)
    top = [r for r in screen if r["k"] == 1][:rescore]
    full = load_selection_split(split_name, candidates, data_dir, None, seed)
    finalists = [Candidate(r["demonstrations"][0]["sentence"], r["demonstrations"][0]["word"], "rescore") for r in top]
    rows = search(base, finalists, full, results.with_name(results.stem + f".rescore{rescore}.jsonl"), k=1,
                  batch_size=batch_size, progress=progress)  # fmt: skip
    return Selection(rows, full, len(sampled), n_screened, screen)


def preset_record(sel: Selection, *, candidates: Sequence[str], command: str, max_pairs: int | None, rescore: int,
                  seed: int, screened_on: str | None = None) -> dict:  # fmt: skip
    """The preset record of a selection (what ``--save-preset`` stores), with its provenance."""
    from ..records import provenance

    best = sel.best
    record = {
        "demonstrations": best["demonstrations"], "score": best["score"], "no_demo_score": sel.no_demo_score,
        "split": sel.split.name, "split_description": sel.split.description, "n_pairs": len(sel.split),
        "leak_free": sel.split.leak_free, "candidates": [str(c) for c in candidates],
        "n_candidates": sel.n_candidates, "n_scored": sel.n_screened, "k": best["k"], "command": command,
        "screening": {"max_pairs": max_pairs, "seed": seed, "rescored": rescore} if rescore else None,
        "provenance": provenance(command),
    }  # fmt: skip
    if screened_on:
        record["screening"] = {**(record["screening"] or {}), "model": screened_on,
                               "note": f"candidates screened on {screened_on} (same family and tokenizer); only "
                               f"the {rescore} finalists were scored with this model"}  # fmt: skip
    return record


@dataclass(frozen=True)
class DemoSearch:
    """A demonstration search as ``prompteol demos search`` runs it: everything but the base encoder.

    :meth:`check` refuses what needs no model to refuse (a test split, a split reported in the same run,
    ``rescore`` without ``max_pairs``); :func:`run_demo_search` runs it on a loaded base encoder.
    """

    candidate_files: tuple[str, ...]
    split: str = "stsb-dev"
    results: str | None = None  #: default: outputs/demos/<model>_<split>.jsonl
    k: int = 1
    beam: int = 1
    pool: int = 20
    max_pairs: int | None = None
    max_candidates: int | None = None
    rescore: int = 0
    seed: int = 0
    batch_size: int = 64
    data_dir: str | None = None
    report: tuple[str, ...] = ()  #: tasks to evaluate the chosen demonstration on afterwards
    save_preset: str | None = None  #: the preset name to store the choice under (for the base's model)
    preset_file: str | None = None  #: default: the user's presets file
    command: str = ""

    def check(self) -> None:
        from ..errors import ConfigError
        from .search import check_split

        check_split(self.split, self.report)  # before any model is loaded
        if self.rescore and not self.max_pairs:
            raise ConfigError("--rescore needs --max-pairs (the first stage scores a sample)")
        load_selection_split(self.split, self.candidates(), self.data_dir, self.max_pairs, self.seed)  # data there

    def candidates(self) -> list[Candidate]:
        from .candidates import read_candidates

        return [c for f in self.candidate_files for c in read_candidates(f)[0]]

    def results_path(self, model: str) -> Path:
        return Path(self.results or f"outputs/demos/{Path(model).name}_{self.split}.jsonl")


@dataclass
class DemoSearchOutcome:
    selection: Selection
    preset_path: Path | None = None  #: where the preset was saved (``save_preset``)
    report: dict | None = None  #: ``evaluate`` of the chosen demonstration on ``report`` tasks


def run_demo_search(base, search: DemoSearch, *, progress: bool | None = None,
                    say=lambda text: None) -> DemoSearchOutcome:  # fmt: skip
    """Select a demonstration for ``base`` (no demonstration of its own) as ``search`` says, save it as a
    preset and evaluate it when asked; ``say`` hears what is about to be done."""
    from ..errors import ConfigError

    search.check()
    if base.config.demonstrations:
        raise ConfigError("do not combine --demo/--demo-preset with a search")
    cands = search.candidates()
    results = search.results_path(base.config.model)
    n = len(sample_candidates(cands, search.max_candidates, search.seed))
    split = load_selection_split(search.split, cands, search.data_dir, search.max_pairs, search.seed)
    say(f"searching {n} candidates (k={search.k}) on {split.name}: {split.description}, {len(split)} pairs; "
        f"results -> {results}" + (f", then the {search.rescore} best on the whole split" if search.rescore else ""))
    sel = select_demonstration(base, cands, search.split, results, data_dir=search.data_dir,
                               max_candidates=search.max_candidates, max_pairs=search.max_pairs,
                               rescore=search.rescore, seed=search.seed, k=search.k, beam=search.beam,
                               pool=search.pool, batch_size=search.batch_size, progress=progress)  # fmt: skip
    outcome = DemoSearchOutcome(sel)
    if search.save_preset:
        from ..encoder.prompts.presets import save_preset

        record = preset_record(sel, candidates=list(search.candidate_files), command=search.command,
                               max_pairs=search.max_pairs, rescore=search.rescore, seed=search.seed)  # fmt: skip
        outcome.preset_path = save_preset(base.config.model, search.save_preset, record, search.preset_file)
    if search.report:
        from ..evaluation import evaluate

        enc = base.derive(demonstrations=[tuple(d.values()) for d in sel.best["demonstrations"]])
        outcome.report = evaluate(enc, tasks=list(search.report), data_dir=search.data_dir)
    return outcome
