"""``evaluate(encoder, tasks)``: the SentEval-compatible harness for ANY sentence embedder.

The encoder is any object with ``encode(sentences: list[str]) -> array (N, H)``. Sentences
are passed exactly as SentEval's batcher presents them (``' '.join(tokens)``); templates and
text normalisation belong to the encoder (our :class:`~prompteol.Encoder` applies its own).
Each task's unique sentences are encoded in one call, so an encoder with a cache or with
length-sorted batching gets the whole task at once.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np

from ..encoder.encode_options import EncodeOptions, encode_with
from ..errors import ConfigError, InputError
from .data import Examples, StsPairs, load_task_data, resolve_data_dir, verify_data
from .sts import cosine_pairs, score_sts
from .tasks import MODES, TASK_GROUPS, Task, resolve_tasks

__all__ = ["evaluate", "SentenceEncoder", "RESULTS_SCHEMA", "package_versions", "main_score"]

log = logging.getLogger(__name__)

#: version tag of the results dictionary (see docs/evaluation.md for the fields)
RESULTS_SCHEMA = "prompteol.eval/1"


class SentenceEncoder(Protocol):
    """What :func:`evaluate` needs: ``encode`` returning one row per sentence, in input order."""

    def encode(self, sentences: list[str]) -> Any: ...


def evaluate(
    encoder: SentenceEncoder,
    tasks: str | Iterable[str | Task] = "sts",
    data_dir: str | os.PathLike | None = None,
    mode: str = "test",
    options: EncodeOptions | None = None,
    *,
    classifier: str = "lbfgs",
    seeds: int = 1,
    max_iter: int | None = None,
    done: Mapping[str, dict] | None = None,
    on_task: Callable[[str, dict], None] | None = None,
) -> dict[str, Any]:
    """Evaluate ``encoder`` on SentEval tasks; returns a JSON-serialisable results dictionary.

    Args:
        encoder: any object with ``encode(list[str]) -> (N, H) array``; an encoder that takes
            call options (``takes_encode_options``: prompteol's ``Encoder``, the baselines) gets ``options``.
        tasks: a group (``sts``, ``transfer``, ``all``), a task name, a comma-separated list,
            or a list of names. ``STSBenchmark-dev`` is the selection split (in no group).
        data_dir: the SentEval data root (holds ``downstream/``); default ``$PROMPTEOL_DATA``.
        mode: ``test`` (10-fold transfer protocols) or ``fast`` (5-fold); STS is the same in both.
        options: the :class:`~prompteol.encoder.encode_options.EncodeOptions` of every ``encode`` call
            (batch size, token budget, progress, the embedding cache, ...); default: their defaults.
        classifier: the transfer tasks' classifier: ``lbfgs`` (scikit-learn L-BFGS logistic
            regression to convergence) or ``senteval`` (SentEval's PyTorch classifier with early
            stopping, with the ``mode``'s settings). STS does not use a classifier.
        seeds: run the transfer classifiers with this many seeds (1111, 1112, ...: fold shuffles
            and classifier); sentences are encoded once. With more than one, each transfer
            result holds the per-seed scores, their ``mean`` (the ``score``) and sample ``std``.
        max_iter: the ``lbfgs`` classifier's iteration cap (default ``transfer.MAX_ITER``, 1000);
            fits that reach it are counted in each task's ``not_converged``. Ignored by ``senteval``.
        done: results of tasks finished earlier (``{name: task result}``, as this function returns
            them): those tasks are taken as they are, not encoded again (the caller checks that
            they were computed by the same encoder; see :mod:`prompteol.scale.run`).
        on_task: called as ``on_task(name, result)`` as soon as each task is scored (not for the
            ``done`` ones), so a caller can record every finished task at once.

    The data files are verified (sha256) before anything is encoded. Scores are x100:
    ``results["tasks"][name]["score"]`` is the headline of each task (Spearman "all" for
    STS12-16, Spearman for STS-B/SICK-R, accuracy for transfer) and ``results["averages"]``
    holds the mean over each complete group.
    """
    if mode not in MODES:
        raise ConfigError(f"mode should be one of {list(MODES)}, got {mode!r}")
    from .transfer import CLASSIFIERS, MAX_ITER, SEED, check_max_iter

    if classifier not in CLASSIFIERS:
        raise ConfigError(f"classifier should be one of {list(CLASSIFIERS)}, got {classifier!r}")
    if isinstance(seeds, bool) or not isinstance(seeds, (int, np.integer)) or seeds < 1:
        raise ConfigError(f"seeds should be a whole number >= 1, got {seeds!r}")
    seed_list = [SEED + i for i in range(int(seeds))]
    max_iter = check_max_iter(MAX_ITER if max_iter is None else max_iter)
    if not callable(getattr(encoder, "encode", None)):
        raise InputError(f"encoder should have an encode(sentences) -> array method; got {type(encoder).__name__}")
    task_list = resolve_tasks(tasks)
    root = resolve_data_dir(data_dir)
    checksums = verify_data(root, task_list)  # before any sentence is encoded
    started = datetime.now(UTC)
    t_start = time.perf_counter()
    results: dict[str, dict] = {}
    done = dict(done or {})
    for task in task_list:
        if task.name in done:
            log.info("%s: taken from an earlier run (%.2f)", task.name, done[task.name]["score"])
            results[task.name] = done[task.name]
            continue
        log.info("evaluating %s (%s)", task.name, task.description)
        t0 = time.perf_counter()
        data = load_task_data(task, root)
        sentences = _unique_sentences(data)
        vectors = _encode(encoder, sentences, options)  # (U, H)
        index = {s: i for i, s in enumerate(sentences)}
        t1 = time.perf_counter()
        if isinstance(data, StsPairs):
            res = _sts_task(task, data, vectors, index)
        else:
            res = _transfer_task(task, data, vectors, index, mode, classifier, seed_list, max_iter)
        t2 = time.perf_counter()
        res = {"score": main_score(task, res), "main_score": task.main_score, **res, "sentences": len(sentences),
               "elapsed_s": {"encode": round(t1 - t0, 3), "score": round(t2 - t1, 3), "total": round(t2 - t0, 3)}}  # fmt: skip
        log.info("%s: %s = %.2f (%.1f s)", task.name, task.main_score, res["score"], t2 - t0)
        results[task.name] = res
        if on_task is not None:
            on_task(task.name, res)
    describe = getattr(encoder, "describe", None)
    described = _jsonable(describe()) if callable(describe) else {}
    return {
        "schema": RESULTS_SCHEMA,
        "date": started.isoformat(timespec="seconds"),
        "mode": mode,
        "tasks": results,
        "averages": _averages(results),
        "encode_s": _encode_seconds([r for name, r in results.items() if name not in done], described),
        "encoder": {"class": f"{type(encoder).__module__}.{type(encoder).__qualname__}", **described},
        "protocol": _protocol(mode, task_list, classifier, seed_list, max_iter),
        "data": {"root": str(root.resolve()), "sha256": checksums},
        "versions": package_versions(),
        "elapsed_s": round(time.perf_counter() - t_start, 3),
        "provenance": _provenance(encoder),
    }


def _encode_seconds(computed: list[dict], described: dict) -> dict[str, float]:
    """The encoding time of the tasks computed in this run: ``total``, ``one_off`` (the backend's export and
    compilation when this run made them) and ``net`` (total minus one-off: what encoding costs once set up)."""
    total = sum(r["elapsed_s"]["encode"] for r in computed)
    backend = described.get("backend") or {}
    one_off = sum(float(backend.get(k) or 0.0) for k in ("export_s", "session_s")) if backend.get("calls") else 0.0
    return {"total": round(total, 3), "one_off": round(one_off, 3), "net": round(total - one_off, 3)}


def main_score(task: Task, res: dict) -> float:
    """The headline number of a task's result."""
    if task.main_score == "spearman_all":
        return res["spearman"]["all"]
    return res[task.main_score]


# ---------------------------------------------------------------------------------------- encoding
def _unique_sentences(data: StsPairs | dict[str, Examples]) -> list[str]:
    if isinstance(data, StsPairs):
        return list(dict.fromkeys(data.sentences1 + data.sentences2))
    return list(dict.fromkeys(s for ex in data.values() for s in ex.sentences()))


def _encode(encoder, sentences: list[str], options: EncodeOptions | None) -> np.ndarray:
    out = encode_with(encoder, list(sentences), options)
    if hasattr(out, "detach"):  # a torch tensor
        out = out.detach().float().cpu().numpy()
    arr = np.asarray(out)
    if arr.ndim != 2 or arr.shape[0] != len(sentences):
        raise InputError(
            f"{type(encoder).__name__}.encode returned an array of shape {arr.shape} for {len(sentences)} sentences; "
            f"it should return one row per sentence, shape ({len(sentences)}, dim)"
        )
    return arr.astype(np.float32, copy=False)


# ---------------------------------------------------------------------------------------- scoring
def _rows(vectors: np.ndarray, index: dict[str, int], texts: list[str]) -> np.ndarray:
    return vectors[[index[s] for s in texts]]


def _sts_task(task: Task, pairs: StsPairs, vectors: np.ndarray, index: dict[str, int]) -> dict:
    pred = cosine_pairs(_rows(vectors, index, pairs.sentences1), _rows(vectors, index, pairs.sentences2))
    subsets = pairs.subsets if task.aggregation == "all" else None
    res = score_sts(pred, pairs.scores, subsets)
    if subsets is None:
        res["split"] = task.parts[0].name
    return res


def _features(ex: Examples, vectors: np.ndarray, index: dict[str, int], pair: bool) -> np.ndarray:
    u = _rows(vectors, index, ex.texts)
    if not pair:
        return u
    v = _rows(vectors, index, ex.texts_b or [])
    return np.concatenate([np.abs(u - v), u * v], axis=1)  # MRPC: [|u-v|, u*v], as SentEval


def _transfer_task(task: Task, data: dict[str, Examples], vectors, index, mode: str, classifier: str = "lbfgs",
                   seeds: list[int] | None = None, max_iter: int | None = None) -> dict:  # fmt: skip
    """Score one transfer task with each seed; one seed keeps the single-run shape."""
    from .transfer import SEED

    feats = {name: _features(ex, vectors, index, task.pair_features) for name, ex in data.items()}
    labels = {name: ex.labels for name, ex in data.items()}
    seeds = seeds or [SEED]
    runs = [_transfer_once(task, feats, labels, mode, classifier, seed, max_iter) for seed in seeds]
    if len(runs) == 1:
        return {"classifier": classifier, **runs[0]}
    return _combine_seeds(task, classifier, seeds, runs)


def _transfer_once(task: Task, feats: dict, labels: dict, mode: str, classifier: str, seed: int,
                   max_iter: int | None = None) -> dict:  # fmt: skip
    from . import transfer

    kfold = MODES[mode]
    opts: dict[str, Any] = {"seed": seed, "classifier": classifier, "nclasses": task.nclasses or None,
                            "max_iter": transfer.MAX_ITER if max_iter is None else max_iter}  # fmt: skip
    if classifier == "senteval":
        from .senteval_classifier import SENTEVAL_PARAMS

        opts["params"] = SENTEVAL_PARAMS[mode]
    if task.aggregation == "inner-kfold":
        return transfer.inner_kfold(feats["all"], labels["all"], kfold, **opts)
    if task.aggregation == "split":
        return transfer.split_select(feats["train"], labels["train"], feats["dev"], labels["dev"],
                                     feats["test"], labels["test"], **opts)  # fmt: skip
    if task.aggregation == "kfold":
        res = transfer.kfold_then_test(feats["train"], labels["train"], feats["test"], labels["test"], kfold, **opts)
        yhat = res.pop("_yhat")
        if task.nclasses == 2:
            from sklearn.metrics import f1_score

            res["f1"] = round(100 * f1_score(labels["test"], yhat), 2)
        return res
    raise ConfigError(f"task {task.name} has an unknown aggregation {task.aggregation!r}")


#: sample standard deviation over seeds (numpy ddof)
STD_DDOF = 1
_SEED_METRICS = ("acc", "devacc", "f1")
_SEED_INVARIANT = ("kfold", "n", "n_train", "n_dev", "n_test")


def _combine_seeds(task: Task, classifier: str, seeds: list[int], runs: list[dict]) -> dict:
    """Several seeds: each metric's mean at the top, per-seed values, headline mean and sample std."""
    metrics = [m for m in _SEED_METRICS if m in runs[0]]
    per_seed = {m: [float(r[m]) for r in runs] for m in metrics}
    head = per_seed[task.main_score]
    out: dict[str, Any] = {"classifier": classifier, "seeds": list(seeds)}
    out.update({m: float(np.mean(v)) for m, v in per_seed.items()})  # acc (-> score), devacc, f1: means
    out.update({k: runs[0][k] for k in _SEED_INVARIANT if k in runs[0]})
    out.update({
        "mean": float(np.mean(head)), "std": float(np.std(head, ddof=STD_DDOF)), "std_ddof": STD_DDOF,
        "per_seed": per_seed, "std_by_metric": {m: float(np.std(v, ddof=STD_DDOF)) for m, v in per_seed.items()},
        "runs": [{"seed": seed, **r} for seed, r in zip(seeds, runs)],
    })  # fmt: skip
    return out


def _averages(results: dict[str, dict]) -> dict[str, float]:
    """Mean headline score of each group whose tasks were all evaluated."""
    out = {}
    for group in ("sts", "transfer"):
        names = TASK_GROUPS[group]
        if all(n in results for n in names):
            out[group] = float(np.mean([results[n]["score"] for n in names]))
    return out


# ---------------------------------------------------------------------------------------- metadata
def _protocol(mode: str, tasks: list[Task], classifier: str = "lbfgs", seeds: list[int] | None = None,
              max_iter: int | None = None) -> dict:  # fmt: skip
    from .transfer import CLASSIFIER_THREADS, L2_GRID, MAX_ITER, SEED

    max_iter = MAX_ITER if max_iter is None else max_iter

    seeds = seeds or [SEED]
    out: dict[str, Any] = {
        "sentences": "SentEval tokens joined by single spaces; the encoder applies its own template",
        "sts": "cosine similarity; scipy spearmanr/pearsonr x100; STS12-16 'all' = Spearman over concatenated subsets",
    }
    if any(t.kind == "transfer" for t in tasks):
        transfer: dict[str, Any] = {
            "classifier": classifier, "kfold": MODES[mode], "seed": seeds[0], "seeds": list(seeds),
            "l2_grid": list(L2_GRID),
        }  # fmt: skip
        if len(seeds) > 1:
            transfer["std"] = f"sample standard deviation over the seeds (ddof={STD_DDOF}); score = mean"
        if classifier == "senteval":
            import torch

            from .senteval_classifier import OPTIMIZER_DEFAULTS, SENTEVAL_PARAMS, VALIDATION_SPLIT

            params = SENTEVAL_PARAMS[mode]
            transfer["description"] = (
                "SentEval's PyTorch classifier (MLP, nhid=0): linear layer, mean softmax cross-entropy, "
                "weight decay l2 on weight and bias via the optimizer, early stopping on validation accuracy"
            )
            transfer["hyperparameters"] = {
                **params.to_dict(), "optimizer_defaults": _jsonable(OPTIMIZER_DEFAULTS[params.optim]),
                "validation": {"inner/grid fits": "the held-out fold (validation_data)",
                               "final k-fold refits": f"validation_split={VALIDATION_SPLIT}",
                               "SST2": "dev (validation_data)"},
                "init": "torch.manual_seed(seed); nn.Linear default", "shuffles": "np.random.RandomState(seed)",
                "dtype": "float32", "device": "cpu", "torch_threads": torch.get_num_threads(),
            }  # fmt: skip
            transfer["source"] = (
                "SentEval tools/classifier.py + tools/validation.py; params['classifier'] of PromptEOL's "
                "evaluation.py (test: adam, batch 64, tenacity 5, epoch_size 4 = SimCSE's; fast: rmsprop, "
                "batch 32, tenacity 3, epoch_size 2; SimCSE's fast mode uses batch 128); max_epoch = MLP default"
            )
        elif classifier == "newton":
            from .transfer import NEWTON_MAX_ITER, NEWTON_TOL

            transfer["description"] = (f"sklearn LogisticRegression(newton-cholesky, C = 1/(l2 * n_train), "
                                       f"tol={NEWTON_TOL}): the lbfgs classifier's objective, solved to its optimum")  # fmt: skip
            transfer["hyperparameters"] = {
                "solver": "newton-cholesky", "C": "1 / (l2 * n_train)", "tol": NEWTON_TOL, "max_iter": NEWTON_MAX_ITER,
                "features": "centred on the training part's mean", "dtype": "float64",
                "blas_threads": CLASSIFIER_THREADS,
            }  # fmt: skip
        else:
            transfer["description"] = f"sklearn LogisticRegression(lbfgs, C = 1/(l2 * n_train), max_iter={max_iter})"
            transfer["hyperparameters"] = {
                "solver": "lbfgs", "C": "1 / (l2 * n_train)", "tol": 1e-4, "max_iter": max_iter,
                "features": "centred on the training part's mean", "dtype": "float64",
                "blas_threads": CLASSIFIER_THREADS,
            }  # fmt: skip
        out["transfer"] = transfer
    return out


def package_versions() -> dict[str, str | None]:
    """Versions of Python and of the packages that can change a score (:func:`prompteol.records.package_versions`)."""
    from ..records import package_versions as versions

    return versions()


def _provenance(encoder) -> dict[str, Any]:
    """The record's provenance block (:func:`prompteol.records.provenance`), on the encoder's device."""
    from ..records import provenance

    config = getattr(encoder, "config", None)
    return provenance(device=str(getattr(config, "device", None) or "cpu"))


def _jsonable(value):
    """Plain JSON types (paths, tuples, numpy scalars converted)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)
