"""SentEval's transfer protocols with both classifiers (scikit-learn L-BFGS, SentEval's PyTorch one), seeds."""

from __future__ import annotations

import numpy as np
import pytest
from eval_fakes import HashedBoW

from prompteol.errors import ConfigError
from prompteol.evaluation import evaluate, load_task_data
from prompteol.evaluation.senteval_classifier import (
    OPTIMIZER_DEFAULTS,
    SENTEVAL_PARAMS,
    VALIDATION_SPLIT,
    SentEvalLogReg,
    SentEvalParams,
)
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


# ---------------------------------------------------------------------------------------- senteval classifier
def _separable(n=300, d=10, seed=0, noise=0.0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] + noise * rng.normal(size=n) > 0).astype(int)
    return X, y


def test_senteval_hyperparameters_fast_and_test():
    """PromptEOL's evaluation.py params['classifier']; max_epoch and the refit hold-out are SentEval's."""
    assert SENTEVAL_PARAMS["test"] == SentEvalParams(optim="adam", batch_size=64, tenacity=5, epoch_size=4,
                                                     max_epoch=200, nhid=0)  # fmt: skip
    assert SENTEVAL_PARAMS["fast"] == SentEvalParams(optim="rmsprop", batch_size=32, tenacity=3, epoch_size=2,
                                                     max_epoch=200, nhid=0)  # fmt: skip
    assert SentEvalParams() == SENTEVAL_PARAMS["test"]  # MLP's own defaults
    assert VALIDATION_SPLIT == 0.05
    import torch

    # the optimiser settings are PyTorch's defaults (SentEval passes only weight_decay)
    p = [torch.nn.Parameter(torch.zeros(1))]
    adam, rms = torch.optim.Adam(p).defaults, torch.optim.RMSprop(p).defaults
    assert {k: adam[k] for k in ("lr", "betas", "eps")} == OPTIMIZER_DEFAULTS["adam"]
    assert {k: rms[k] for k in ("lr", "alpha", "eps")} == OPTIMIZER_DEFAULTS["rmsprop"]
    assert rms["momentum"] == 0 and not rms["centered"] and not adam["amsgrad"]
    with pytest.raises(ConfigError):
        SentEvalParams(nhid=50)
    with pytest.raises(ConfigError):
        SentEvalParams(optim="sgd")


