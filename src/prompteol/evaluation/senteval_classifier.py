"""SentEval's PyTorch logistic regression (``MLP`` with ``nhid=0``), re-implemented for the CPU.

What SentEval's ``senteval/tools/classifier.py`` (``PyTorchClassifier`` + ``MLP``) does, and
what :class:`SentEvalLogReg` reproduces step by step:

- **model**: one linear layer ``inputdim -> nclasses`` with PyTorch's default ``nn.Linear``
  initialisation, trained on the softmax cross-entropy averaged over the mini-batch. (SentEval
  sets ``loss_fn.size_average = False`` *after* building ``nn.CrossEntropyLoss()``; PyTorch >= 0.4
  reads ``reduction``, fixed at construction, so the loss stays the batch mean.)
- **optimiser**: ``torch.optim.Adam`` or ``torch.optim.RMSprop`` with PyTorch's defaults (Adam:
  lr 1e-3, betas (0.9, 0.999), eps 1e-8; RMSprop: lr 1e-2, alpha 0.99, eps 1e-8, no momentum)
  and ``weight_decay = l2`` on every parameter, the bias included (SentEval sets
  ``param_groups[0]['weight_decay']``; classic L2 added to the gradient, not decoupled).
- **seeding**: at construction ``np.random.seed(seed)`` and ``torch.manual_seed(seed)``; the
  weights come from torch's generator, the validation split and each epoch's shuffle from numpy's.
- **fit(X, y, validation_data | validation_split)**: early-stops on ``validation_data`` or, when
  none is given, on the first ``int(validation_split * n)`` examples of a permutation (trained on
  the rest). Training runs in rounds of ``epoch_size`` epochs (each epoch a fresh permutation, cut
  into mini-batches of ``batch_size``, the last one smaller) while ``nepoch <= max_epoch``; after
  each round the validation accuracy is measured and a strictly better one keeps a copy of the
  model. A round without improvement stops training when ``tenacity`` such rounds have already
  been counted (the count is never reset), so training ends at the ``tenacity + 1``-th round that
  does not improve, or after ``max_epoch // epoch_size + 1`` rounds. The best model is kept.

Differences that do not change the algorithm:

- the seeds feed private generators (a ``numpy.random.RandomState`` and a forked torch generator),
  so the caller's global random state is left alone; ``RandomState(seed).permutation`` draws the
  permutations ``np.random.seed(seed); np.random.permutation`` draws;
- the gradient of the mean cross-entropy is written out, ``(softmax - onehot) / batch`` times the
  inputs, and the Adam / RMSprop steps are PyTorch's single-tensor update rules transcribed
  (``tests/test_eval_transfer.py`` checks them bit for bit against ``torch.optim``), on one
  ``(nclasses, inputdim + 1)`` tensor holding weight and bias (both are decayed, as in SentEval,
  and both optimisers are element-wise, so this is the same update). Autograd and ``torch.optim``
  cost ~0.3-0.5 ms per step on a small CPU, this ~0.1 ms; a ``test``-mode task is hundreds of fits
  of thousands of steps;
- CPU, float32 (SentEval: CUDA, float32), with torch's thread count as the caller set it;
  accuracies are computed on the whole matrix at once rather than in batches.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..errors import ConfigError, InputError

__all__ = ["SentEvalParams", "SENTEVAL_PARAMS", "OPTIMIZER_DEFAULTS", "VALIDATION_SPLIT", "SentEvalLogReg"]


#: PyTorch's default hyper-parameters of the two optimisers (SentEval passes none but weight_decay)
OPTIMIZER_DEFAULTS: dict[str, dict] = {
    "adam": {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8},
    "rmsprop": {"lr": 1e-2, "alpha": 0.99, "eps": 1e-8},
}


@dataclass(frozen=True)
class SentEvalParams:
    """SentEval's ``params['classifier']``. The defaults are ``MLP``'s own (= the ``test`` setting)."""

    optim: str = "adam"
    batch_size: int = 64
    tenacity: int = 5
    epoch_size: int = 4
    max_epoch: int = 200
    nhid: int = 0

    def __post_init__(self):
        if self.optim not in OPTIMIZER_DEFAULTS:
            raise ConfigError(f"optim should be one of {list(OPTIMIZER_DEFAULTS)}, got {self.optim!r}")
        if self.nhid != 0:
            raise ConfigError("only nhid=0 (logistic regression, as SimCSE/PromptEOL run SentEval) is implemented")
        for name in ("batch_size", "epoch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} should be >= 1, got {getattr(self, name)}")
        if self.tenacity < 0 or self.max_epoch < 0:
            raise ConfigError("tenacity and max_epoch should be >= 0")

    def to_dict(self) -> dict:
        return asdict(self)


#: ``params['classifier']`` of PromptEOL's ``evaluation.py`` (kongds/scaling_sentemb): ``test`` mode
#: ``{'nhid': 0, 'optim': 'adam', 'batch_size': 64, 'tenacity': 5, 'epoch_size': 4}`` (= SimCSE's),
#: ``fast`` (``dev`` / ``fasttest``) ``{'nhid': 0, 'optim': 'rmsprop', 'batch_size': 32, 'tenacity': 3,
#: 'epoch_size': 2}``; SimCSE's ``evaluation.py`` and SentEval's README use batch_size 128 there.
#: ``max_epoch`` is not passed by either, so it is MLP's default, 200.
SENTEVAL_PARAMS: dict[str, SentEvalParams] = {
    "test": SentEvalParams(optim="adam", batch_size=64, tenacity=5, epoch_size=4),
    "fast": SentEvalParams(optim="rmsprop", batch_size=32, tenacity=3, epoch_size=2),
}

#: SentEval's hold-out for early stopping in the final refits of InnerKFold / KFold
#: (``clf.fit(X_train, y_train, validation_split=0.05)``)
VALIDATION_SPLIT = 0.05


class _Adam:
    """``torch.optim.Adam`` (single-tensor path; amsgrad, maximize, capturable off) on one tensor."""

    def __init__(self, param, weight_decay: float, lr: float, betas: tuple[float, float], eps: float):
        import torch

        self.param, self.weight_decay, self.lr, self.betas, self.eps = param, weight_decay, lr, betas, eps
        self.exp_avg = torch.zeros_like(param)
        self.exp_avg_sq = torch.zeros_like(param)
        self.steps = 0.0  # torch keeps a float step count

    def step(self, grad) -> None:
        beta1, beta2 = self.betas
        self.steps += 1
        if self.weight_decay != 0:
            grad = grad.add(self.param, alpha=self.weight_decay)
        self.exp_avg.lerp_(grad, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias_correction1 = 1 - beta1**self.steps
        bias_correction2 = 1 - beta2**self.steps
        step_size = self.lr / bias_correction1
        denom = (self.exp_avg_sq.sqrt() / bias_correction2**0.5).add_(self.eps)
        self.param.addcdiv_(self.exp_avg, denom, value=-step_size)


class _RMSprop:
    """``torch.optim.RMSprop`` (single-tensor path; not centred, no momentum) on one tensor."""

    def __init__(self, param, weight_decay: float, lr: float, alpha: float, eps: float):
        import torch

        self.param, self.weight_decay, self.lr, self.alpha, self.eps = param, weight_decay, lr, alpha, eps
        self.square_avg = torch.zeros_like(param)

    def step(self, grad) -> None:
        if self.weight_decay != 0:
            grad = grad.add(self.param, alpha=self.weight_decay)
        self.square_avg.mul_(self.alpha).addcmul_(grad, grad, value=1 - self.alpha)
        avg = self.square_avg.sqrt().add_(self.eps)
        self.param.addcdiv_(grad, avg, value=-self.lr)


_OPTIMIZERS = {"adam": _Adam, "rmsprop": _RMSprop}


class SentEvalLogReg:
    """SentEval's ``MLP(params, inputdim, nclasses, l2reg, seed)`` with ``nhid=0``.

    After :meth:`fit`: ``nepoch`` (epochs trained), ``history`` (validation accuracy after each
    round), ``best_round`` (index into ``history`` of the kept model), ``stopped_early`` (False when
    ``max_epoch`` ended training) and ``best_accuracy``.
    """

    def __init__(self, inputdim: int, nclasses: int, l2reg: float = 0.0, params: SentEvalParams | None = None,
                 seed: int = 1111):  # fmt: skip
        import torch

        self.params = params or SentEvalParams()
        self.inputdim, self.nclasses, self.l2reg, self.seed = int(inputdim), int(nclasses), float(l2reg), int(seed)
        self._rng = np.random.RandomState(self.seed)  # = np.random.seed(seed), private
        with torch.random.fork_rng(devices=[]):  # = torch.manual_seed(seed) + nn.Linear, global state restored
            torch.manual_seed(self.seed)
            layer = torch.nn.Linear(self.inputdim, self.nclasses)
        with torch.no_grad():
            self.theta = torch.cat([layer.weight, layer.bias[:, None]], dim=1).contiguous()  # (C, H + 1)
        self._optimizer = _OPTIMIZERS[self.params.optim](
            self.theta, self.l2reg, **OPTIMIZER_DEFAULTS[self.params.optim]
        )
        self.nepoch = 0
        self.history: list[float] = []
        self.best_round = -1
        self.best_accuracy = -1.0
        self.stopped_early = False

    # ------------------------------------------------------------------ data
    def _inputs(self, X):
        import torch

        X = torch.as_tensor(np.asarray(X, dtype=np.float32))
        if X.ndim != 2 or X.shape[1] != self.inputdim:
            raise InputError(f"features should have shape (n, {self.inputdim}), got {tuple(X.shape)}")
        return torch.cat([X, torch.ones(len(X), 1)], dim=1)  # the bias column

    def _onehot(self, y):
        import torch

        y = torch.as_tensor(np.asarray(y, dtype=np.int64))
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= self.nclasses):
            raise InputError(f"labels should be in [0, {self.nclasses}), got [{int(y.min())}, {int(y.max())}]")
        return torch.nn.functional.one_hot(y, self.nclasses).to(torch.float32)

    # ------------------------------------------------------------------ training
    def fit(self, X, y, validation_data=None, validation_split: float | None = None, early_stop: bool = True) -> float:
        """Train with early stopping on the validation accuracy; returns the best one (a fraction)."""
        import torch

        X, y = np.asarray(X), np.asarray(y)
        if validation_data is not None:
            trX, trY = X, y
            devX, devY = (np.asarray(a) for a in validation_data)
        else:
            if not validation_split:
                raise ConfigError("fit needs validation_data or a validation_split > 0")
            perm = self._rng.permutation(len(X))
            n_dev = int(validation_split * len(X))
            if n_dev == 0:
                raise InputError(f"validation_split={validation_split} of {len(X)} examples holds out none")
            trX, trY, devX, devY = X[perm[n_dev:]], y[perm[n_dev:]], X[perm[:n_dev]], y[perm[:n_dev]]
        if len(trX) == 0 or len(devX) == 0:
            raise InputError("fit needs at least one training and one validation example")
        train_in, train_target = self._inputs(trX), self._onehot(trY)
        dev_in, dev_y = self._inputs(devX), torch.as_tensor(np.asarray(devY, dtype=np.int64))
        p = self.params
        self.nepoch, self.history, self.best_round, self.stopped_early = 0, [], -1, False
        best, best_theta, no_gain = -1.0, None, 0
        stop = False
        with torch.no_grad():
            while not stop and self.nepoch <= p.max_epoch:
                self._train_round(train_in, train_target)
                acc = self._accuracy(dev_in, dev_y)
                self.history.append(acc)
                if acc > best:
                    best, best_theta, self.best_round = acc, self.theta.clone(), len(self.history) - 1
                elif early_stop:
                    if no_gain >= p.tenacity:
                        stop = True
                    no_gain += 1
            if best_theta is not None:
                self.theta.copy_(best_theta)
        self.stopped_early, self.best_accuracy = stop, best
        return best

    def _train_round(self, inputs, target) -> None:
        import torch

        n, bs, theta, step = len(inputs), self.params.batch_size, self.theta, self._optimizer.step
        for _ in range(self.params.epoch_size):
            perm = torch.from_numpy(self._rng.permutation(n))
            for i in range(0, n, bs):
                idx = perm[i : i + bs]
                xb, tb = inputs.index_select(0, idx), target.index_select(0, idx)
                g = torch.softmax(xb @ theta.t(), dim=1).sub_(tb).div_(len(idx))  # d(mean CE)/d(logits)
                step(g.t() @ xb)
        self.nepoch += self.params.epoch_size

    # ------------------------------------------------------------------ inference
    def _logits(self, inputs):
        return inputs @ self.theta.t()

    def _accuracy(self, inputs, y) -> float:
        return float((self._logits(inputs).argmax(dim=1) == y).sum()) / len(y)

    def score(self, X, y) -> float:
        """Accuracy (a fraction) on ``(X, y)``."""
        import torch

        with torch.no_grad():
            return self._accuracy(self._inputs(X), torch.as_tensor(np.asarray(y, dtype=np.int64)))

    def predict(self, X) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self._logits(self._inputs(X)).argmax(dim=1).numpy()

    @property
    def weight(self):
        return self.theta[:, :-1]

    @property
    def bias(self):
        return self.theta[:, -1]

    def rounds_budget(self) -> int:
        """Most rounds a fit can take (``nepoch`` goes 0, epoch_size, ... while <= max_epoch)."""
        return self.params.max_epoch // self.params.epoch_size + 1
