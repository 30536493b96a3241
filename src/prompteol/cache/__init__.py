"""The persistent embedding cache (SQLite): the store, and encoding through it for any embedder."""

from __future__ import annotations

from .store import SCHEMA_VERSION, EmbeddingCache, row_checksum, sentence_key

__all__ = ["EmbeddingCache", "sentence_key", "row_checksum", "SCHEMA_VERSION"]
