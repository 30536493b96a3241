"""Triplets from SentEval's SNLI files (``s1.<split>``, ``s2.<split>``, ``labels.<split>``).

SimCSE built its NLI training file by pairing each premise with its entailment hypothesis
(positive) and its contradiction hypothesis (hard negative). The same construction on
SNLI dev/test gives about 2.9k triplets per split: premises are grouped by text (in order
of first appearance) and their i-th entailment is paired with their i-th contradiction
(SNLI collects one hypothesis per label from each annotator, so this keeps the hypotheses
of one annotator together). Sentences are presented as ``' '.join(s.split())``, the form
used at evaluation.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from .data import Triplet

__all__ = ["snli_triplets", "SNLI_SPLITS"]

SNLI_SPLITS = ("train", "dev", "test")
_LABELS = ("entailment", "neutral", "contradiction")


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"{path} is missing; an SNLI folder holds s1.<split>, s2.<split> and labels.<split>")
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def snli_triplets(data_dir: str | Path, splits=("dev", "test")) -> list[Triplet]:
    """(premise, entailment, contradiction) triplets from the given splits, in file order."""
    folder = Path(data_dir)
    out: list[Triplet] = []
    for split in splits:
        if split not in SNLI_SPLITS:
            raise DataError(f"unknown SNLI split {split!r}; valid: {list(SNLI_SPLITS)}")
        s1, s2, labels = (_lines(folder / f"{name}.{split}") for name in ("s1", "s2", "labels"))
        if not len(s1) == len(s2) == len(labels):
            raise DataError(
                f"{folder}: s1.{split}, s2.{split} and labels.{split} should have the same number of lines, "
                f"got {len(s1)}, {len(s2)} and {len(labels)}"
            )
        groups: dict[str, dict[str, list[str]]] = {}
        for n, (premise, hypothesis, label) in enumerate(zip(s1, s2, labels), start=1):
            label = label.strip()
            if label not in _LABELS:
                raise DataError(f"{folder / f'labels.{split}'} line {n}: label {label!r} is not one of {list(_LABELS)}")
            premise, hypothesis = " ".join(premise.split()), " ".join(hypothesis.split())
            if not premise or not hypothesis:
                continue  # nothing to learn from an empty sentence
            groups.setdefault(premise, {k: [] for k in _LABELS})[label].append(hypothesis)
        for premise, by_label in groups.items():
            for pos, neg in zip(by_label["entailment"], by_label["contradiction"]):
                out.append(Triplet(premise, pos, neg))
    return out
