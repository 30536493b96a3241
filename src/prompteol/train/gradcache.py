"""One optimisation step's forward and backward, plain or with gradient caching (GradCache).

Plain: one differentiable forward over ``[anchors; positives; negatives]`` of the local
shard, the global loss, one backward.

GradCache (Gao et al. 2021; sentence-transformers' CachedMultipleNegativesRankingLoss):
1. embed the shard in micro-batches without autograd, remembering each micro-batch's RNG
   state (so dropout masks can be replayed);
2. compute the loss of the whole global batch on those embeddings as leaf tensors and
   backpropagate to them: the gradient of the loss w.r.t. every embedding;
3. re-run each micro-batch with autograd under its saved RNG state and backpropagate the
   cached embedding gradients (``sum(emb * grad)``).
The parameter gradients equal the plain ones, while only one micro-batch's activations
are alive at a time. Both paths embed through :meth:`Encoder.embed`: the same prepare,
render, tokenize, forward and pool code as :meth:`Encoder.encode`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .loss import global_info_nce

__all__ = ["RandState", "StepResult", "contrastive_step"]


class RandState:
    """The RNG state of the CPU and of the CUDA devices, captured now, replayable later."""

    def __init__(self) -> None:
        self.cpu = torch.get_rng_state()
        self.cuda = (
            torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
        )

    @contextlib.contextmanager
    def replay(self):
        """Run the block with the captured RNG state; the outer RNG state is restored afterwards."""
        devices = list(range(len(self.cuda))) if self.cuda is not None else []
        with torch.random.fork_rng(devices=devices):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state_all(self.cuda)
            yield


@dataclass
class StepResult:
    loss: float  # the global batch's loss (identical on every process)
    sentences: int  # sentences embedded by this process (each counted once)


def _split(reps: torch.Tensor, n: int, with_neg: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(k*n, H) laid out as [anchors; positives; negatives] -> three (n, H) tensors (or None)."""
    return reps[:n], reps[n : 2 * n], (reps[2 * n :] if with_neg else None)


def _texts(anchors, positives, negatives, lo: int, hi: int) -> list[str]:
    texts = list(anchors[lo:hi]) + list(positives[lo:hi])
    if negatives is not None:
        texts += list(negatives[lo:hi])
    return texts


def contrastive_step(
    encoder,
    anchors: Sequence[str],
    positives: Sequence[str],
    negatives: Sequence[str] | None,
    *,
    temperature: float,
    cutoff_len: int | None,
    micro_batch_size: int | None = None,
    scaler=None,
) -> StepResult:
    """Accumulate into the parameters' ``.grad`` the gradient of the global InfoNCE loss.

    ``anchors``/``positives``/``negatives`` are this process's shard (same length ``b``);
    ``micro_batch_size`` below ``b`` turns gradient caching on. ``scaler`` (a
    ``torch.amp.GradScaler``, for float16) scales the loss before backward; the returned loss
    is unscaled.
    """
    b = len(anchors)
    with_neg = negatives is not None
    if len(positives) != b or (with_neg and len(negatives) != b):  # type: ignore[arg-type]
        raise ValueError("anchors, positives and negatives should have the same length")
    m = micro_batch_size or b
    if m >= b:  # plain: one differentiable forward over [anchors; positives; negatives]
        reps = encoder.embed(_texts(anchors, positives, negatives, 0, b), max_length=cutoff_len)  # (k*b, H)
        a, p, n = _split(reps, b, with_neg)
        loss = global_info_nce(a, p, n, temperature)
        (scaler.scale(loss) if scaler is not None else loss).backward()
        return StepResult(float(loss.detach()), reps.shape[0])

    # 1. embeddings without autograd, one micro-batch at a time, with the RNG state of each
    states: list[RandState] = []
    chunks: list[torch.Tensor] = []
    bounds = [(lo, min(lo + m, b)) for lo in range(0, b, m)]
    with torch.no_grad():
        for lo, hi in bounds:
            states.append(RandState())
            chunks.append(encoder.embed(_texts(anchors, positives, negatives, lo, hi), max_length=cutoff_len))
    # 2. the global loss on leaf copies, backpropagated to the embeddings only
    parts = [_split(c, hi - lo, with_neg) for c, (lo, hi) in zip(chunks, bounds)]

    def leaf(k: int) -> torch.Tensor:  # column k (anchors, positives, negatives) of the shard: (b, H)
        return torch.cat([part[k] for part in parts]).detach().float().requires_grad_()  # type: ignore[misc]

    leaves = [leaf(0), leaf(1)] + ([leaf(2)] if with_neg else [])
    loss = global_info_nce(leaves[0], leaves[1], leaves[2] if with_neg else None, temperature)
    (scaler.scale(loss) if scaler is not None else loss).backward()  # the cached gradients carry the scale
    grads = [t.grad for t in leaves]
    # 3. re-run each micro-batch with autograd (same dropout) and push the cached gradients through
    for (lo, hi), state in zip(bounds, states):
        cached = torch.cat([g[lo:hi] for g in grads if g is not None])  # (k*n, H): the forward's layout
        with state.replay():
            reps = encoder.embed(_texts(anchors, positives, negatives, lo, hi), max_length=cutoff_len)
        (reps.float() * cached.to(reps.device)).sum().backward()
    return StepResult(float(loss.detach()), sum(c.shape[0] for c in chunks))
