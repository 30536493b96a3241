"""The sentences every configuration encodes: STS-B train (timed) and the first pairs of STS-B dev (accuracy)."""

from __future__ import annotations

import os

import numpy as np

from .configs import STS_SPLIT


def load_sentences(data_dir: str | None, n: int) -> list[str]:
    """The first ``n`` unique STS-B train sentences, as SentEval presents them (the harness's reader)."""
    from ..evaluation.data import load_sts_pairs

    pairs = load_sts_pairs("STSBenchmark-train", _data_root(data_dir), verify=False)
    out: dict[str, None] = {}
    for a, b in zip(pairs.sentences1, pairs.sentences2):
        out[a] = None
        out[b] = None
        if len(out) >= n:
            break
    return list(out)[:n]


def load_sts_subset(data_dir: str | None, n_pairs: int):
    """The first ``n_pairs`` pairs of STS-B dev (file order): ``(sentences1, sentences2, gold scores)``."""
    from ..evaluation.data import load_sts_pairs

    pairs = load_sts_pairs(STS_SPLIT, _data_root(data_dir), verify=False)
    return pairs.sentences1[:n_pairs], pairs.sentences2[:n_pairs], np.asarray(pairs.scores[:n_pairs])


class StsDevSubset:
    """The first ``n_pairs`` pairs of STS-B dev as unique sentences to encode, and the Spearman x100 of vectors
    encoded in that order (the benchmark scripts' accuracy column)."""

    def __init__(self, data_dir: str | None, n_pairs: int):
        self.sentences1, self.sentences2, self.gold = load_sts_subset(data_dir, n_pairs)
        self.sentences = list(dict.fromkeys([*self.sentences1, *self.sentences2]))
        row = {s: i for i, s in enumerate(self.sentences)}
        self._rows1 = [row[s] for s in self.sentences1]
        self._rows2 = [row[s] for s in self.sentences2]

    def __len__(self) -> int:
        return len(self.gold)

    def score(self, vectors: np.ndarray) -> float:
        from ..evaluation.sts import cosine_pairs, score_sts

        return float(score_sts(cosine_pairs(vectors[self._rows1], vectors[self._rows2]), self.gold)["spearman"])


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of each row of ``a`` with the same row of ``b``."""
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def _data_root(data_dir: str | None) -> str:
    return data_dir or os.environ.get("PROMPTEOL_DATA") or "../shared/data/senteval"
