"""Fault injection with real files (the embedding cache: damaged files, errors mid-run, several processes): damaged inputs never give wrong results or tracebacks."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

# ================================================================================================
# embedding cache (prompteol.cache.EmbeddingCache, `prompteol cache info|clear`)
# ================================================================================================
#
# A real cache of a few hundred float32 vectors is written with EmbeddingCache, closed (so that
# everything is checkpointed from the WAL into embeddings.sqlite), damaged in place, and used
# again. Whatever the damage: no exception escapes, every vector served equals the original
# exactly (so is finite), failed rows are misses that a following put_many rewrites, and a
# warning names the file.

CACHE_FP = "f" * 32
CACHE_N, CACHE_DIM = 300, 576  # 2,304-byte vectors: each row spills onto an overflow page, as real ones do
CACHE_DAMAGE = ["page", "page-overflow", "blob-local", "blob-overflow", "truncate", "garbage", "zero", "old-schema"]
_OLD_SCHEMA = """
CREATE TABLE vectors (fingerprint TEXT NOT NULL, key BLOB NOT NULL, dim INTEGER NOT NULL, vector BLOB NOT NULL,
                      PRIMARY KEY (fingerprint, key)) WITHOUT ROWID;
CREATE TABLE encoders (fingerprint TEXT PRIMARY KEY, config TEXT NOT NULL, created REAL NOT NULL);
"""


def _cache_data():
    rng = np.random.default_rng(0)
    sentences = [f"cached sentence number {i}" for i in range(CACHE_N)]
    return sentences, rng.standard_normal((CACHE_N, CACHE_DIM), dtype=np.float32)


def _write_cache(db: Path, old_schema: bool = False):
    """A cache file with CACHE_N vectors under CACHE_FP; returns (sentences, vectors)."""
    from prompteol.cache import EmbeddingCache, sentence_key

    sentences, vectors = _cache_data()
    if old_schema:  # as prompteol wrote it before the checksums (schema 1, user_version 0)
        con = sqlite3.connect(db)
        con.execute("PRAGMA journal_mode=WAL")
        con.executescript(_OLD_SCHEMA)
        with con:
            con.executemany("INSERT INTO vectors VALUES (?, ?, ?, ?)",
                            [(CACHE_FP, sentence_key(s), CACHE_DIM, v.tobytes()) for s, v in zip(sentences, vectors)])  # fmt: skip
            con.execute("INSERT INTO encoders VALUES (?, ?, ?)", (CACHE_FP, '{"model": "old"}', 0.0))
        con.close()
    else:
        cache = EmbeddingCache(db)
        cache.register(CACHE_FP, {"model": "synthetic", "pooling": "last"})
        for i in range(0, CACHE_N, 100):
            cache.put_many(CACHE_FP, sentences[i : i + 100], vectors[i : i + 100])
        cache.close()
    assert not db.with_name(db.name + "-wal").exists(), "the last close checkpoints the WAL into the file"
    return sentences, vectors


def _flip_in_blob(db: Path, vector: np.ndarray, offset: int) -> None:
    """Flip one bit of ``vector``'s bytes (at ``offset``, a multiple of 4) where they are stored in the file."""
    data = bytearray(db.read_bytes())
    probe = vector.tobytes()[offset : offset + 32]
    pos = data.find(probe)
    assert pos > 0 and data.find(probe, pos + 1) < 0, "the vector bytes are stored exactly once"
    data[pos] ^= 0x01  # the lowest mantissa bit of one float (offset is 4-aligned): still finite and close,
    # so only the checksum can tell
    db.write_bytes(bytes(data))


