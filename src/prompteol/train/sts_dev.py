"""STS-B dev, the checkpoint-selection split: Spearman x100 of cosine against the gold scores.

Kept small and isolated (one function to swap): SentEval's STSBenchmark reader (tab-separated
``sts-dev.csv``, score in column 5, sentences in columns 6 and 7, each presented as
``' '.join(s.split())``), then :meth:`Encoder.encode` (the encoder's own normalisation,
template and pooling). :func:`make_scorer` prefers the evaluation harness.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import DataError

__all__ = ["STSB_DEV", "TASK", "find_stsb_dev", "read_stsb_dev", "stsb_dev_score", "make_scorer"]

log = logging.getLogger(__name__)

STSB_DEV = Path("downstream") / "STS" / "STSBenchmark" / "sts-dev.csv"
TASK = "STSBenchmark-dev"


def find_stsb_dev(data_root: str | Path | None) -> Path:
    """``<root>/downstream/STS/STSBenchmark/sts-dev.csv`` (root: argument, else ``$PROMPTEOL_DATA``)."""
    root = data_root or os.environ.get("PROMPTEOL_DATA")
    if not root:
        raise DataError(
            "evaluation on STS-B dev needs the SentEval data root: pass --eval-data DIR (or set PROMPTEOL_DATA) "
            "to a folder holding downstream/STS/STSBenchmark/sts-dev.csv, or --eval-every 0 to train without it"
        )
    path = Path(root) / STSB_DEV
    if not path.is_file():
        path = Path(root)  # also accept the file itself
    if not path.is_file():
        raise DataError(f"{Path(root) / STSB_DEV} is missing; is {root} a SentEval data root (it holds downstream/)?")
    return path


def read_stsb_dev(path: str | Path) -> tuple[list[str], list[str], np.ndarray]:
    """Sentence pairs and gold scores of ``sts-dev.csv`` (1500 pairs)."""
    s1, s2, gold = [], [], []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").split("\n"), start=1):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) < 7:
            raise DataError(f"{path} line {n}: expected >= 7 tab-separated columns, got {len(cols)}")
        s1.append(" ".join(cols[5].split()))
        s2.append(" ".join(cols[6].split()))
        gold.append(float(cols[4]))
    return s1, s2, np.asarray(gold)


def stsb_dev_score(encoder, path: str | Path, batch_size: int = 64) -> float:
    """Spearman x100 of cos(u, v) against the gold scores (SentEval's STSBenchmark dev)."""
    from scipy.stats import spearmanr

    s1, s2, gold = read_stsb_dev(path)
    vecs = encoder.encode(s1 + s2, batch_size=batch_size, use_cache=False, show_progress=False)  # (2N, H)
    u, v = vecs[: len(s1)], vecs[len(s1) :]
    cos = (u * v).sum(1) / np.clip(np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1), 1e-12, None)
    return float(spearmanr(cos, gold).correlation * 100)


def make_scorer(data_root: str | Path | None, batch_size: int = 64) -> Callable[[object], float]:
    """A function ``encoder -> STS-B dev score``; fails now (not mid-run) if the data is missing.

    Uses the evaluation harness (:func:`prompteol.evaluation.evaluate`, task ``STSBenchmark-dev``,
    data checked against its sha256) so training selects checkpoints with exactly the numbers
    ``prompteol eval`` reports; :func:`stsb_dev_score` is the fallback without the harness.
    """
    try:
        from ..evaluation import evaluate, verify_data
    except ImportError:  # pragma: no cover - the harness ships with the package
        path = find_stsb_dev(data_root)
        return lambda encoder: stsb_dev_score(encoder, path, batch_size)
    root = data_root or os.environ.get("PROMPTEOL_DATA")
    if not root:
        find_stsb_dev(root)  # raises with the training-specific hint
    verify_data(root, [TASK])

    def score(encoder) -> float:
        result = evaluate(encoder, tasks=[TASK], data_dir=root, batch_size=batch_size, progress=False)
        return float(result["tasks"][TASK]["score"])

    return score
