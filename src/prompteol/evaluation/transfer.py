"""SentEval's transfer protocols with three interchangeable classifiers.

``classifier="lbfgs"`` (the default) is scikit-learn's L-BFGS LogisticRegression, a stand-in for
SentEval's PyTorch classifier: SentEval (``usepytorch=True``, as SimCSE/PromptEOL run it) trains
a linear softmax layer with Adam/RMSprop, weight decay ``l2`` in {1e-5, 1e-4, 1e-3, 1e-2} on the
mean cross-entropy, and early stopping. We fit the same model to convergence with L-BFGS instead.
Mean loss + (l2/2)||w||^2 has the same minimiser as sklearn's ``C * sum(loss) + 1/2 ||w||^2`` when::

    C = 1 / (l2 * n_train)        # n_train = examples in that fit

so the L2 grid keeps its meaning (the intercept is not penalised by sklearn). Features are
centred on the training part's mean first: with an unpenalised intercept the optimum is the
same, and L-BFGS converges much faster on LLM states, which share a large mean.

``classifier="newton"`` fits the same objective with scikit-learn's Newton-Cholesky solver
(``tol=1e-8``): second order, so it reaches the optimum where L-BFGS stops at its iteration cap
(MRPC's ``[|u-v|, u*v]`` features of LLM states are badly scaled: docs/evaluation.md). Where L-BFGS
converges the two agree to the last sentence or two; multiclass tasks (TREC) need scikit-learn >= 1.6
(multinomial Newton-Cholesky).

``classifier="senteval"`` is SentEval's own classifier and early-stopping protocol
(:mod:`prompteol.evaluation.senteval_classifier`): each grid fit early-stops on the fold it is
scored on (SentEval passes it as ``validation_data``), the final refits of the k-fold protocols
hold out 5% of the training part (``validation_split=0.05``), SST2's fits early-stop on dev.

Everything else follows SentEval for both: StratifiedKFold(shuffle=True, random_state=seed) on
the examples in SentEval's sorted order (seed 1111 = SentEval's), a grid score is the mean fold
accuracy rounded to 2 decimals and the first best one wins, fold accuracies are rounded to 2
decimals before averaging. ``seed`` also seeds the classifier (SentEval's ``config['seed']``).

- ``inner-kfold`` (MR, CR, SUBJ, MPQA): k outer folds; on each training part, k inner folds
  pick l2; refit on the whole training part; ``acc`` = mean test-fold accuracy, ``devacc`` =
  mean of the best inner scores.
- ``kfold`` (TREC, MRPC): k folds on train pick l2; refit on train; score the test split.
- ``split`` (SST-2): fit on train for each l2, pick on dev, score test.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError

__all__ = [
    "L2_GRID",
    "SEED",
    "MAX_ITER",
    "check_max_iter",
    "CLASSIFIERS",
    "l2_to_C",
    "inner_kfold",
    "kfold_then_test",
    "split_select",
]

#: SentEval's weight-decay grid for its PyTorch classifier (``[10**t for t in range(-5, -1)]``)
L2_GRID = (1e-5, 1e-4, 1e-3, 1e-2)
#: SentEval's seed for the fold shuffles and the classifier
SEED = 1111
#: L-BFGS iteration cap; fits that hit it are counted in the results (``not_converged``)
MAX_ITER = 1000
#: BLAS/OpenMP threads during the L-BFGS fits. One thread is deterministic (no threaded reductions)
#: and, on a shared CPU, far faster: OpenMP workers spinning under contention slowed a 4k x 256 fit
#: 60x. The ``senteval`` classifier runs on torch's threads, as the caller set them.
CLASSIFIER_THREADS = 1
#: the classifiers: scikit-learn L-BFGS to convergence (or its cap), the same objective by Newton-Cholesky,
#: or SentEval's PyTorch protocol
CLASSIFIERS = ("lbfgs", "newton", "senteval")
#: Newton-Cholesky's tolerance and iteration cap (it converges in tens of iterations)
NEWTON_TOL, NEWTON_MAX_ITER = 1e-8, 200
#: the scikit-learn solver of each sklearn classifier
SOLVERS = {"lbfgs": "lbfgs", "newton": "newton-cholesky"}


def l2_to_C(l2: float, n_train: int) -> float:
    """sklearn's inverse regularisation strength equivalent to weight decay ``l2`` on a mean loss."""
    return 1.0 / (l2 * n_train)


@dataclass
class FitStats:
    fits: int = 0
    not_converged: int = 0  # lbfgs: fits that hit MAX_ITER
    epochs: int = 0  # senteval: epochs trained, over all fits
    max_epoch_reached: int = 0  # senteval: fits that ran to max_epoch without early stopping

    def record(self, classifier: str) -> dict:
        if classifier in SOLVERS:
            return {"fits": self.fits, "not_converged": self.not_converged}
        return {"fits": self.fits, "epochs": self.epochs, "max_epoch_reached": self.max_epoch_reached}


