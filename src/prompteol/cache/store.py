"""A persistent embedding cache in SQLite (standard library), shared by encode, eval and demo search: the store.

Rows are keyed by ``(encoder fingerprint, sha256 of the prepared sentence)``. The fingerprint
covers the weights, template, demonstrations, layer, pooling, dtype, quantisation, text
normalisation and truncation, so a vector is only ever served to an identical encoder.

Integrity (schema version 2, ``PRAGMA user_version``): every row stores a 128-bit blake2b
checksum of (fingerprint, key, dim, vector bytes), verified on every read together with the
length and finiteness of the vector. A row that fails is not served (the caller recomputes
it) and is deleted; one warning per call says how many failed. Rows of a version-1 file (no
checksum) are never served and are replaced as they are recomputed.

The file itself (opening, checking, repairing a damaged one) is :mod:`prompteol.cache.repair`'s.

Safety: every write is one SQLite transaction (WAL journal), so a process killed in the
middle of a run leaves only whole, committed rows. Several processes may share one file
(readers never block the writer; writers wait up to 60 s).

Location: ``$PROMPTEOL_CACHE/embeddings.sqlite`` (default ``~/.cache/prompteol``); clear it
with ``prompteol cache clear`` or by deleting the file (when no process uses it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from .repair import SCHEMA_VERSION, CacheFile, CacheOff

__all__ = ["EmbeddingCache", "sentence_key", "row_checksum", "SCHEMA_VERSION"]

log = logging.getLogger("prompteol.cache")  # one logger for the store and its repair, as before the split

_IN_CHUNK = 500  # keys per SELECT ... IN (...): well under SQLite's host-parameter limit


_MAX_DIM = 1 << 20


_PERSON = b"prompteol.vec.v2"  # blake2b personalisation (16 bytes): checksums of this schema only


def sentence_key(sentence: str) -> bytes:
    return hashlib.sha256(sentence.encode("utf-8", "surrogatepass")).digest()


def _hasher(fingerprint: str):
    """blake2b-128 already fed with the fingerprint; ``.copy()`` it per row."""
    return hashlib.blake2b(fingerprint.encode("utf-8", "surrogatepass") + b"\x00", digest_size=16, person=_PERSON)


def row_checksum(fingerprint: str, key: bytes, dim: int, blob: bytes) -> bytes:
    """The checksum stored with a row: blake2b-128 of fingerprint, key, dim (4 bytes LE) and vector bytes."""
    h = _hasher(fingerprint)
    h.update(key)
    h.update(dim.to_bytes(4, "little"))
    h.update(blob)
    return h.digest()


class EmbeddingCache(CacheFile):
    """``get``/``put`` float32 vectors by (fingerprint, sentence), verified on every read.

    Never raises on a damaged or unusable file (:class:`~prompteol.cache.repair.CacheFile`: repaired, else
    disabled for the process; :attr:`disabled` says why, :attr:`notes` what was found and done).
    """

    # ------------------------------------------------------------------ public API
    def register(self, fingerprint: str, config: dict) -> None:
        """Record the configuration behind a fingerprint (for ``prompteol cache info``)."""
        try:
            con = self._connect()
            with con:
                con.execute(
                    "INSERT OR IGNORE INTO encoders VALUES (?, ?, ?)",
                    (fingerprint, json.dumps(config, sort_keys=True), time.time()),
                )
        except CacheOff:
            pass
        except sqlite3.Error as exc:
            self._failed(exc, "recording an encoder", write=True)

    def get_many(self, fingerprint: str, sentences: Sequence[str]) -> dict[str, np.ndarray]:
        """The cached vectors of those ``sentences`` that have a sound one (verified; never non-finite)."""
        keys = {sentence_key(s): s for s in sentences}
        found: dict[str, np.ndarray] = {}
        if not keys:
            return found
        try:
            con = self._connect()
        except CacheOff:
            return found
        except sqlite3.Error as exc:
            self._failed(exc, "opening a connection", write=False)
            return found
        bad: dict[str, list[bytes]] = {"checksum mismatch": [], "wrong length or type": [], "non-finite": []}
        legacy = 0
        hasher = _hasher(fingerprint)
        key_list = list(keys)
        try:
            for i in range(0, len(key_list), _IN_CHUNK):
                chunk = key_list[i : i + _IN_CHUNK]
                q = ("SELECT key, dim, vector, checksum FROM vectors "
                     f"WHERE fingerprint=? AND key IN ({','.join('?' * len(chunk))})")  # fmt: skip
                by_dim: dict[int, list[tuple[bytes, bytes]]] = {}
                for key, dim, blob, checksum in con.execute(q, (fingerprint, *chunk)):
                    if type(key) is not bytes or key not in keys:
                        continue  # cannot happen with a sound index; never serve it
                    if checksum is None:
                        legacy += 1  # a version-1 row: unverifiable, replaced when recomputed
                        continue
                    if (type(dim) is not int or not 0 < dim <= _MAX_DIM or type(blob) is not bytes
                            or len(blob) != 4 * dim or type(checksum) is not bytes):  # fmt: skip
                        bad["wrong length or type"].append(key)
                        continue
                    h = hasher.copy()
                    h.update(key)
                    h.update(dim.to_bytes(4, "little"))
                    h.update(blob)
                    if h.digest() != checksum:
                        bad["checksum mismatch"].append(key)
                        continue
                    by_dim.setdefault(dim, []).append((key, blob))
                for dim, rows in by_dim.items():
                    block = np.frombuffer(bytearray().join(b for _, b in rows), dtype=np.float32).reshape(
                        len(rows), dim
                    )
                    finite: list = np.asarray(np.isfinite(block).all(axis=1)).tolist()
                    for (key, _), vec, ok in zip(rows, block, finite):
                        if ok:
                            found[keys[key]] = vec
                        else:
                            bad["non-finite"].append(key)
        except sqlite3.Error as exc:
            self._failed(exc, "reading vectors", write=False)
            return found  # every vector in it was verified
        if legacy:
            log.info(
                "the embedding cache %s: %d vector(s) predate checksums (schema 1); recomputing them", self.path, legacy
            )
        failed = [k for ks in bad.values() for k in ks]
        if failed:
            detail = ", ".join(f"{len(ks)} {what}" for what, ks in bad.items() if ks)
            log.warning("the embedding cache %s: %d cached vector(s) failed the integrity check (%s); "
                        "they are not used, deleted and recomputed", self.path, len(failed), detail)  # fmt: skip
            try:
                with con:
                    con.executemany(
                        "DELETE FROM vectors WHERE fingerprint=? AND key=?", [(fingerprint, k) for k in failed]
                    )
            except sqlite3.Error as exc:
                self._failed(exc, "deleting damaged vectors", write=True)
        return found

    def put_many(self, fingerprint: str, sentences: Sequence[str], vectors: np.ndarray) -> None:
        """Store vectors (one transaction); rows with a non-finite value are not stored."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if len(sentences) == 0 or self.disabled is not None:
            return
        finite = np.isfinite(vectors).reshape(len(vectors), -1).all(axis=1)
        hasher = _hasher(fingerprint)
        rows = []
        for s, v, ok in zip(sentences, vectors, finite):
            if not ok:
                continue
            key, dim, blob = sentence_key(s), int(v.shape[0]), v.tobytes()
            h = hasher.copy()
            h.update(key)
            h.update(dim.to_bytes(4, "little"))
            h.update(blob)
            rows.append((fingerprint, key, dim, blob, h.digest()))
        if len(rows) < len(sentences):
            log.debug("not caching %d vector(s) with non-finite values", len(sentences) - len(rows))
        try:
            con = self._connect()
            with con:  # one transaction: all rows or none
                con.executemany(
                    "INSERT OR REPLACE INTO vectors (fingerprint, key, dim, vector, checksum) VALUES (?, ?, ?, ?, ?)",
                    rows,
                )
        except CacheOff:
            pass
        except sqlite3.Error as exc:
            self._failed(exc, "storing vectors", write=True)

    def count(self, fingerprint: str | None = None) -> int:
        """Number of stored rows (all, or one fingerprint); 0 when the cache is disabled."""
        try:
            con = self._connect()
            if fingerprint is None:
                return con.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
            return con.execute("SELECT COUNT(*) FROM vectors WHERE fingerprint=?", (fingerprint,)).fetchone()[0]
        except CacheOff:
            return 0
        except sqlite3.Error as exc:
            self._failed(exc, "counting vectors", write=False)
            return 0

    def info(self) -> list[dict]:
        """One row per fingerprint: number of vectors (and how many predate checksums) and the recorded config."""
        try:
            con = self._connect()
            counts = {fp: (n, unverified or 0) for fp, n, unverified in con.execute(
                "SELECT fingerprint, COUNT(*), SUM(checksum IS NULL) FROM vectors GROUP BY fingerprint")}  # fmt: skip
            configs = {fp: (json.loads(cfg), created) for fp, cfg, created in con.execute("SELECT * FROM encoders")}
        except CacheOff:
            return []
        except (sqlite3.Error, ValueError) as exc:
            if isinstance(exc, sqlite3.Error):
                self._failed(exc, "listing the cache", write=False)
            else:
                log.warning("the embedding cache %s: an encoder config is not valid JSON (%s)", self.path, exc)
            return []
        out = []
        for fp in sorted(set(counts) | set(configs)):
            cfg, created = configs.get(fp, ({}, None))
            n, unverified = counts.get(fp, (0, 0))
            out.append({"fingerprint": fp, "vectors": n, "unverified": unverified, "config": cfg, "created": created})
        return out

    def clear(self, fingerprint: str | None = None) -> int:
        """Delete all rows (or those of one fingerprint); returns how many were deleted.

        On a damaged file the file is moved aside instead (see :attr:`moved_aside`) and 0 is returned.
        """
        try:
            con = self._connect()
            with con:
                if fingerprint is None:
                    n = con.execute("DELETE FROM vectors").rowcount
                    con.execute("DELETE FROM encoders")
                else:
                    n = con.execute("DELETE FROM vectors WHERE fingerprint=?", (fingerprint,)).rowcount
                    con.execute("DELETE FROM encoders WHERE fingerprint=?", (fingerprint,))
        except CacheOff:
            return 0
        except sqlite3.Error as exc:
            self._failed(exc, "clearing", write=True)
            return 0
        try:
            con.execute("VACUUM")  # give the space back to the file system
        except sqlite3.Error as exc:
            log.warning("the embedding cache %s: VACUUM failed (%s); the file keeps its size for now", self.path, exc)
        return n

    def check(self) -> dict:
        """A full check (reads the whole file): ``PRAGMA quick_check`` and every row's checksum. Changes nothing.

        Returns ``{"quick_check": "ok" | problem, "vectors": n, "ok": n, "failed": n, "unverified": n}``.
        """
        out: dict[str, Any] = {"quick_check": None, "vectors": 0, "ok": 0, "failed": 0, "unverified": 0}
        try:
            con = self._connect()
            out["quick_check"] = self._quick_check(con) or "ok"
            hashers: dict[str, Any] = {}
            for fp, key, dim, blob, checksum in con.execute(
                "SELECT fingerprint, key, dim, vector, checksum FROM vectors"
            ):
                out["vectors"] += 1
                if checksum is None:
                    out["unverified"] += 1
                    continue
                good = (type(fp) is str and type(key) is bytes and type(dim) is int and 0 < dim <= _MAX_DIM
                        and type(blob) is bytes and len(blob) == 4 * dim and type(checksum) is bytes)  # fmt: skip
                if good:
                    h = hashers.setdefault(fp, _hasher(fp)).copy()
                    h.update(key)
                    h.update(dim.to_bytes(4, "little"))
                    h.update(blob)
                    good = h.digest() == checksum and bool(np.isfinite(np.frombuffer(blob, dtype=np.float32)).all())
                out["ok" if good else "failed"] += 1
        except CacheOff:
            out["quick_check"] = f"not checked: {self.disabled}"
        except sqlite3.Error as exc:
            out["quick_check"] = f"reading failed: {exc}"
        return out