@pytest.mark.parametrize("optim", ["adam", "rmsprop"])
def test_optimizer_steps_equal_torch_optim(optim):
    """The transcribed update rules give torch.optim's parameters bit for bit (weight decay included)."""
    import torch

    from prompteol.evaluation.senteval_classifier import _OPTIMIZERS

    g = torch.Generator().manual_seed(0)
    ours = torch.randn(3, 7, generator=g)
    ref = torch.nn.Parameter(ours.clone())
    torch_opt = {"adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop}[optim]([ref], weight_decay=1e-3)
    opt = _OPTIMIZERS[optim](ours, 1e-3, **OPTIMIZER_DEFAULTS[optim])
    for _ in range(25):
        grad = torch.randn(3, 7, generator=g)
        ref.grad = grad.clone()
        torch_opt.step()
        opt.step(grad.clone())
        assert torch.equal(ours, ref.detach())


def _literal_senteval_fit(X, y, Xv, yv, l2, params, seed):
    """SentEval's PyTorchClassifier/MLP as written (global seeds, nn.Linear, autograd, torch.optim), on the CPU."""
    import copy

    import torch

    np.random.seed(seed)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(X.shape[1], int(y.max()) + 1))
    loss_fn = torch.nn.CrossEntropyLoss()
    loss_fn.size_average = False  # as SentEval; no effect on the reduction
    optimizer = {"adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop}[params.optim](model.parameters())
    optimizer.param_groups[0]["weight_decay"] = l2
    trX, trY, dvX, dvY = torch.FloatTensor(X), torch.LongTensor(y), torch.FloatTensor(Xv), torch.LongTensor(yv)
    nepoch, best, stop, count, history = 0, -1, False, 0, []
    while not stop and nepoch <= params.max_epoch:
        for _ in range(nepoch, nepoch + params.epoch_size):
            perm = np.random.permutation(len(trX))
            for i in range(0, len(trX), params.batch_size):
                idx = torch.LongTensor(perm[i : i + params.batch_size])
                loss = loss_fn(model(trX.index_select(0, idx)), trY.index_select(0, idx))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        nepoch += params.epoch_size
        with torch.no_grad():
            acc = (model(dvX).max(1)[1] == dvY).sum().item() / len(dvX)
        history.append(acc)
        if acc > best:
            best, bestmodel = acc, copy.deepcopy(model)
        else:
            if count >= params.tenacity:
                stop = True
            count += 1
    return bestmodel[0], history, nepoch


@pytest.mark.parametrize("mode", ["fast", "test"])
def test_senteval_logreg_equals_a_literal_transcription(mode):
    """Same init, shuffles, stopping round and (to float rounding) weights as SentEval's code; global RNG untouched."""
    import torch

    X, y = _separable(n=500, d=12, noise=1.5)
    Xv, yv, X, y = X[:150], y[:150], X[150:], y[150:]
    ref, history, nepoch = _literal_senteval_fit(X, y, Xv, yv, 1e-3, SENTEVAL_PARAMS[mode], seed=1111)
    np_state, torch_state = np.random.get_state()[1].copy(), torch.random.get_rng_state().clone()
    clf = SentEvalLogReg(12, 2, l2reg=1e-3, params=SENTEVAL_PARAMS[mode], seed=1111)
    best = clf.fit(X, y, validation_data=(Xv, yv))
    assert np.array_equal(np.random.get_state()[1], np_state) and torch.equal(torch.random.get_rng_state(), torch_state)
    assert clf.history == history and clf.nepoch == nepoch and best == max(history)
    np.testing.assert_allclose(clf.weight.numpy(), ref.weight.detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(clf.bias.numpy(), ref.bias.detach().numpy(), atol=1e-5)


def test_senteval_logreg_learns_and_is_deterministic():
    X, y = _separable(n=600, d=10)
    tr, va, te = slice(0, 400), slice(400, 500), slice(500, 600)
    runs = []
    for _ in range(2):
        clf = SentEvalLogReg(10, 2, l2reg=1e-5, params=SENTEVAL_PARAMS["fast"], seed=1111)
        clf.fit(X[tr], y[tr], validation_data=(X[va], y[va]))
        runs.append(clf)
    assert runs[0].score(X[te], y[te]) > 0.95  # separable: chance is 0.5
    assert runs[0].history == runs[1].history and np.array_equal(runs[0].theta.numpy(), runs[1].theta.numpy())
    assert np.array_equal(runs[0].predict(X[te]), runs[1].predict(X[te]))
    other = SentEvalLogReg(10, 2, l2reg=1e-5, params=SENTEVAL_PARAMS["fast"], seed=1112)
    assert not np.array_equal(other.theta.numpy(), SentEvalLogReg(10, 2, seed=1111).theta.numpy())  # init
    # without validation data: validation_split of a seeded permutation
    clf = SentEvalLogReg(10, 2, l2reg=1e-5, params=SENTEVAL_PARAMS["fast"], seed=1111)
    clf.fit(X[:500], y[:500], validation_split=0.05)
    assert clf.score(X[te], y[te]) > 0.95
    with pytest.raises(ConfigError):
        clf.fit(X, y)  # neither validation_data nor validation_split


def test_early_stopping_stops_after_tenacity_and_keeps_the_best_model():
    X, y = _separable(n=400, d=20, noise=6.0)  # noisy: the validation accuracy goes up and down
    params = SENTEVAL_PARAMS["fast"]  # tenacity 3, epoch_size 2
    clf = SentEvalLogReg(20, 2, l2reg=1e-5, params=params, seed=1111)
    clf.fit(X[:200], y[:200], validation_data=(X[200:], y[200:]))
    h = clf.history
    # SentEval counts rounds without improvement (never resetting the count) and stops at the tenacity+1-th
    no_gain = [i for i in range(1, len(h)) if h[i] <= max(h[:i])]
    assert clf.stopped_early and len(no_gain) == params.tenacity + 1 and no_gain[-1] == len(h) - 1
    assert clf.nepoch == len(h) * params.epoch_size < params.max_epoch
    assert h[-1] < max(h)  # the last model is worse: the kept one must be the best
    assert clf.best_round == h.index(max(h)) and clf.score(X[200:], y[200:]) == max(h) == clf.best_accuracy
    # the kept weights are those after the best round: a run capped at that round ends with the same ones
    capped = SentEvalParams(optim="rmsprop", batch_size=32, tenacity=1000, epoch_size=2,
                            max_epoch=clf.best_round * params.epoch_size)  # fmt: skip
    again = SentEvalLogReg(20, 2, l2reg=1e-5, params=capped, seed=1111)
    again.fit(X[:200], y[:200], validation_data=(X[200:], y[200:]))
    assert again.history == h[: clf.best_round + 1] and torch_equal(again.theta, clf.theta)
    # max_epoch ends training when tenacity never does: rounds at nepoch = 0, 2, 4, 6
    short = SentEvalLogReg(20, 2, params=SentEvalParams(optim="rmsprop", tenacity=1000, epoch_size=2, max_epoch=6))
    short.fit(X[:200], y[:200], validation_data=(X[200:], y[200:]))
    assert len(short.history) == 4 == short.rounds_budget() and short.nepoch == 8 and not short.stopped_early


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


def test_senteval_protocols_on_subj(data_dir):
    X, y = _subj_subset(data_dir, n=800, dim=256)
    params = SENTEVAL_PARAMS["fast"]
    res = inner_kfold(X, y, k=3, classifier="senteval", params=params)
    assert res["acc"] > 60 and res["devacc"] > 60  # chance is 50
    assert res["fits"] == 3 * (4 * 3 + 1) and res["epochs"] > 0 and res["max_epoch_reached"] == 0
    assert "not_converged" not in res and set(res["l2"]) <= set(L2_GRID)
    assert inner_kfold(X, y, k=3, classifier="senteval", params=params) == res  # deterministic for a fixed seed
    tr, te = np.arange(0, 800, 2), np.arange(1, 800, 2)
    dev, test = te[:200], te[200:]
    res = split_select(X[tr], y[tr], X[dev], y[dev], X[test], y[test], classifier="senteval", params=params)
    assert res["acc"] > 60 and res["fits"] == 4 and res["devacc"] == max(res["grid"].values())
    with pytest.raises(ConfigError, match="classifier should be one of"):
        inner_kfold(X, y, k=3, classifier="sgd")


def test_seeds_change_the_folds_and_the_classifier(data_dir):
    from prompteol.evaluation.transfer import _folds

    X, y = _subj_subset(data_dir, n=400, dim=128)
    a = [te.tolist() for _, te in _folds(5, 1111).split(X, y)]
    b = [te.tolist() for _, te in _folds(5, 1112).split(X, y)]
    assert a != b and a == [te.tolist() for _, te in _folds(5, 1111).split(X, y)]
    tr, te = np.arange(0, 400, 2), np.arange(1, 400, 2)
    first = kfold_then_test(X[tr], y[tr], X[te], y[te], k=3)
    assert kfold_then_test(X[tr], y[tr], X[te], y[te], k=3, seed=1111)["grid"] == first["grid"]  # 1111 = default
    assert kfold_then_test(X[tr], y[tr], X[te], y[te], k=3, seed=1112)["grid"] != first["grid"]


def _small_mrpc(monkeypatch, n_train=400):
    from prompteol.evaluation import data as data_mod

    real = data_mod.load_task_data

    def small(task, root):
        out = real(task, root)
        if task.name == "MRPC":
            ex = out["train"]
            keep = slice(0, n_train)
            out["train"] = data_mod.Examples(ex.texts[keep], ex.labels[keep], ex.texts_b[keep])
        return out

    monkeypatch.setattr("prompteol.evaluation.runner.load_task_data", small)


def test_three_seeds_report_mean_and_std(data_dir, monkeypatch):
    """seeds=3 with the senteval classifier: per-seed scores, mean (= score), sample std; encoded once."""
    import json

    _small_mrpc(monkeypatch)
    enc = HashedBoW(dim=64)
    out = evaluate(enc, tasks="MRPC", data_dir=data_dir, mode="fast", classifier="senteval", seeds=3)
    json.dumps(out)
    assert len(enc.calls) == 1  # the sentences are encoded once for all seeds
    res = out["tasks"]["MRPC"]
    accs = res["per_seed"]["acc"]
    assert res["seeds"] == [1111, 1112, 1113] and [r["seed"] for r in res["runs"]] == res["seeds"]
    assert accs == [r["acc"] for r in res["runs"]] and len(set(accs)) > 1
    assert res["score"] == res["acc"] == res["mean"] == pytest.approx(np.mean(accs))
    assert res["std"] == pytest.approx(np.std(accs, ddof=1)) and res["std_ddof"] == 1
    assert res["f1"] == pytest.approx(np.mean(res["per_seed"]["f1"]))
    assert res["std_by_metric"]["f1"] == pytest.approx(np.std(res["per_seed"]["f1"], ddof=1))
    assert res["classifier"] == "senteval" and res["n_train"] == 400 and res["kfold"] == 5
    assert all(r["fits"] == 4 * 5 + 1 and r["acc"] > 55 for r in res["runs"])
    proto = out["protocol"]["transfer"]
    assert proto["classifier"] == "senteval" and proto["seeds"] == [1111, 1112, 1113] and "ddof=1" in proto["std"]
    assert proto["hyperparameters"]["optim"] == "rmsprop" and proto["hyperparameters"]["batch_size"] == 32
    assert proto["hyperparameters"]["tenacity"] == 3 and proto["hyperparameters"]["epoch_size"] == 2
    assert proto["hyperparameters"]["max_epoch"] == 200 and proto["hyperparameters"]["optimizer_defaults"]["lr"] == 0.01


def test_one_seed_keeps_the_single_run_shape(data_dir, monkeypatch):
    _small_mrpc(monkeypatch)
    out = evaluate(HashedBoW(dim=64), tasks="MRPC", data_dir=data_dir, mode="fast")
    res = out["tasks"]["MRPC"]
    assert res["classifier"] == "lbfgs" and res["score"] == res["acc"] and "not_converged" in res
    assert not {"mean", "std", "seeds", "runs", "per_seed"} & set(res)
    proto = out["protocol"]["transfer"]
    assert proto["classifier"] == "lbfgs" and proto["seed"] == 1111 and proto["seeds"] == [1111] and "std" not in proto
    assert proto["hyperparameters"]["solver"] == "lbfgs" and proto["kfold"] == 5
    two = evaluate(HashedBoW(dim=64), tasks="MRPC", data_dir=data_dir, mode="fast", seeds=2)["tasks"]["MRPC"]
    assert two["runs"][0]["acc"] == res["acc"]  # seed 1111 first, the same run as a single-seed one


def test_max_iter_caps_the_lbfgs_fits_and_is_recorded(data_dir, monkeypatch):
    """A cap of 1 iteration: every fit stops there and is counted; the protocol records the cap."""
    _small_mrpc(monkeypatch)
    capped = evaluate(HashedBoW(dim=64), tasks="MRPC", data_dir=data_dir, mode="fast", max_iter=1)
    res = capped["tasks"]["MRPC"]
    assert res["fits"] == 4 * 5 + 1 and res["not_converged"] == res["fits"]
    assert capped["protocol"]["transfer"]["hyperparameters"]["max_iter"] == 1
    assert "max_iter=1)" in capped["protocol"]["transfer"]["description"]
    default = evaluate(HashedBoW(dim=64), tasks="MRPC", data_dir=data_dir, mode="fast")
    assert default["protocol"]["transfer"]["hyperparameters"]["max_iter"] == 1000
    assert default["tasks"]["MRPC"]["not_converged"] < default["tasks"]["MRPC"]["fits"]
    for bad in (0, -3, 2.5, True, "100"):
        with pytest.raises(ConfigError, match="max_iter"):
            evaluate(HashedBoW(dim=64), tasks="MRPC", data_dir=data_dir, mode="fast", max_iter=bad)


def test_newton_reaches_the_lbfgs_objective_optimum(data_dir):
    """classifier='newton' solves lbfgs's objective: where L-BFGS converges, the same fits (to a sentence or two)."""
    X, y = _subj_subset(data_dir, n=800, dim=256)
    tr, te = np.arange(0, 800, 2), np.arange(1, 800, 2)
    lbfgs = kfold_then_test(X[tr], y[tr], X[te], y[te], k=5)
    newton = kfold_then_test(X[tr], y[tr], X[te], y[te], k=5, classifier="newton")
    assert lbfgs["not_converged"] == 0 and newton["not_converged"] == 0 and newton["fits"] == lbfgs["fits"]
    assert abs(newton["acc"] - lbfgs["acc"]) <= 0.5 and newton["l2"] == lbfgs["l2"]
    capped = kfold_then_test(X[tr], y[tr], X[te], y[te], k=5, max_iter=2)  # an L-BFGS stopped far from it
    assert capped["not_converged"] == capped["fits"]


def test_newton_classifier_end_to_end_and_multiclass_version(data_dir, monkeypatch):
    import sklearn

    from prompteol.evaluation.transfer import _check_newton_multiclass

    _small_mrpc(monkeypatch)
    out = evaluate(HashedBoW(dim=64), tasks="MRPC", data_dir=data_dir, mode="fast", classifier="newton")
    res, proto = out["tasks"]["MRPC"], out["protocol"]["transfer"]
    assert res["classifier"] == "newton" and res["not_converged"] == 0 and res["fits"] == 4 * 5 + 1
    assert proto["hyperparameters"]["solver"] == "newton-cholesky" and "optimum" in proto["description"]
    _check_newton_multiclass(np.array([0, 1, 2]))  # this scikit-learn (>= 1.6 in the dev environment)
    monkeypatch.setattr(sklearn, "__version__", "1.5.2")
    _check_newton_multiclass(np.array([0, 1, 1]))  # binary: any version
    with pytest.raises(ConfigError, match="needs scikit-learn >= 1.6"):
        _check_newton_multiclass(np.array([0, 1, 2]))