def _fit(X: np.ndarray, y: np.ndarray, l2: float, stats: FitStats, seed: int = SEED, max_iter: int = MAX_ITER,
         solver: str = "lbfgs"):  # fmt: skip
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    if solver == "newton-cholesky":
        _check_newton_multiclass(y)
        clf = LogisticRegression(C=l2_to_C(l2, len(y)), solver=solver, tol=NEWTON_TOL, max_iter=max_iter,
                                 random_state=seed)  # fmt: skip
    else:
        clf = LogisticRegression(C=l2_to_C(l2, len(y)), max_iter=max_iter, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # counted below instead
        clf.fit(X, y)
    stats.fits += 1
    if int(np.max(clf.n_iter_)) >= max_iter:
        stats.not_converged += 1
    return clf


class _Centred:
    """An L-BFGS classifier fitted on centred features; scores and predicts raw features."""

    def __init__(self, X: np.ndarray, y: np.ndarray, l2: float, stats: FitStats, seed: int = SEED,
                 max_iter: int = MAX_ITER, solver: str = "lbfgs"):  # fmt: skip
        X = np.asarray(X, dtype=np.float64)  # fit in double precision, whatever the encoder gave
        self.mean = X.mean(axis=0)  # (H,)
        self.clf = _fit(X - self.mean, y, l2, stats, seed, max_iter, solver)

    def score(self, X: np.ndarray, y: np.ndarray) -> float:
        return self.clf.score(X - self.mean, y)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.clf.predict(X - self.mean)


class _Fitter:
    """Fits one classifier for one l2. ``val``: the held-out data SentEval's classifier early-stops
    on (its ``validation_data``); ``None`` = hold out ``VALIDATION_SPLIT`` of the training data.
    L-BFGS and Newton ignore ``val``; ``max_iter`` is L-BFGS's iteration cap (the others ignore it)."""

    def __init__(self, classifier: str, seed: int, params, nclasses: int, max_iter: int = MAX_ITER):
        if classifier not in CLASSIFIERS:
            raise ConfigError(f"classifier should be one of {list(CLASSIFIERS)}, got {classifier!r}")
        self.classifier, self.seed, self.nclasses = classifier, int(seed), int(nclasses)
        self.max_iter = check_max_iter(max_iter) if classifier == "lbfgs" else NEWTON_MAX_ITER
        self.stats = FitStats()
        if classifier == "senteval":
            from .senteval_classifier import SENTEVAL_PARAMS

            self.params = params if params is not None else SENTEVAL_PARAMS["test"]
        else:
            self.params = None

    def __call__(self, X: np.ndarray, y: np.ndarray, l2: float, val: tuple | None = None):
        if self.classifier in SOLVERS:
            return _Centred(X, y, l2, self.stats, self.seed, self.max_iter, SOLVERS[self.classifier])
        from .senteval_classifier import VALIDATION_SPLIT, SentEvalLogReg

        clf = SentEvalLogReg(X.shape[1], self.nclasses, l2reg=l2, params=self.params, seed=self.seed)
        if val is None:
            clf.fit(X, y, validation_split=VALIDATION_SPLIT)
        else:
            clf.fit(X, y, validation_data=val)
        self.stats.fits += 1
        self.stats.epochs += clf.nepoch
        self.stats.max_epoch_reached += int(not clf.stopped_early)
        return clf

    def threads(self):
        """One BLAS thread around the scikit-learn fits; torch's own setting for the senteval classifier."""
        if self.classifier not in SOLVERS:
            return contextlib.nullcontext()
        from threadpoolctl import threadpool_limits

        return threadpool_limits(limits=CLASSIFIER_THREADS)

    def record(self) -> dict:
        return self.stats.record(self.classifier)


def check_max_iter(max_iter) -> int:
    """``max_iter`` as a whole number >= 1, else a :class:`ConfigError`."""
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise ConfigError(f"max_iter (the L-BFGS iteration cap) should be a whole number >= 1, got {max_iter!r}")
    return int(max_iter)


def _check_newton_multiclass(y: np.ndarray) -> None:
    """Multinomial Newton-Cholesky exists from scikit-learn 1.6 (older versions fit one-vs-rest: another objective)."""
    if len(np.unique(y)) <= 2:
        return
    import sklearn

    major, minor = (int(p) for p in sklearn.__version__.split(".")[:2])
    if (major, minor) < (1, 6):
        raise ConfigError(f"classifier 'newton' on a multiclass task needs scikit-learn >= 1.6 (multinomial "
                          f"Newton-Cholesky); this is {sklearn.__version__}: upgrade it or use --classifier lbfgs")  # fmt: skip


def _nclasses(*labels: np.ndarray) -> int:
    return int(max(int(np.max(y)) for y in labels if len(y))) + 1


def _folds(k: int, seed: int = SEED):
    from sklearn.model_selection import StratifiedKFold

    return StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)


