"""Demonstration search: score candidates on a selection split, resumably, and keep the best.

Each candidate (or k-shot combination) is scored as the paper does: Spearman x100 of cosine
similarities on a selection split, with the candidate as the in-context demonstration. The
encoder for each candidate is ``base.derive(demonstrations=...)``: the same loaded model, the
same render/tokenize/forward/pool path as ``encode`` and ``eval``, the shared-prefix KV cache
and the persistent embedding cache.

Selection splits (``SPLITS``):

- ``stsb-dev``: STS-B dev, the paper's choice. Not leak-free: STS-B is drawn from the same
  SemEval 2012-2017 pool as the STS12-16 test sets.
- ``stsb-train-heldout`` / ``sick-train``: training pairs with every pair removed that shares
  a sentence with any reported test set (STS12-16, STS-B test, SICK-R test) or with a
  candidate; numbers reported after selecting here are leak-free at the sentence level.

Test splits are refused outright, and so is a split that the same command reports (``--report``).
Results are appended to a JSONL file as they come (one line per scored combination); a rerun
skips what is already there, so an interrupted search resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..encoder.prompts.templates import Demonstration
from ..errors import ConfigError
from .candidates import TEST_SETS, Candidate, _key, test_sentences

__all__ = [
    "SPLITS", "SelectionSplit", "load_selection_split", "score_split", "search", "read_results", "search_options",
    "parse_grid",
]  # fmt: skip

log = logging.getLogger(__name__)

#: name -> (underlying split of prompteol.evaluation, leak-free, description)
SPLITS = {
    "stsb-dev": ("STSBenchmark-dev", False, "STS-B dev (1500 pairs), the paper's selection split"),
    "stsb-train-heldout": ("STSBenchmark-train", True, "STS-B train minus pairs sharing a sentence with any test set or candidate"),
    "sick-train": ("SICK-train", True, "SICK train minus pairs sharing a sentence with any test set or candidate"),
}  # fmt: skip
_REFUSED = {
    "stsb-test": "STSBenchmark", "sick-test": "SICKRelatedness", **{t.lower(): t for t in TEST_SETS},
    **{t: t for t in TEST_SETS},
}  # fmt: skip


@dataclass
class SelectionSplit:
    name: str
    sentences1: list[str]
    sentences2: list[str]
    scores: np.ndarray
    leak_free: bool
    description: str

    def __len__(self) -> int:
        return len(self.scores)


def check_split(split: str, report: Sequence[str] = ()) -> None:
    """Refuse test splits, and any split the same run reports as a test score."""
    if split in _REFUSED:
        raise ConfigError(
            f"refusing to select demonstrations on {split!r}: it is the reported test set "
            f"{_REFUSED[split]}. Select on one of {sorted(SPLITS)}"
        )
    if split not in SPLITS:
        raise ConfigError(f"unknown selection split {split!r}; valid: {sorted(SPLITS)}")
    underlying = SPLITS[split][0]
    if underlying in report:
        raise ConfigError(f"refusing to select on {split!r} and report {underlying} in the same run")


def load_selection_split(
    split: str, candidates: Sequence[Candidate] = (), data_dir=None, max_pairs: int | None = None, seed: int = 0
) -> SelectionSplit:
    from ..evaluation import load_sts_pairs

    check_split(split)
    underlying, leak_free, description = SPLITS[split]
    pairs = load_sts_pairs(underlying, data_dir)
    keep = list(range(len(pairs)))
    if leak_free:
        banned = test_sentences(data_dir) | {_key(c.sentence) for c in candidates}
        keep = [i for i in keep if _key(pairs.sentences1[i]) not in banned and _key(pairs.sentences2[i]) not in banned]
        log.info("%s: kept %d of %d pairs disjoint from the test sets and candidates", split, len(keep), len(pairs))
    if max_pairs is not None and len(keep) > max_pairs:
        keep = sorted(random.Random(seed).sample(keep, max_pairs))
    return SelectionSplit(
        name=split, sentences1=[pairs.sentences1[i] for i in keep], sentences2=[pairs.sentences2[i] for i in keep],
        scores=np.asarray(pairs.scores)[keep], leak_free=leak_free,
        description=description + (f", {max_pairs}-pair sample (seed {seed})" if max_pairs else ""),
    )  # fmt: skip


def score_split(encoder, split: SelectionSplit, batch_size: int = 64) -> float:
    """Spearman x100 of cosine similarities on the split (the paper's selection criterion)."""
    from ..evaluation.sts import correlations, cosine_pairs

    unique = list(dict.fromkeys(split.sentences1 + split.sentences2))
    vecs = encoder.encode(unique, batch_size=batch_size, show_progress=False)
    index = {s: i for i, s in enumerate(unique)}
    a = vecs[[index[s] for s in split.sentences1]]
    b = vecs[[index[s] for s in split.sentences2]]
    return correlations(cosine_pairs(a, b), split.scores)["spearman"]


def _combo_key(demos: Sequence[Demonstration]) -> str:
    return json.dumps([[d.sentence, d.word] for d in demos], ensure_ascii=False)


def read_results(path: str | Path) -> tuple[dict, list[dict]]:
    """The search header and the result rows of a results file (missing file: empty)."""
    p = Path(path)
    if not p.exists():
        return {}, []
    header, rows = {}, []
    for line in p.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a kill: ignore it, it is recomputed
            continue
        if "search" in rec:
            header = rec["search"]
        elif "score" in rec:
            rows.append(rec)
    return header, rows


class ResultsFile:
    """A search's results file (JSONL): a header line saying what every score was computed with (the base
    encoder's fingerprint covers the weights, every vector-changing option and prompteol's fingerprint
    version; the split), then one line per scored item, written as soon as it is scored (a kill loses at
    most one). A rerun with the same header resumes (what is there is not scored again); the file of
    another search is refused. The one resume mechanism of both searches (demonstrations, settings)."""

    def __init__(self, path: str | Path, header: dict, compared: Sequence[str], refusal: Callable[[dict], str]):
        self.path = Path(path)
        old_header, rows = read_results(self.path)
        if old_header and {k: old_header.get(k) for k in compared} != {k: header[k] for k in compared}:
            raise ConfigError(refusal(old_header))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not old_header:
            self._append({"search": header})
        self.done: dict[str, dict] = {r["key"]: r for r in rows}

    def _append(self, record: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")

    def run(self, items: Sequence[Any], key: Callable[[Any], str], score: Callable[[Any], tuple[dict, str] | None],
            desc: str, unit: str, progress: bool | None) -> None:  # fmt: skip
        """Score the items not done yet: ``score(item)`` -> ``(the row's fields, the fingerprint)``, or ``None``
        to skip it; each row is written with its key and the seconds it took."""
        from tqdm.auto import tqdm

        show = sys.stderr.isatty() if progress is None else progress
        todo = [item for item in items if key(item) not in self.done]
        with tqdm(total=len(items), initial=len(items) - len(todo), disable=not show, desc=desc, unit=unit) as bar:
            for item in todo:
                t = time.perf_counter()
                scored = score(item)
                if scored is not None:
                    fields, fingerprint = scored
                    row = {"key": key(item), **fields, "seconds": round(time.perf_counter() - t, 2),
                           "fingerprint": fingerprint}  # fmt: skip
                    self._append(row)
                    self.done[row["key"]] = row
                bar.update(1)
                if self.done:
                    bar.set_postfix(best=f"{max(r['score'] for r in self.done.values()):.2f}")


def search(
    base,
    candidates: Sequence[Candidate],
    split: SelectionSplit,
    results_path: str | Path,
    k: int = 1,
    beam: int = 1,
    pool: int = 20,
    batch_size: int = 64,
    progress: bool | None = None,
) -> list[dict]:
    """Score every candidate (and greedy/beam k-shot combinations) on ``split``; return rows best first.

    ``beam`` sequences are kept after each round; round ``r > 1`` extends them with each of the
    ``pool`` best single candidates not already in the sequence.
    """
    if k < 1 or beam < 1 or pool < 1:
        raise ConfigError(f"k, beam and pool should be >= 1, got k={k}, beam={beam}, pool={pool}")
    header = {
        "base_fingerprint": base.fingerprint, "encoder": base.describe(), "split": split.name,
        "split_description": split.description, "n_pairs": len(split), "leak_free": split.leak_free,
    }  # fmt: skip
    compared = ("base_fingerprint", "split", "split_description", "n_pairs", "leak_free")
    results = ResultsFile(results_path, header, compared, lambda old: (
        f"{results_path} holds results of another search (split {old.get('split')}, base encoder "
        f"{old.get('base_fingerprint') or old.get('weights_id')}); use another --results file"))  # fmt: skip
    done = results.done

    def score(combo: list[Demonstration]) -> tuple[dict, str]:
        enc = base.derive(demonstrations=combo)
        fields = {"demonstrations": [d.to_dict() for d in combo], "k": len(combo),
                  "score": score_split(enc, split, batch_size)}  # fmt: skip
        return fields, enc.fingerprint

    def run(combos: list[list[Demonstration]], desc: str) -> None:
        results.run(combos, _combo_key, score, desc, "demo", progress)

    singles = [[d] for d in dict.fromkeys(c.demonstration for c in candidates)]
    run([[]] + singles, "demos k=1")
    for r in range(2, k + 1):
        ranked_singles = sorted((done[_combo_key(s)] for s in singles), key=lambda x: -x["score"])[:pool]
        best_prev = sorted((x for x in done.values() if x["k"] == r - 1), key=lambda x: -x["score"])[:beam]
        combos = []
        for prev in best_prev:
            prev_demos = [Demonstration(**d) for d in prev["demonstrations"]]
            for s in ranked_singles:
                d = Demonstration(**s["demonstrations"][0])
                if d not in prev_demos:
                    combos.append(prev_demos + [d])
        run(combos, f"demos k={r}")
    return sorted(done.values(), key=lambda x: -x["score"])


# ---------------------------------------------------------------------------------------------- option search
def parse_grid(specs: Sequence[str]) -> list[dict]:
    """``["layer=-1,-2", "token_prepending=none,1:4"]`` -> every combination, as option dicts.

    Values are parsed like the options' own flags (``prompteol.options``); only options that need
    no other model load (``prompt``/``runtime`` kinds) can be searched on one loaded model.
    """
    import itertools

    from ..encoder.config import EncoderConfig
    from ..options import _parser_for, options_of

    known = {name: (opt, default) for name, opt, default in options_of(EncoderConfig)}
    allowed = set(EncoderConfig.fields_of_kind("prompt", "runtime"))
    axes: list[list[tuple[str, object]]] = []
    for spec in specs:
        name, sep, values = spec.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not values:
            raise ConfigError(f"a grid axis is written NAME=V1,V2,..., got {spec!r}")
        if name not in known:
            raise ConfigError(f"unknown option {name!r} in the grid; valid: {sorted(allowed)}")
        if name not in allowed:
            raise ConfigError(f"{name!r} needs another model load; search it with separate runs. Searchable: {sorted(allowed)}")
        opt, default = known[name]
        parse = _parser_for(opt, default)
        axis = []
        for raw in values.split(","):
            raw = raw.strip()
            try:
                value = None if raw.lower() == "none" and default is None else parse(raw)
            except ValueError as exc:
                raise ConfigError(f"grid value {raw!r} for {name}: {exc}") from None
            axis.append((name, value))
        axes.append(axis)
    return [dict(combo) for combo in itertools.product(*axes)] if axes else [{}]


def _options_key(options: dict) -> str:
    return json.dumps(options, sort_keys=True, ensure_ascii=False, default=list)


def search_options(
    base, grid: Sequence[dict], split: SelectionSplit, results_path: str | Path, batch_size: int = 64,
    progress: bool | None = None,
) -> list[dict]:
    """Score every option setting of ``grid`` (``base.derive(**options)``) on ``split``; rows best first.

    Resumable like :func:`search`: one JSONL line per scored setting, a rerun skips what is there,
    and a file of another search (other base encoder or split) is refused.
    """
    header = {
        "kind": "options", "base_fingerprint": base.fingerprint, "encoder": base.describe(), "split": split.name,
        "split_description": split.description, "n_pairs": len(split), "leak_free": split.leak_free,
    }  # fmt: skip
    compared = ("kind", "base_fingerprint", "split", "split_description", "n_pairs", "leak_free")
    results = ResultsFile(results_path, header, compared,
                          lambda old: f"{results_path} holds results of another search; use another --results file")

    def score(options: dict) -> tuple[dict, str] | None:
        try:
            enc = base.derive(**options)
        except ConfigError as exc:  # e.g. a layer this model does not have: skipped, said once
            log.warning("skipping setting %s: %s", options, exc)
            return None
        return {"options": json.loads(_options_key(options)), "score": score_split(enc, split, batch_size)}, enc.fingerprint

    results.run(list(grid), _options_key, score, "settings", "setting", progress)
    done = results.done
    wanted = {_options_key(g) for g in grid}
    return sorted((r for k, r in done.items() if k in wanted), key=lambda x: -x["score"])
