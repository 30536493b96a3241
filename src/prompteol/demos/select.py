"""Choosing a model's demonstration: screen candidates on a sample, rescore the best on the whole
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

__all__ = ["Selection", "select_demonstration", "preset_record"]


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
