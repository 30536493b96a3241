"""SentEval's transfer protocols with scikit-learn's LogisticRegression.

SentEval (``usepytorch=True``, as SimCSE/PromptEOL run it) trains a linear softmax layer
with Adam/RMSprop, weight decay ``l2`` in {1e-5, 1e-4, 1e-3, 1e-2} on the mean cross-entropy,
and early stopping. We fit the same model to convergence with L-BFGS instead. Mean loss +
(l2/2)||w||^2 has the same minimiser as sklearn's ``C * sum(loss) + 1/2 ||w||^2`` when::

    C = 1 / (l2 * n_train)        # n_train = examples in that fit

so the L2 grid keeps its meaning (the intercept is not penalised by sklearn). Features are
centred on the training part's mean first: with an unpenalised intercept the optimum is the
same, and L-BFGS converges much faster on LLM states, which share a large mean. Everything
else follows SentEval: StratifiedKFold(shuffle=True, random_state=1111) on the examples in
SentEval's sorted order, a grid score is the mean fold accuracy rounded to 2 decimals and
the first best one wins, fold accuracies are rounded to 2 decimals before averaging.

- ``inner-kfold`` (MR, CR, SUBJ, MPQA): k outer folds; on each training part, k inner folds
  pick l2; refit on the whole training part; ``acc`` = mean test-fold accuracy, ``devacc`` =
  mean of the best inner scores.
- ``kfold`` (TREC, MRPC): k folds on train pick l2; refit on train; score the test split.
- ``split`` (SST-2): fit on train for each l2, pick on dev, score test.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import numpy as np

__all__ = ["L2_GRID", "SEED", "MAX_ITER", "l2_to_C", "inner_kfold", "kfold_then_test", "split_select"]

#: SentEval's weight-decay grid for its PyTorch classifier (``[10**t for t in range(-5, -1)]``)
L2_GRID = (1e-5, 1e-4, 1e-3, 1e-2)
#: SentEval's seed for the fold shuffles and the classifier
SEED = 1111
#: L-BFGS iteration cap; fits that hit it are counted in the results (``not_converged``)
MAX_ITER = 1000
#: BLAS/OpenMP threads during the fits. One thread is deterministic (no threaded reductions) and,
#: on a shared CPU, far faster: OpenMP workers spinning under contention slowed a 4k x 256 fit 60x.
CLASSIFIER_THREADS = 1


def l2_to_C(l2: float, n_train: int) -> float:
    """sklearn's inverse regularisation strength equivalent to weight decay ``l2`` on a mean loss."""
    return 1.0 / (l2 * n_train)


@dataclass
class FitStats:
    fits: int = 0
    not_converged: int = 0


def _fit(X: np.ndarray, y: np.ndarray, l2: float, stats: FitStats):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=l2_to_C(l2, len(y)), max_iter=MAX_ITER, random_state=SEED)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # counted below instead
        clf.fit(X, y)
    stats.fits += 1
    if int(np.max(clf.n_iter_)) >= MAX_ITER:
        stats.not_converged += 1
    return clf


def _limited_threads(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=CLASSIFIER_THREADS):
            return fn(*args, **kwargs)

    return wrapper


class _Centred:
    """A classifier fitted on centred features; scores and predicts raw features."""

    def __init__(self, X: np.ndarray, y: np.ndarray, l2: float, stats: FitStats):
        X = np.asarray(X, dtype=np.float64)  # fit in double precision, whatever the encoder gave
        self.mean = X.mean(axis=0)  # (H,)
        self.clf = _fit(X - self.mean, y, l2, stats)

    def score(self, X: np.ndarray, y: np.ndarray) -> float:
        return self.clf.score(X - self.mean, y)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.clf.predict(X - self.mean)


def _folds(k: int):
    from sklearn.model_selection import StratifiedKFold

    return StratifiedKFold(n_splits=k, shuffle=True, random_state=SEED)


def _grid_scores(X: np.ndarray, y: np.ndarray, k: int, stats: FitStats) -> list[float]:
    """Mean k-fold accuracy (x100, 2 decimals) of each l2 of the grid."""
    scores = []
    splits = list(_folds(k).split(X, y))
    for l2 in L2_GRID:
        accs = [_Centred(X[tr], y[tr], l2, stats).score(X[va], y[va]) for tr, va in splits]
        scores.append(float(round(100 * np.mean(accs), 2)))
    return scores


@_limited_threads
def inner_kfold(X: np.ndarray, y: np.ndarray, k: int) -> dict:
    """SentEval's InnerKFoldClassifier (MR, CR, SUBJ, MPQA)."""
    stats = FitStats()
    dev, test, chosen = [], [], []
    for tr, te in _folds(k).split(X, y):
        scores = _grid_scores(X[tr], y[tr], k, stats)
        best = int(np.argmax(scores))  # first best, as SentEval
        dev.append(scores[best])
        chosen.append(L2_GRID[best])
        clf = _Centred(X[tr], y[tr], L2_GRID[best], stats)
        test.append(round(100 * clf.score(X[te], y[te]), 2))
    return {
        "acc": float(round(np.mean(test), 2)), "devacc": float(round(np.mean(dev), 2)),
        "fold_acc": [float(a) for a in test], "l2": chosen, "kfold": k, "n": int(len(y)),
        "fits": stats.fits, "not_converged": stats.not_converged,
    }  # fmt: skip


@_limited_threads
def kfold_then_test(X: np.ndarray, y: np.ndarray, X_test: np.ndarray, y_test: np.ndarray, k: int) -> dict:
    """SentEval's KFoldClassifier (TREC, MRPC): k-fold on train picks l2, then train -> test."""
    stats = FitStats()
    scores = _grid_scores(X, y, k, stats)
    best = int(np.argmax(scores))
    clf = _Centred(X, y, L2_GRID[best], stats)
    yhat = clf.predict(X_test)
    return {
        "acc": float(round(100 * clf.score(X_test, y_test), 2)), "devacc": float(np.max(scores)),
        "l2": L2_GRID[best], "grid": dict(zip(map(str, L2_GRID), scores)), "kfold": k,
        "n_train": int(len(y)), "n_test": int(len(y_test)), "fits": stats.fits,
        "not_converged": stats.not_converged, "_yhat": yhat,
    }  # fmt: skip


@_limited_threads
def split_select(
    X: np.ndarray, y: np.ndarray, X_dev: np.ndarray, y_dev: np.ndarray, X_test: np.ndarray, y_test: np.ndarray
) -> dict:
    """SentEval's SplitClassifier (SST-2): pick l2 on dev, score test."""
    stats = FitStats()
    fitted, scores = [], []
    for l2 in L2_GRID:
        clf = _Centred(X, y, l2, stats)
        fitted.append(clf)
        scores.append(round(100 * clf.score(X_dev, y_dev), 2))
    best = int(np.argmax(scores))
    # SentEval refits with the chosen l2; an L-BFGS fit to convergence is deterministic, so we reuse it.
    return {
        "acc": float(round(100 * fitted[best].score(X_test, y_test), 2)), "devacc": float(np.max(scores)),
        "l2": L2_GRID[best], "grid": dict(zip(map(str, L2_GRID), scores)), "n_train": int(len(y)),
        "n_dev": int(len(y_dev)), "n_test": int(len(y_test)), "fits": stats.fits,
        "not_converged": stats.not_converged,
    }  # fmt: skip
