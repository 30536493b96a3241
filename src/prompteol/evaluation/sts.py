"""STS scoring: cosine similarity of each pair, then Pearson and Spearman (scipy) x100.

Aggregations over the subsets of STS12-16, as in SentEval (SimCSE's fork):

- ``all``: one correlation over the concatenation of every subset (the headline number);
- ``mean``: the plain average of the per-subset correlations;
- ``wmean``: their average weighted by the number of pairs of each subset.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["cosine_pairs", "correlations", "score_sts"]


def cosine_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity (N,) of two (N, H) arrays, in float64.

    Like SentEval, NaN/inf inputs count as 0 and a zero vector gives similarity 0.
    """
    a = np.nan_to_num(np.asarray(a, dtype=np.float64))
    b = np.nan_to_num(np.asarray(b, dtype=np.float64))
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)  # (N,)
    with np.errstate(divide="ignore", invalid="ignore"):
        sims = np.einsum("ij,ij->i", a, b) / denom
    return np.nan_to_num(sims)


def correlations(pred: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    """``{"spearman", "pearson"}`` x100 (NaN, e.g. for constant predictions, is kept as NaN)."""
    from scipy.stats import pearsonr, spearmanr

    with np.errstate(all="ignore"):
        sp = spearmanr(pred, gold)[0]
        pe = pearsonr(pred, gold)[0] if len(pred) > 1 else np.nan
    return {"spearman": 100.0 * float(sp), "pearson": 100.0 * float(pe)}


def score_sts(pred: np.ndarray, gold: np.ndarray, subsets: Sequence[str] | None = None) -> dict:
    """Scores of predicted similarities against gold scores.

    Without ``subsets`` (one split): ``{"spearman", "pearson", "n"}``. With subsets (STS12-16):
    ``{"spearman": {"all", "mean", "wmean"}, "pearson": {...}, "n", "subsets": {name: {...}}}``,
    where ``all`` correlates the concatenation (SentEval's ``all``), ``mean`` averages the
    subsets and ``wmean`` weights them by pairs.
    """
    pred = np.asarray(pred, dtype=np.float64)
    gold = np.asarray(gold, dtype=np.float64)
    if pred.shape != gold.shape:
        raise ValueError(f"predictions {pred.shape} and gold scores {gold.shape} differ in shape")
    if subsets is None:
        return {**correlations(pred, gold), "n": int(len(gold))}
    names = list(dict.fromkeys(subsets))
    labels = np.asarray(subsets)
    per = {}
    for name in names:
        mask = labels == name
        per[name] = {**correlations(pred[mask], gold[mask]), "n": int(mask.sum())}
    weights = np.array([per[n]["n"] for n in names], dtype=np.float64)
    overall = correlations(pred, gold)
    out: dict = {"n": int(len(gold))}
    for metric in ("spearman", "pearson"):
        values = np.array([per[n][metric] for n in names])
        out[metric] = {
            "all": overall[metric],
            "mean": float(np.average(values)),
            "wmean": float(np.average(values, weights=weights)),
        }
    out["subsets"] = per
    return out
