"""Pooling of hidden states into one vector per sequence (torch, differentiable)."""

from __future__ import annotations

import torch

__all__ = ["last_token_pool", "mean_pool", "pool"]


def last_token_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The hidden state of the last real token, found from the mask (any padding side).

    hidden: (B, T, H); mask: (B, T) of 0/1 -> (B, H)
    """
    positions = torch.arange(mask.shape[1], device=mask.device)  # (T,)
    last = (mask.long() * (positions + 1)).argmax(dim=1)  # (B,) index of the last 1
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def mean_pool(
    hidden: torch.Tensor,
    mask: torch.Tensor,
    extra_sum: torch.Tensor | None = None,
    extra_count: int = 0,
) -> torch.Tensor:
    """A true masked mean: the sum over real tokens divided by their number (not the padded length).

    ``extra_sum``/``extra_count`` add tokens that are not in ``hidden`` (a cached shared prefix).
    hidden: (B, T, H); mask: (B, T) -> (B, H)
    """
    m = mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    total = (hidden * m).sum(dim=1)  # (B, H)
    count = m.sum(dim=1)  # (B, 1)
    if extra_sum is not None:
        total = total + extra_sum.to(hidden.dtype)
        count = count + extra_count
    return total / count.clamp(min=1)


def pool(kind: str, hidden: torch.Tensor, mask: torch.Tensor, extra_sum=None, extra_count: int = 0) -> torch.Tensor:
    if kind == "last":
        return last_token_pool(hidden, mask)
    if kind == "mean":
        return mean_pool(hidden, mask, extra_sum, extra_count)
    raise ValueError(f"unknown pooling {kind!r}")
