"""Length-sorted batches: similar lengths together, so little padding is computed."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..errors import InputError

__all__ = ["plan_batches", "MemoryLimitError"]


class MemoryLimitError(InputError):
    """A single sequence needs more memory than a batch may use (:func:`plan_batches`)."""

    def __init__(self, message: str, index: int, tokens: int, need: int, limit: int):
        super().__init__(message)
        self.index = index
        self.tokens = tokens
        self.need = need
        self.limit = limit


def plan_batches(
    lengths: Sequence[int],
    batch_size: int,
    max_batch_tokens: int | None = None,
    *,
    max_batch_bytes: int | None = None,
    batch_bytes: Callable[[int, int], int] | None = None,
    groups: Sequence[int] | None = None,
) -> list[list[int]]:
    """Group indices into batches of similar length (longest first).

    A batch holds at most ``batch_size`` sequences and, when ``max_batch_tokens`` is set, at
    most that many padded tokens (``len(batch) * longest``); a single sequence longer than
    the budget still gets a batch of its own.

    With ``max_batch_bytes`` and ``batch_bytes(n, longest)`` (the memory a batch of ``n``
    sequences padded to ``longest`` tokens needs), every batch also needs at most
    ``max_batch_bytes``; a sequence that needs more even alone raises :class:`MemoryLimitError`,
    before any batch is returned (so before any is computed).

    With ``groups`` (one key per sequence), a batch holds sequences of one group only, groups in
    ascending order: the encoder keeps the prompts that run against the shared-prefix cache apart
    from the few that cannot (a batch of both is two model calls, one of them small). Only
    arithmetic on the lengths.
    """
    if batch_size < 1:
        raise InputError(f"batch_size should be >= 1, got {batch_size}")
    if max_batch_tokens is not None and max_batch_tokens < 1:
        raise InputError(f"max_batch_tokens should be >= 1 or None, got {max_batch_tokens}")
    if groups is not None and len(groups) != len(lengths):
        raise InputError(f"groups has {len(groups)} keys for {len(lengths)} lengths")
    order = sorted(range(len(lengths)), key=lambda i: (groups[i] if groups is not None else 0, -lengths[i]))
    if max_batch_bytes is not None and batch_bytes is not None and order:
        first = max(range(len(lengths)), key=lambda i: lengths[i])  # the longest needs the most alone
        need = batch_bytes(1, lengths[first])
        if need > max_batch_bytes:
            raise MemoryLimitError(
                f"texts[{first}] is {lengths[first]} tokens once rendered in the prompt template; even alone it "
                f"needs about {_size(need)} of memory (estimated), more than the {_size(max_batch_bytes)} a batch "
                f"may use; shorten it, or set max_length (--max-length N) to cut sentences to N tokens",
                first, lengths[first], need, max_batch_bytes,
            )  # fmt: skip

    def too_heavy(n: int, longest: int) -> bool:
        return max_batch_bytes is not None and batch_bytes is not None and batch_bytes(n, longest) > max_batch_bytes

    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = lengths[current[0]] if current else lengths[i]
        other_group = groups is not None and bool(current) and groups[i] != groups[current[0]]
        too_many = len(current) >= batch_size or other_group
        too_big = max_batch_tokens is not None and (len(current) + 1) * longest > max_batch_tokens
        if current and (too_many or too_big or too_heavy(len(current) + 1, longest)):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"