def _damage(kind: str, db: Path, vectors: np.ndarray) -> None:
    size = db.stat().st_size
    rng = np.random.default_rng(1)
    if kind == "page":  # one 4 KB page of random bytes in the middle of the file
        pages = size // 4096
        with open(db, "r+b") as f:
            f.seek((pages // 2) * 4096)
            f.write(rng.bytes(4096))
    elif kind == "page-overflow":  # random bytes over the whole overflow page that holds the end of one vector
        data = db.read_bytes()
        pos = data.find(vectors[200].tobytes()[1500:1532])
        assert pos > 0
        with open(db, "r+b") as f:
            f.seek(pos // 4096 * 4096)
            f.write(rng.bytes(4096))
    elif kind == "blob-local":  # inside the part of a vector stored in the b-tree cell
        _flip_in_blob(db, vectors[123], 16)
    elif kind == "blob-overflow":  # inside the part of a vector stored on its overflow page
        _flip_in_blob(db, vectors[123], 1500)
    elif kind == "truncate":
        with open(db, "r+b") as f:
            f.truncate(size // 2)
    elif kind == "garbage":
        db.write_bytes(rng.bytes(size))
    elif kind == "zero":
        db.write_bytes(b"")
    elif kind == "deleted":
        db.unlink()
    elif kind != "old-schema":
        raise ValueError(kind)


def _damaged_cache(tmp_path: Path, kind: str):
    db = tmp_path / "embeddings.sqlite"
    sentences, vectors = _write_cache(db, old_schema=kind == "old-schema")
    _damage(kind, db, vectors)
    return db, sentences, vectors


def _assert_exact(got: dict, sentences, vectors) -> None:
    index = {s: i for i, s in enumerate(sentences)}
    for s, v in got.items():
        assert v.dtype == np.float32 and v.shape == (CACHE_DIM,)
        assert np.isfinite(v).all(), f"a non-finite vector was served for {s!r}"
        assert np.array_equal(v, vectors[index[s]]), f"a wrong vector was served for {s!r}"


def _cache_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "prompteol.cache" and r.levelno >= logging.WARNING]


@pytest.mark.parametrize("kind", CACHE_DAMAGE)
def test_cache_damaged_file_serves_only_exact_vectors(tmp_path, caplog, kind):
    from prompteol.cache import EmbeddingCache

    db, sentences, vectors = _damaged_cache(tmp_path, kind)
    caplog.set_level(logging.INFO, logger="prompteol.cache")
    cache = EmbeddingCache(db)
    got = cache.get_many(CACHE_FP, sentences)
    _assert_exact(got, sentences, vectors)
    missing = [i for i, s in enumerate(sentences) if s not in got]
    if kind.startswith("blob"):
        assert missing == [123], "exactly the damaged row is a miss"
    elif kind == "page-overflow":
        assert missing == [200], "exactly the row of that page is a miss"
    elif kind != "page":
        assert len(missing) == CACHE_N
    assert missing, "the damage cost at least one row"
    warnings = _cache_warnings(caplog)
    assert warnings and any(str(db) in w for w in warnings), warnings
    assert len(warnings) == 1, f"one warning per problem: {warnings}"
    assert cache.disabled is None, "the cache repaired itself"

    caplog.clear()
    cache.put_many(CACHE_FP, [sentences[i] for i in missing], vectors[missing])  # what the caller recomputed
    again = cache.get_many(CACHE_FP, sentences)
    _assert_exact(again, sentences, vectors)
    assert all(sentences[i] in again for i in missing), "the failed rows were rewritten"
    cache.close()
    fresh = EmbeddingCache(db)  # the next run: sound, no warnings
    _assert_exact(fresh.get_many(CACHE_FP, sentences), sentences, vectors)
    assert len(fresh.get_many(CACHE_FP, [sentences[i] for i in missing])) == len(missing)
    assert fresh.check()["failed"] == 0 and fresh.check()["quick_check"] == "ok"
    fresh.close()
    assert not _cache_warnings(caplog)
    moved = sorted(p.name for p in tmp_path.glob("embeddings.sqlite.damaged-*"))
    if kind in ("truncate", "garbage"):
        assert len([m for m in moved if not m.endswith(("-wal", "-shm"))]) == 1, moved
    if kind.startswith("blob") or kind in ("page-overflow", "zero", "old-schema"):
        assert not moved, "nothing to move aside: the file itself is sound"


@pytest.mark.parametrize("kind", ["page", "truncate", "garbage", "zero", "deleted"])
def test_cache_damage_after_open_never_raises(tmp_path, caplog, kind):
    """The file is damaged while the cache is open (the open check has passed): reads miss, writes go on."""
    from prompteol.cache import EmbeddingCache

    db = tmp_path / "embeddings.sqlite"
    sentences, vectors = _write_cache(db)
    cache = EmbeddingCache(db)
    assert len(cache.get_many(CACHE_FP, sentences[:5])) == 5
    cache.close()  # the next statement opens a new connection, as a later thread or call would
    _damage(kind, db, vectors)
    caplog.set_level(logging.WARNING, logger="prompteol.cache")
    got = cache.get_many(CACHE_FP, sentences)
    _assert_exact(got, sentences, vectors)
    assert len(got) < CACHE_N and _cache_warnings(caplog)
    assert cache.disabled is None, "repaired: it goes on with a fresh cache"
    missing = [i for i, s in enumerate(sentences) if s not in got]
    cache.put_many(CACHE_FP, [sentences[i] for i in missing], vectors[missing])
    _assert_exact(cache.get_many(CACHE_FP, sentences), sentences, vectors)
    cache.count(), cache.info(), cache.register("g" * 32, {})  # none of them raises
    cache.close()
    later = EmbeddingCache(db)
    _assert_exact(later.get_many(CACHE_FP, sentences), sentences, vectors)
    later.put_many(CACHE_FP, sentences, vectors)
    assert len(later.get_many(CACHE_FP, sentences)) == CACHE_N
    later.close()


class _FailingConnection:
    """Stands in for a sqlite3 connection whose every statement fails (locked, disk full, ...)."""

    def __init__(self, error):
        self.error = error

    def execute(self, *a, **k):
        raise self.error

    executemany = execute

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def close(self):
        pass


@pytest.mark.parametrize("error", [sqlite3.OperationalError("database is locked"),
                                   sqlite3.DatabaseError("database disk image is malformed")])  # fmt: skip
def test_cache_errors_mid_run_are_misses_and_disable_writes(tmp_path, caplog, error):
    from prompteol.cache import EmbeddingCache

    db = tmp_path / "embeddings.sqlite"
    sentences, vectors = _write_cache(db)
    cache = EmbeddingCache(db)
    caplog.set_level(logging.WARNING, logger="prompteol.cache")
    cache._local.con = _FailingConnection(error)
    assert cache.get_many(CACHE_FP, sentences) == {}  # a miss
    cache._local.con = _FailingConnection(error)
    cache.put_many(CACHE_FP, sentences[:3], vectors[:3])
    cache.put_many(CACHE_FP, sentences[:3], vectors[:3])
    assert cache.get_many(CACHE_FP, sentences[:3]) == {} and cache.count() == 0 and cache.info() == []
    warnings = _cache_warnings(caplog)
    assert 1 <= len(warnings) <= 2 and "disabled for the rest of this process" in warnings[-1], warnings
    assert cache.disabled is not None
    assert db.exists() and not list(tmp_path.glob("*.damaged-*")), "a sound file is never moved aside"
    cache.close()
    later = EmbeddingCache(db)  # the file itself was fine all along
    _assert_exact(later.get_many(CACHE_FP, sentences), sentences, vectors)
    assert len(later.get_many(CACHE_FP, sentences)) == CACHE_N
    later.close()


def test_cache_non_finite_vectors_are_never_stored(tmp_path):
    from prompteol.cache import EmbeddingCache

    cache = EmbeddingCache(tmp_path / "embeddings.sqlite")
    vecs = np.ones((3, 4), dtype=np.float32)
    vecs[1, 2] = np.nan
    vecs[2, 0] = np.inf
    cache.put_many(CACHE_FP, ["a", "b", "c"], vecs)
    assert set(cache.get_many(CACHE_FP, ["a", "b", "c"])) == {"a"}
    cache.close()


def test_cache_non_finite_row_on_disk_is_not_served(tmp_path, caplog):
    """A row whose stored bytes decode to NaN (with a matching checksum, as a bug could write) is rejected."""
    from prompteol.cache import EmbeddingCache, row_checksum, sentence_key

    db = tmp_path / "embeddings.sqlite"
    cache = EmbeddingCache(db)
    bad = np.full(4, np.nan, dtype=np.float32).tobytes()
    con = sqlite3.connect(db)
    with con:
        con.execute("INSERT INTO vectors (fingerprint, key, dim, vector, checksum) VALUES (?, ?, 4, ?, ?)",
                    (CACHE_FP, sentence_key("x"), bad, row_checksum(CACHE_FP, sentence_key("x"), 4, bad)))  # fmt: skip
    con.close()
    caplog.set_level(logging.WARNING, logger="prompteol.cache")
    assert cache.get_many(CACHE_FP, ["x"]) == {}
    assert "1 non-finite" in " ".join(_cache_warnings(caplog))
    assert cache.count(CACHE_FP) == 0, "the failed row was deleted"
    cache.close()


def test_cache_damaged_file_open_in_another_process_is_not_moved(tmp_path, caplog):
    """The move-aside never renames a file another process has open (it holds the -shm lock)."""
    from prompteol.cache import EmbeddingCache

    db = tmp_path / "embeddings.sqlite"
    sentences, vectors = _write_cache(db)
    code = textwrap.dedent(f"""
        import sys
        from prompteol.cache import EmbeddingCache
        cache = EmbeddingCache({str(db)!r})
        assert len(cache.get_many({CACHE_FP!r}, {sentences[:3]!r})) == 3
        print("OPEN", flush=True)
        sys.stdin.readline()
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    try:
        assert child.stdout.readline().strip() == "OPEN"
        with open(db, "r+b") as f:  # damaged in place while the child has it open
            f.write(b"\x00" * 100)
        caplog.set_level(logging.WARNING, logger="prompteol.cache")
        cache = EmbeddingCache(db)
        assert cache.disabled is not None and "another process" in cache.disabled
        assert cache.get_many(CACHE_FP, sentences) == {}
        cache.put_many(CACHE_FP, sentences[:3], vectors[:3])  # a no-op, no exception
        assert db.exists() and not list(tmp_path.glob("*.damaged-*")), "left in place"
        assert len(_cache_warnings(caplog)) == 1
        cache.close()
    finally:
        child.communicate("\n", timeout=60)
    later = EmbeddingCache(db)  # nobody has it open now: moved aside, fresh cache
    assert later.disabled is None and len(later.moved_aside) == 1
    later.put_many(CACHE_FP, sentences, vectors)
    _assert_exact(later.get_many(CACHE_FP, sentences), sentences, vectors)
    later.close()


def test_cache_shared_by_processes_stays_sound(tmp_path):
    """Processes that open, write, read and close one file concurrently never see damage or lose it."""
    db = tmp_path / "embeddings.sqlite"
    code = textwrap.dedent(f"""
        import sys, numpy as np
        from prompteol.cache import EmbeddingCache
        me = int(sys.argv[1])
        rng = np.random.default_rng(me)
        for round in range(25):
            cache = EmbeddingCache({str(db)!r})
            assert cache.disabled is None and not cache.notes, cache.notes
            sents = [f"p{{me}} r{{round}} s{{i}}" for i in range(20)]
            vecs = rng.standard_normal((20, 64), dtype=np.float32)
            cache.put_many("fp", sents, vecs)
            got = cache.get_many("fp", sents)
            assert all(np.array_equal(got[s], v) for s, v in zip(sents, vecs)), "wrong vectors"
            cache.close()
        print("DONE")
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(3)]  # fmt: skip
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0 and "DONE" in out, err
    assert not list(tmp_path.glob("*.damaged-*"))
    from prompteol.cache import EmbeddingCache

    cache = EmbeddingCache(db)
    assert cache.count("fp") == 3 * 25 * 20 and cache.check()["ok"] == 3 * 25 * 20
    cache.close()


@pytest.mark.parametrize("kind", CACHE_DAMAGE)
def test_cache_info_reports_damage(tmp_path, capsys, monkeypatch, kind):
    from prompteol.cli.main import main

    monkeypatch.setenv("PROMPTEOL_CACHE", str(tmp_path))  # main() sets it from --cache-dir; restored after
    _damaged_cache(tmp_path, kind)
    assert main(["--cache-dir", str(tmp_path), "cache", "info"]) == 0
    out = capsys.readouterr().out
    assert "state: ok" in out
    expected = {"truncate": "moved it aside", "garbage": "moved it aside", "zero": "empty (0-byte)",
                "old-schema": "upgraded"}.get(kind)  # fmt: skip
    if expected:
        assert expected in out, out
    assert main(["--cache-dir", str(tmp_path), "cache", "info", "--check"]) == 0
    out = capsys.readouterr().out
    assert "check: quick_check" in out, out


@pytest.mark.parametrize("kind", CACHE_DAMAGE)
def test_cache_clear_works_on_a_damaged_file(tmp_path, capsys, monkeypatch, kind):
    from prompteol.cache import EmbeddingCache
    from prompteol.cli.main import main

    monkeypatch.setenv("PROMPTEOL_CACHE", str(tmp_path))
    db, sentences, vectors = _damaged_cache(tmp_path, kind)
    assert main(["--cache-dir", str(tmp_path), "cache", "clear"]) == 0
    out = capsys.readouterr().out
    assert "deleted" in out, out
    assert not list(tmp_path.glob("embeddings.sqlite.damaged-*")), "clear removes the damaged copies"
    cache = EmbeddingCache(db)
    assert cache.count() == 0 and cache.disabled is None and not cache.notes
    cache.put_many(CACHE_FP, sentences, vectors)
    _assert_exact(cache.get_many(CACHE_FP, sentences), sentences, vectors)
    cache.close()


def test_cache_encoder_end_to_end_recomputes_damaged_rows(tmp_path, caplog):
    """Through the encoder: vectors flipped on disk are recomputed; the result equals the first run."""
    import prompteol
    from prompteol.cache import EmbeddingCache

    try:
        enc = prompteol.Encoder.from_pretrained("tiny-random-llama", cache_dir=tmp_path, embedding_cache=True)
    except TypeError:  # the keyword before its rename
        enc = prompteol.Encoder.from_pretrained("tiny-random-llama", cache_dir=tmp_path, cache=True)
    cache = next(c for c in (getattr(enc, "embedding_cache", None), getattr(enc, "cache", None))
                 if isinstance(c, EmbeddingCache))  # fmt: skip
    texts = [f"The sentence number {i} is {'long ' * (i % 7)}enough." for i in range(50)]
    first = enc.encode(texts)
    assert np.isfinite(first).all()
    cache.close()  # checkpoints the WAL into the file
    db = cache.path
    for i in (3, 17, 41):
        _flip_in_blob(db, first[i], 4 * (i % 8))
    caplog.set_level(logging.WARNING, logger="prompteol.cache")
    second = enc.encode(texts)
    assert np.isfinite(second).all()
    assert np.abs(second - first).max() < 1e-6
    assert any("3 cached vector(s) failed" in w for w in _cache_warnings(caplog)), _cache_warnings(caplog)
    cache.close()