def _grid_scores(X: np.ndarray, y: np.ndarray, k: int, fit: _Fitter) -> list[float]:
    """Mean k-fold accuracy (x100, 2 decimals) of each l2 of the grid."""
    scores = []
    splits = list(_folds(k, fit.seed).split(X, y))
    for l2 in L2_GRID:
        accs = [fit(X[tr], y[tr], l2, val=(X[va], y[va])).score(X[va], y[va]) for tr, va in splits]
        scores.append(float(round(100 * np.mean(accs), 2)))
    return scores


def inner_kfold(
    X: np.ndarray, y: np.ndarray, k: int, *, seed: int = SEED, classifier: str = "lbfgs", params=None,
    nclasses: int | None = None, max_iter: int = MAX_ITER,
) -> dict:  # fmt: skip
    """SentEval's InnerKFoldClassifier (MR, CR, SUBJ, MPQA).

    ``params``: the :class:`~prompteol.evaluation.senteval_classifier.SentEvalParams` of the
    ``senteval`` classifier (default: the ``test`` ones); ignored by ``lbfgs``. ``max_iter``: the
    ``lbfgs`` iteration cap (fits that reach it are counted in ``not_converged``).
    """
    fit = _Fitter(classifier, seed, params, nclasses or _nclasses(y), max_iter)
    dev, test, chosen = [], [], []
    with fit.threads():
        for tr, te in _folds(k, seed).split(X, y):
            scores = _grid_scores(X[tr], y[tr], k, fit)
            best = int(np.argmax(scores))  # first best, as SentEval
            dev.append(scores[best])
            chosen.append(L2_GRID[best])
            clf = fit(X[tr], y[tr], L2_GRID[best])  # senteval: early-stops on 5% of the training part
            test.append(round(100 * clf.score(X[te], y[te]), 2))
    return {
        "acc": float(round(np.mean(test), 2)), "devacc": float(round(np.mean(dev), 2)),
        "fold_acc": [float(a) for a in test], "l2": chosen, "kfold": k, "n": int(len(y)), **fit.record(),
    }  # fmt: skip


def kfold_then_test(
    X: np.ndarray, y: np.ndarray, X_test: np.ndarray, y_test: np.ndarray, k: int, *, seed: int = SEED,
    classifier: str = "lbfgs", params=None, nclasses: int | None = None, max_iter: int = MAX_ITER,
) -> dict:  # fmt: skip
    """SentEval's KFoldClassifier (TREC, MRPC): k-fold on train picks l2, then train -> test."""
    fit = _Fitter(classifier, seed, params, nclasses or _nclasses(y, y_test), max_iter)
    with fit.threads():
        scores = _grid_scores(X, y, k, fit)
        best = int(np.argmax(scores))
        clf = fit(X, y, L2_GRID[best])  # senteval: early-stops on 5% of train
        yhat = clf.predict(X_test)
        acc = clf.score(X_test, y_test)
    return {
        "acc": float(round(100 * acc, 2)), "devacc": float(np.max(scores)),
        "l2": L2_GRID[best], "grid": dict(zip(map(str, L2_GRID), scores)), "kfold": k,
        "n_train": int(len(y)), "n_test": int(len(y_test)), **fit.record(), "_yhat": yhat,
    }  # fmt: skip


def split_select(
    X: np.ndarray, y: np.ndarray, X_dev: np.ndarray, y_dev: np.ndarray, X_test: np.ndarray, y_test: np.ndarray,
    *, seed: int = SEED, classifier: str = "lbfgs", params=None, nclasses: int | None = None,
    max_iter: int = MAX_ITER,
) -> dict:  # fmt: skip
    """SentEval's SplitClassifier (SST-2): pick l2 on dev, score test (senteval: early-stopping on dev)."""
    fit = _Fitter(classifier, seed, params, nclasses or _nclasses(y, y_dev, y_test), max_iter)
    fitted, scores = [], []
    with fit.threads():
        for l2 in L2_GRID:
            clf = fit(X, y, l2, val=(X_dev, y_dev))
            fitted.append(clf)
            scores.append(round(100 * clf.score(X_dev, y_dev), 2))
        best = int(np.argmax(scores))
        # SentEval refits the chosen l2 with the same seed, data and validation set. Both fits are
        # deterministic (L-BFGS / Newton to convergence; the senteval classifier given its seed), so the refit
        # would be the same model: we reuse it.
        acc = fitted[best].score(X_test, y_test)
    return {
        "acc": float(round(100 * acc, 2)), "devacc": float(np.max(scores)),
        "l2": L2_GRID[best], "grid": dict(zip(map(str, L2_GRID), scores)), "n_train": int(len(y)),
        "n_dev": int(len(y_dev)), "n_test": int(len(y_test)), **fit.record(),
    }  # fmt: skip
