"""A persistent embedding cache in SQLite (standard library), shared by encode, eval and demo search.

Rows are keyed by ``(encoder fingerprint, sha256 of the prepared sentence)``. The fingerprint
covers the weights, template, demonstrations, layer, pooling, dtype, quantisation, text
normalisation and truncation, so a vector is only ever served to an identical encoder.

Safety: every write is one SQLite transaction (WAL journal), so a process killed in the
middle of a run leaves only whole, committed rows; each row also stores its dimension
and byte length is checked on read, so nothing partial is ever served. Several processes
may share one file (readers never block the writer; writers wait up to 60 s).

Location: ``$PROMPTEOL_CACHE/embeddings.sqlite`` (default ``~/.cache/prompteol``); clear it
with ``prompteol cache clear`` or by deleting the file.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .paths import embeddings_db

__all__ = ["EmbeddingCache", "sentence_key"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS vectors (
    fingerprint TEXT NOT NULL,
    key BLOB NOT NULL,
    dim INTEGER NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (fingerprint, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS encoders (
    fingerprint TEXT PRIMARY KEY,
    config TEXT NOT NULL,
    created REAL NOT NULL
);
"""
_IN_CHUNK = 500  # keys per SELECT ... IN (...): well under SQLite's host-parameter limit


def sentence_key(sentence: str) -> bytes:
    return hashlib.sha256(sentence.encode("utf-8", "surrogatepass")).digest()


class EmbeddingCache:
    """``get``/``put`` float32 vectors by (fingerprint, sentence)."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else embeddings_db()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._connect() as con:
            con.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(self.path, timeout=60.0)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            self._local.con = con
        return con

    def register(self, fingerprint: str, config: dict) -> None:
        """Record the configuration behind a fingerprint (for ``prompteol cache info``)."""
        with self._connect() as con:
            con.execute(
                "INSERT OR IGNORE INTO encoders VALUES (?, ?, ?)",
                (fingerprint, json.dumps(config, sort_keys=True), time.time()),
            )

    def get_many(self, fingerprint: str, sentences: Sequence[str]) -> dict[str, np.ndarray]:
        """The cached vectors of those ``sentences`` that have one."""
        keys = {sentence_key(s): s for s in sentences}
        found: dict[str, np.ndarray] = {}
        con = self._connect()
        key_list = list(keys)
        for i in range(0, len(key_list), _IN_CHUNK):
            chunk = key_list[i : i + _IN_CHUNK]
            q = f"SELECT key, dim, vector FROM vectors WHERE fingerprint=? AND key IN ({','.join('?' * len(chunk))})"
            for key, dim, blob in con.execute(q, (fingerprint, *chunk)):
                if len(blob) != 4 * dim:  # never serve a damaged row
                    continue
                found[keys[bytes(key)]] = np.frombuffer(blob, dtype=np.float32).copy()
        return found

    def put_many(self, fingerprint: str, sentences: Sequence[str], vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        rows = [(fingerprint, sentence_key(s), int(v.shape[0]), v.tobytes()) for s, v in zip(sentences, vectors)]
        with self._connect() as con:  # one transaction: all rows or none
            con.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?, ?)", rows)

    def count(self, fingerprint: str | None = None) -> int:
        con = self._connect()
        if fingerprint is None:
            return con.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
        return con.execute("SELECT COUNT(*) FROM vectors WHERE fingerprint=?", (fingerprint,)).fetchone()[0]

    def info(self) -> list[dict]:
        """One row per fingerprint: number of vectors and the recorded config."""
        con = self._connect()
        counts = dict(con.execute("SELECT fingerprint, COUNT(*) FROM vectors GROUP BY fingerprint"))
        configs = {fp: (json.loads(cfg), created) for fp, cfg, created in con.execute("SELECT * FROM encoders")}
        out = []
        for fp in sorted(set(counts) | set(configs)):
            cfg, created = configs.get(fp, ({}, None))
            out.append({"fingerprint": fp, "vectors": counts.get(fp, 0), "config": cfg, "created": created})
        return out

    def clear(self, fingerprint: str | None = None) -> int:
        """Delete all rows (or those of one fingerprint); returns how many were deleted."""
        with self._connect() as con:
            if fingerprint is None:
                n = con.execute("DELETE FROM vectors").rowcount
                con.execute("DELETE FROM encoders")
            else:
                n = con.execute("DELETE FROM vectors WHERE fingerprint=?", (fingerprint,)).rowcount
                con.execute("DELETE FROM encoders WHERE fingerprint=?", (fingerprint,))
        self._connect().execute("VACUUM")
        return n

    def close(self) -> None:
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None
