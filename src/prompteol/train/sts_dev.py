"""STS-B dev, the checkpoint-selection split, scored by the evaluation harness.

Training selects checkpoints with exactly the numbers ``prompteol eval --tasks
STSBenchmark-dev`` reports: one reader (:mod:`prompteol.evaluation.data`, files checked
against their sha256) and one scorer (:mod:`prompteol.evaluation.sts`) serve evaluation,
training and the benchmarks.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from ..errors import DataError

__all__ = ["TASK", "make_scorer"]

TASK = "STSBenchmark-dev"


def make_scorer(data_root: str | Path | None, batch_size: int = 64) -> Callable[[object], float]:
    """A function ``encoder -> STS-B dev Spearman x100``; fails now (not mid-run) if the data is missing."""
    from ..encoder.encode_options import EncodeOptions
    from ..evaluation import evaluate, verify_data

    root = data_root or os.environ.get("PROMPTEOL_DATA")
    if not root:
        raise DataError(
            "evaluation on STS-B dev needs the SentEval data root: pass --eval-data DIR (or set PROMPTEOL_DATA) "
            "to a folder holding downstream/STS/STSBenchmark/sts-dev.csv, or --eval-every 0 to train without it"
        )
    verify_data(root, [TASK])

    def score(encoder) -> float:
        # (a training encoder has no embedding cache, and one whose weights changed in place never uses it)
        options = EncodeOptions(batch_size=batch_size, show_progress=False)
        result = evaluate(encoder, tasks=[TASK], data_dir=root, options=options)
        return float(result["tasks"][TASK]["score"])

    return score
