"""The contrastive loss: InfoNCE over cosine / temperature, with in-batch and hard negatives.

For anchor ``i`` of a global batch of ``B`` triplets, the candidates are all ``B`` positives
and all ``B`` hard negatives; the target is positive ``i``::

    loss = mean_i CE( [cos(a_i, p_j)]_j ++ [cos(a_i, n_j)]_j  / t ,  i )

Across processes, every process gathers the anchors, positives and negatives of all the
others (without gradient) and puts its own shard back *with* its gradient, then computes the
loss of the whole global batch. Each process's backward therefore gives exactly the
contribution of its own shard to the gradient of the global loss; summing the parameter
gradients over processes (:func:`all_reduce_grads`) gives the single-process gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["info_nce", "gather_keep_grad", "global_info_nce", "all_reduce_grads", "world"]


def world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` outside ``torch.distributed``."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def info_nce(
    anchors: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor | None, temperature: float
) -> torch.Tensor:
    """Mean cross-entropy of cos(anchor_i, [positives; negatives]) / temperature against label i.

    anchors, positives, negatives: (B, H) -> scalar. ``negatives=None``: in-batch negatives only.
    """
    a = F.normalize(anchors.float(), dim=-1)  # (B, H)
    cands = positives if negatives is None else torch.cat([positives, negatives], dim=0)
    c = F.normalize(cands.float(), dim=-1)  # (B or 2B, H)
    logits = a @ c.T / temperature  # (B, B or 2B)
    labels = torch.arange(a.shape[0], device=a.device)
    return F.cross_entropy(logits, labels)


def gather_keep_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (b, H) of every process -> (W*b, H), rank order; the local rows keep their gradient."""
    import torch.distributed as dist

    rank, size = world()
    if size == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(size)]
    dist.all_gather(parts, x.detach().contiguous())
    parts[rank] = x  # the gathered copies carry no gradient: put the local shard back with its own
    return torch.cat(parts, dim=0)


def global_info_nce(
    anchors: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor | None, temperature: float
) -> torch.Tensor:
    """:func:`info_nce` over the global batch (the local shards of all processes, in rank order)."""
    a = gather_keep_grad(anchors)
    p = gather_keep_grad(positives)
    n = gather_keep_grad(negatives) if negatives is not None else None
    return info_nce(a, p, n, temperature)


def all_reduce_grads(params) -> None:
    """Sum the gradients of ``params`` over processes (one flat all-reduce); no-op for one process."""
    import torch.distributed as dist

    _, size = world()
    if size == 1:
        return
    params = [p for p in params if p.requires_grad]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(g).clone()
        offset += n
