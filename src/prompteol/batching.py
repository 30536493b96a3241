"""Length-sorted batches: similar lengths together, so little padding is computed."""

from __future__ import annotations

from collections.abc import Sequence

from .errors import InputError

__all__ = ["plan_batches"]


def plan_batches(lengths: Sequence[int], batch_size: int, max_batch_tokens: int | None = None) -> list[list[int]]:
    """Group indices into batches of similar length (longest first).

    A batch holds at most ``batch_size`` sequences and, when ``max_batch_tokens`` is set, at
    most that many padded tokens (``len(batch) * longest``); a single sequence longer than
    the budget still gets a batch of its own.
    """
    if batch_size < 1:
        raise InputError(f"batch_size should be >= 1, got {batch_size}")
    if max_batch_tokens is not None and max_batch_tokens < 1:
        raise InputError(f"max_batch_tokens should be >= 1 or None, got {max_batch_tokens}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = lengths[current[0]] if current else lengths[i]
        too_many = len(current) >= batch_size
        too_big = max_batch_tokens is not None and (len(current) + 1) * longest > max_batch_tokens
        if current and (too_many or too_big):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches
