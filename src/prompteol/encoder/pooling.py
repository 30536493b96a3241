"""Pooling of hidden states into one vector per sequence (torch, differentiable), by name.

A pooler takes ``hidden`` (B, T, H), the attention ``mask`` (B, T) of the tokens in
``hidden`` and a :class:`PoolContext` (tokens outside ``hidden``, e.g. a cached shared prefix;
per-row spans) and returns (B, H). :data:`POOLERS` maps each name to its function: a new
pooling mode is one entry (``register_pooler``), never a branch. Importing this module does
not import torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["PoolContext", "POOLERS", "register_pooler", "get_pooler", "last_token_pool", "mean_pool", "pool"]


@dataclass(frozen=True)
class PoolContext:
    """What a pooler may need beyond the hidden states it is given.

    Attributes:
        prefix_sum: (1, H) sum of the hidden states of a shared prefix that is not in ``hidden``.
        prefix_len: number of tokens in that prefix.
        start: (B,) index (into ``hidden``) of the first token to pool per row; ``None`` = all
            (span poolers such as echo embeddings set it).
    """

    prefix_sum: Any = None
    prefix_len: int = 0
    start: Any = None


def last_token_pool(hidden: torch.Tensor, mask: torch.Tensor, ctx: PoolContext | None = None) -> torch.Tensor:
    """The hidden state of the last real token, found from the mask (any padding side).

    hidden: (B, T, H); mask: (B, T) of 0/1 -> (B, H)
    """
    import torch

    positions = torch.arange(mask.shape[1], device=mask.device)  # (T,)
    last = (mask.long() * (positions + 1)).argmax(dim=1)  # (B,) index of the last 1
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor, ctx: PoolContext | None = None) -> torch.Tensor:
    """A true masked mean: the sum over real tokens divided by their number (not the padded length).

    A cached shared prefix (``ctx.prefix_sum`` / ``ctx.prefix_len``) counts as real tokens;
    with ``ctx.start`` only the tokens from that index on are averaged (and the prefix is not).
    hidden: (B, T, H); mask: (B, T) -> (B, H)
    """
    import torch

    m = mask.to(hidden.dtype)  # (B, T)
    if ctx is not None and ctx.start is not None:
        positions = torch.arange(mask.shape[1], device=mask.device).unsqueeze(0)  # (1, T)
        m = m * (positions >= ctx.start.to(mask.device).unsqueeze(1)).to(hidden.dtype)
    m = m.unsqueeze(-1)  # (B, T, 1)
    total = (hidden * m).sum(dim=1)  # (B, H)
    count = m.sum(dim=1)  # (B, 1)
    if ctx is not None and ctx.prefix_sum is not None and ctx.start is None:
        total = total + ctx.prefix_sum.to(hidden.dtype)
        count = count + ctx.prefix_len
    return total / count.clamp(min=1)


Pooler = Callable[..., Any]

def echo_pool(hidden: torch.Tensor, mask: torch.Tensor, ctx: PoolContext | None = None) -> torch.Tensor:
    """Echo embeddings (Springer et al. 2024): the mean over the second copy of the sentence only
    (every token of it has seen the whole sentence). ``ctx.start`` is where that copy begins."""
    if ctx is None or ctx.start is None:
        raise ValueError("echo pooling needs the start of the second copy (an echo template)")
    return mean_pool(hidden, mask, ctx)


#: name -> pooler; ``last`` is PromptEOL's, ``mean`` the paper's mean-pooling baseline, ``echo`` Echo's
POOLERS: dict[str, Pooler] = {"last": last_token_pool, "mean": mean_pool, "echo": echo_pool}


def register_pooler(name: str, fn: Pooler) -> None:
    """Add a pooling mode (available to ``EncoderConfig(pooling=name)`` from then on)."""
    POOLERS[name] = fn


def get_pooler(name: str) -> Pooler:
    try:
        return POOLERS[name]
    except KeyError:
        raise ValueError(f"unknown pooling {name!r}; valid: {sorted(POOLERS)}") from None


def pool(kind: str, hidden, mask, ctx: PoolContext | None = None):
    """``get_pooler(kind)(hidden, mask, ctx)``."""
    return get_pooler(kind)(hidden, mask, ctx)
