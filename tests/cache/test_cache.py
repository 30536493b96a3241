"""Unit tests of the persistent embedding cache (schema, checksums, the open check); faults: tests/cache/test_cache_faults.py."""

from __future__ import annotations

import logging
import sqlite3
import threading

import numpy as np
import pytest

from prompteol.cache import SCHEMA_VERSION, EmbeddingCache, row_checksum, sentence_key

FP = "a" * 32


@pytest.fixture
def cache(tmp_path):
    c = EmbeddingCache(tmp_path / "embeddings.sqlite")
    yield c
    c.close()


def _vecs(n, dim=8, seed=0):
    return np.random.default_rng(seed).standard_normal((n, dim), dtype=np.float32)


def test_round_trip_and_api(cache, tmp_path, monkeypatch):
    sents = [f"s{i}" for i in range(10)]
    vecs = _vecs(10)
    cache.register(FP, {"model": "m"})
    cache.put_many(FP, sents, vecs)
    got = cache.get_many(FP, sents + ["unknown"])
    assert set(got) == set(sents)
    for s, v in zip(sents, vecs):
        assert np.array_equal(got[s], v) and got[s].flags.writeable
    assert cache.count() == cache.count(FP) == 10 and cache.count("other") == 0
    (row,) = cache.info()
    assert (
        row["fingerprint"] == FP and row["vectors"] == 10 and row["unverified"] == 0 and row["config"] == {"model": "m"}
    )
    assert cache.clear("other") == 0 and cache.clear(FP) == 10 and cache.count() == 0
    monkeypatch.setenv("PROMPTEOL_CACHE", str(tmp_path / "root"))
    default = EmbeddingCache()
    assert default.path == tmp_path / "root" / "embeddings.sqlite" and default.disabled is None
    default.close()


def test_schema_version_and_checksum_column(cache):
    cache.put_many(FP, ["x"], _vecs(1))
    con = sqlite3.connect(cache.path)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    (dim, blob, checksum) = con.execute("SELECT dim, vector, checksum FROM vectors").fetchone()
    assert checksum == row_checksum(FP, sentence_key("x"), dim, blob) and len(checksum) == 16
    con.close()


def test_checksum_binds_the_row_to_its_fingerprint_and_key(cache, caplog):
    """A sound vector copied under another fingerprint or sentence (as a damaged index could) is not served."""
    cache.put_many(FP, ["x"], _vecs(1))
    con = sqlite3.connect(cache.path)
    with con:
        con.execute("INSERT INTO vectors SELECT ?, key, dim, checksum, vector FROM vectors", ("b" * 32,))
        con.execute("INSERT INTO vectors SELECT fingerprint, ?, dim, checksum, vector FROM vectors WHERE fingerprint=?",
                    (sentence_key("y"), FP))  # fmt: skip
    con.close()
    caplog.set_level(logging.WARNING, logger="prompteol.cache")
    assert cache.get_many("b" * 32, ["x"]) == {}
    assert set(cache.get_many(FP, ["x", "y"])) == {"x"}
    assert len([r for r in caplog.records if "failed the integrity check" in r.getMessage()]) == 2


def test_old_rows_are_counted_unverified(tmp_path):
    db = tmp_path / "embeddings.sqlite"
    con = sqlite3.connect(db)
    con.executescript("""
        CREATE TABLE vectors (fingerprint TEXT NOT NULL, key BLOB NOT NULL, dim INTEGER NOT NULL, vector BLOB NOT NULL,
                              PRIMARY KEY (fingerprint, key)) WITHOUT ROWID;
        CREATE TABLE encoders (fingerprint TEXT PRIMARY KEY, config TEXT NOT NULL, created REAL NOT NULL);
    """)
    with con:
        con.execute("INSERT INTO vectors VALUES (?, ?, 8, ?)", (FP, sentence_key("x"), _vecs(1)[0].tobytes()))
    con.close()
    cache = EmbeddingCache(db)
    assert cache.notes and "upgraded" in cache.notes[0]
    assert cache.info()[0]["unverified"] == 1 and cache.check()["unverified"] == 1
    assert cache.get_many(FP, ["x"]) == {}
    cache.put_many(FP, ["x"], _vecs(1))
    assert set(cache.get_many(FP, ["x"])) == {"x"} and cache.info()[0]["unverified"] == 0
    cache.close()
    assert not EmbeddingCache(db).notes, "migrated once"


def test_a_false_alarm_on_open_never_moves_a_sound_file(tmp_path, monkeypatch):
    """When the cheap check misfires (as it can while another process checkpoints), quick_check under the lock decides."""
    import prompteol.cache.repair as mod

    db = tmp_path / "embeddings.sqlite"
    first = EmbeddingCache(db)
    first.put_many(FP, ["x"], _vecs(1))
    first.close()
    monkeypatch.setattr(mod, "_header_problem", lambda path: "header says more pages than the file has")
    again = EmbeddingCache(db)
    assert again.disabled is None and not again.notes and not again.moved_aside
    assert set(again.get_many(FP, ["x"])) == {"x"}
    assert not list(tmp_path.glob("*.damaged-*"))
    again.close()


def test_a_damaged_file_open_elsewhere_in_this_process_is_not_moved(tmp_path):
    """Another EmbeddingCache of this process still has the file open: disabled, never renamed under it."""
    db = tmp_path / "embeddings.sqlite"
    holder = EmbeddingCache(db)
    holder.put_many(FP, ["x"], _vecs(1))
    holder._connect().execute("PRAGMA wal_checkpoint(TRUNCATE)")  # page 1 is read from the file, not the WAL
    with open(db, "r+b") as f:
        f.write(b"\x00" * 100)
    other = EmbeddingCache(db)
    assert other.disabled is not None and "open in this process" in other.disabled
    assert db.exists() and not list(tmp_path.glob("*.damaged-*"))
    holder.close()
    other.close()


def test_threads_share_one_cache(cache):
    errors = []

    def work(t):
        try:
            sents = [f"t{t} s{i}" for i in range(50)]
            vecs = _vecs(50, seed=t)
            for i in range(0, 50, 10):
                cache.put_many(FP, sents[i : i + 10], vecs[i : i + 10])
            got = cache.get_many(FP, sents)
            assert all(np.array_equal(got[s], v) for s, v in zip(sents, vecs))
            cache.close()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and cache.count(FP) == 200


def test_newer_schema_is_left_alone(tmp_path):
    db = tmp_path / "embeddings.sqlite"
    EmbeddingCache(db).close()
    con = sqlite3.connect(db)
    con.execute("PRAGMA user_version = 99")
    con.close()
    cache = EmbeddingCache(db)
    assert cache.disabled is not None and "newer prompteol" in cache.disabled
    assert cache.get_many(FP, ["x"]) == {} and cache.count() == 0
    cache.put_many(FP, ["x"], _vecs(1))
    cache.close()
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA user_version").fetchone()[0] == 99 and not list(tmp_path.glob("*.damaged-*"))
    con.close()
