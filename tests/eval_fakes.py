"""Deterministic stand-in encoders for the evaluation tests (no model weights)."""

from __future__ import annotations

import hashlib

import numpy as np


class HashedBoW:
    """Signed hashed bag of words: each lower-cased token adds +-1 to one of ``dim`` buckets.

    It has only ``encode``: the harness must work with any such object.
    """

    def __init__(self, dim: int = 256):
        self.dim = dim
        self.calls: list[int] = []

    def encode(self, sentences):
        self.calls.append(len(sentences))
        out = np.zeros((len(sentences), self.dim), dtype=np.float32)
        for i, s in enumerate(sentences):
            for word in s.lower().split():
                h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
                out[i, h % self.dim] += 1.0 if (h >> 32) & 1 else -1.0
        return out
