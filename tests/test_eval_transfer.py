"""SentEval's transfer protocols (scikit-learn LogisticRegression) on a deterministic hashed bag of words."""

from __future__ import annotations

import numpy as np
import pytest
from eval_fakes import HashedBoW

from prompteol.evaluation import evaluate, load_task_data
from prompteol.evaluation.transfer import L2_GRID, inner_kfold, kfold_then_test, l2_to_C, split_select


def test_l2_grid_and_c_mapping():
    assert L2_GRID == (1e-5, 1e-4, 1e-3, 1e-2)
    assert l2_to_C(1e-3, 2000) == pytest.approx(0.5)  # C = 1 / (l2 * n_train)


def test_mapping_gives_the_weight_decay_optimum():
    """sklearn's C*sum(loss) + |w|^2/2 with C = 1/(l2 n) has the minimiser of mean(loss) + l2/2 |w|^2."""
    from scipy.optimize import minimize
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5))
    y = (X[:, 0] + 0.5 * rng.normal(size=200) > 0).astype(int)
    l2 = 1e-2

    def objective(params):
        w, b = params[:-1], params[-1]
        z = X @ w + b
        return np.mean(np.logaddexp(0, z) - y * z) + 0.5 * l2 * w @ w  # intercept not penalised

    ref = minimize(objective, np.zeros(6), method="BFGS", options={"gtol": 1e-10}).x
    clf = LogisticRegression(C=l2_to_C(l2, len(y)), tol=1e-10, max_iter=10_000).fit(X, y)
    np.testing.assert_allclose(clf.coef_[0], ref[:-1], atol=1e-5)


def _subj_subset(data_dir, n=1600, dim=512):
    """A class-balanced, deterministic subsample of SUBJ (SentEval order kept)."""
    ex = load_task_data("SUBJ", data_dir)["all"]
    idx = np.concatenate([np.flatnonzero(ex.labels == c)[: n // 2] for c in (0, 1)])
    idx.sort()
    X = HashedBoW(dim=dim).encode([ex.texts[i] for i in idx])
    return X, ex.labels[idx]


def test_inner_kfold_on_subj_beats_chance_and_is_deterministic(data_dir):
    X, y = _subj_subset(data_dir)
    res = inner_kfold(X, y, k=5)
    assert res["acc"] > 70 and res["devacc"] > 70  # chance is 50
    assert res["kfold"] == 5 and len(res["fold_acc"]) == 5 and set(res["l2"]) <= set(L2_GRID)
    assert res["fits"] == 5 * (4 * 5 + 1) and res["n"] == len(y)
    assert inner_kfold(X, y, k=5) == res  # identical on rerun


def test_kfold_and_split_protocols(data_dir):
    X, y = _subj_subset(data_dir, n=800, dim=256)
    tr, te = np.arange(0, 800, 2), np.arange(1, 800, 2)
    res = kfold_then_test(X[tr], y[tr], X[te], y[te], k=5)
    assert res["acc"] > 60 and res["l2"] in L2_GRID and res["fits"] == 4 * 5 + 1
    assert res["devacc"] == max(res["grid"].values()) and res["_yhat"].shape == (400,)
    dev, test = te[:200], te[200:]
    res = split_select(X[tr], y[tr], X[dev], y[dev], X[test], y[test])
    assert res["acc"] > 60 and res["fits"] == 4 and res["devacc"] == max(res["grid"].values())


def test_mrpc_pair_features_and_f1(data_dir, monkeypatch):
    """MRPC through evaluate: [|u-v|, u*v] features, accuracy and F1 (train subsampled to stay fast)."""
    from prompteol.evaluation import data as data_mod

    real = data_mod.load_task_data

    def small(task, root):
        out = real(task, root)
        if task.name == "MRPC":
            ex = out["train"]
            keep = slice(0, 600)
            out["train"] = data_mod.Examples(ex.texts[keep], ex.labels[keep], ex.texts_b[keep])
        return out

    monkeypatch.setattr("prompteol.evaluation.runner.load_task_data", small)
    res = evaluate(HashedBoW(dim=64), tasks="MRPC", data_dir=data_dir, mode="fast")["tasks"]["MRPC"]
    assert res["n_train"] == 600 and res["n_test"] == 1725 and res["kfold"] == 5
    assert 0 < res["f1"] <= 100 and res["score"] == res["acc"] > 60


@pytest.mark.slow
def test_subj_fast_mode_end_to_end(data_dir):
    """The whole SUBJ task in fast mode (about 30 s on one core)."""
    first = evaluate(HashedBoW(), tasks="SUBJ", data_dir=data_dir, mode="fast")["tasks"]["SUBJ"]
    assert first["acc"] > 70 and first["n"] == 10000 and first["kfold"] == 5
    second = evaluate(HashedBoW(), tasks="SUBJ", data_dir=data_dir, mode="fast")["tasks"]["SUBJ"]
    assert second["acc"] == first["acc"] and second["fold_acc"] == first["fold_acc"]
