"""STS scoring and aggregation on tiny fixtures: "all" over the concatenation vs SentEval's mean/wmean."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr

from prompteol.evaluation import DataFile, Part, Task, cosine_pairs, evaluate, score_sts
from prompteol.evaluation import tasks as tasks_mod


def test_cosine_pairs_matches_senteval_conventions():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [np.nan, 1.0]])
    b = np.array([[2.0, 0.0], [-1.0, -1.0], [1.0, 0.0], [0.0, 3.0]])
    np.testing.assert_allclose(cosine_pairs(a, b), [1.0, -1.0, 0.0, 1.0])  # zero vector -> 0, NaN -> 0


def test_single_split_scores():
    pred, gold = np.array([0.1, 0.4, 0.35, 0.8]), np.array([1.0, 2.0, 3.0, 4.0])
    res = score_sts(pred, gold)
    assert res["n"] == 4
    assert res["spearman"] == pytest.approx(100 * spearmanr(pred, gold)[0])
    assert res["pearson"] == pytest.approx(100 * pearsonr(pred, gold)[0])


def test_all_mean_and_wmean_differ_as_defined():
    # subset A is ranked perfectly, subset B inversely; B's scale sits above A's
    pred = np.array([0.1, 0.2, 0.3, 0.9, 0.8, 0.7, 0.6])
    gold = np.array([1.0, 2.0, 3.0, 4.0, 4.5, 4.8, 5.0])
    subsets = ["A", "A", "A", "B", "B", "B", "B"]
    res = score_sts(pred, gold, subsets)
    assert res["subsets"]["A"] == {"spearman": pytest.approx(100.0), "pearson": pytest.approx(100.0), "n": 3}
    assert res["subsets"]["B"]["spearman"] == pytest.approx(-100.0) and res["subsets"]["B"]["n"] == 4
    assert res["spearman"]["mean"] == pytest.approx(0.0)  # (100 - 100) / 2
    assert res["spearman"]["wmean"] == pytest.approx((3 * 100 - 4 * 100) / 7)
    assert res["spearman"]["all"] == pytest.approx(100 * spearmanr(pred, gold)[0])  # one ranking of all 7 pairs
    assert res["spearman"]["all"] not in (res["spearman"]["mean"], res["spearman"]["wmean"])
    assert res["n"] == 7


def _sts_fixture(root):
    """Two tiny STS subsets in SentEval format; the gold file of 'b' has blank (unscored) lines."""
    folder = root / "downstream" / "STS" / "TINY"
    folder.mkdir(parents=True)
    files = {
        "STS.input.a.txt": "a man  plays guitar .\ta man plays a guitar .\nthe cat sleeps\ta dog barks\n"
        "two men talk\ttwo people talk\n",
        "STS.gs.a.txt": "4.8\n0.2\n3.5\n",
        "STS.input.b.txt": "x y\tx y z\nunscored one\tunscored two\nred car\tblue car\nold man\told woman\n",
        "STS.gs.b.txt": "4.0\n\n2.0\n\n",
    }
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    rows = {"STS.input.a.txt": 3, "STS.gs.a.txt": 3, "STS.input.b.txt": 4, "STS.gs.b.txt": 2}
    manifest = {
        f"downstream/STS/TINY/{n}": DataFile(
            f"downstream/STS/TINY/{n}", rows[n], hashlib.sha256((folder / n).read_bytes()).hexdigest()
        )
        for n in files
    }
    parts = tuple(Part(s, (f"downstream/STS/TINY/STS.input.{s}.txt", f"downstream/STS/TINY/STS.gs.{s}.txt"))
                  for s in ("a", "b"))  # fmt: skip
    task = Task("TINY", "sts", "sts-subset", parts, "spearman_all", "all", size=5)
    return task, manifest


class _Recorder:
    """An object with nothing but ``encode``: returns deterministic vectors and records its input."""

    def __init__(self):
        self.seen: list[list[str]] = []

    def encode(self, sentences):
        self.seen.append(list(sentences))
        rng = np.random.default_rng(0)
        table = {}
        return np.stack([table.setdefault(s, rng.normal(size=8)) for s in sentences])


def test_evaluate_drops_blank_gold_and_aggregates(tmp_path, monkeypatch):
    task, manifest = _sts_fixture(tmp_path)
    for k, v in manifest.items():
        monkeypatch.setitem(tasks_mod.MANIFEST, k, v)
    enc = _Recorder()
    res = evaluate(enc, tasks=[task], data_dir=tmp_path)
    out = res["tasks"]["TINY"]
    assert out["n"] == 5 and out["subsets"]["a"]["n"] == 3 and out["subsets"]["b"]["n"] == 2
    # the unscored pairs were never encoded; sentences come as SentEval presents them, each once
    (batch,) = enc.seen
    assert "unscored one" not in batch and "old man" not in batch
    assert "a man plays guitar ." in batch and len(batch) == len(set(batch)) == 10
    assert out["score"] == out["spearman"]["all"]
    assert res["data"]["sha256"] == {k: v.sha256 for k, v in manifest.items()}
    assert res["averages"] == {}  # not a complete group
