"""Encoding through the persistent embedding cache, for any embedder (ours and the baselines).

:func:`encode_cached` deduplicates the sentences, reads the known ones from an
:class:`~prompteol.cache.store.EmbeddingCache`, computes the rest in batches (each batch written to
the cache as soon as it is done, so an interrupted run keeps its progress), shows a progress
bar on long runs (a line every 30 s when stderr is a log, :mod:`prompteol.progress`), and returns the vectors in input order.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from .store import EmbeddingCache

__all__ = ["encode_cached", "want_progress"]

#: ``compute(sentences)`` yields ``(indices into sentences, vectors (len(indices), H))`` batch by batch
Compute = Callable[[list[str]], Iterator[tuple[list[int], np.ndarray]]]


def want_progress(show_progress: bool | None, n: int) -> bool:
    """An explicit choice, else a bar for long runs on a terminal."""
    if show_progress is not None:
        return show_progress
    return n >= 256 and sys.stderr.isatty()


def encode_cached(
    sentences: Sequence[str],
    compute: Compute,
    *,
    fingerprint: str,
    cache: EmbeddingCache | None,
    show_progress: bool | None = None,
    desc: str = "encode",
) -> np.ndarray:
    """Vectors (N, H) float32 of ``sentences`` (already prepared), in input order."""
    unique = list(dict.fromkeys(sentences))
    found = cache.get_many(fingerprint, unique) if cache is not None else {}
    todo = [s for s in unique if s not in found]
    if todo:
        from ..progress import progress_bar

        show = want_progress(show_progress, len(todo))
        # a bar on a terminal, a line every 30 s in a log (never carriage returns)
        with progress_bar(len(todo), desc, "sent", enabled=show) as bar:
            for batch, vecs in compute(todo):
                batch_sents = [todo[i] for i in batch]
                vecs = np.asarray(vecs, dtype=np.float32)
                found.update(zip(batch_sents, vecs))
                if cache is not None:
                    cache.put_many(fingerprint, batch_sents, vecs)
                bar.update(len(batch))
    return np.stack([found[s] for s in sentences]).astype(np.float32, copy=False)
