"""Fault injection with real files: damaged inputs never give wrong results or tracebacks.

One section per area; each section is self-contained (its own helpers, fixtures and tests)
so that sections can be added independently. Every test is fast (seconds).
"""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import require

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


# ================================================================================================
# helpers for the sections below: the CLI in this process, a live server on a tiny model
# ================================================================================================
#
# Every CLI case runs ``prompteol.cli.main.main([...])`` and asserts the exit code, a one-line
# ``error: ...`` on stderr and no traceback; the server cases run a real uvicorn on a loopback
# port (``serve_in_thread``) around the session's tiny encoder.

FAULT_MODEL = "tiny-random-llama"  # 2048 positions, byte-level tokenizer (one token per UTF-8 byte)


def _cli(capsys, monkeypatch, cache_dir: Path, *args: str) -> tuple[int, str]:
    """``prompteol --cache-dir CACHE ARGS`` in this process: (exit code, stderr)."""
    from prompteol.cli.main import main

    monkeypatch.setenv("PROMPTEOL_CACHE", str(cache_dir))  # main() sets it from --cache-dir; restored after
    capsys.readouterr()
    code = main(["--cache-dir", str(cache_dir), *args])
    return code, capsys.readouterr().err


def _assert_one_line_error(code: int, err: str, *words: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    for word in words:
        assert word in lines[0], lines[0]


def _encode_args(src: Path, out: Path, *more: str) -> list[str]:
    return ["encode", "--model", FAULT_MODEL, "--no-progress", "--no-cache", str(src), "-o", str(out), *more]


@pytest.fixture
def fault_cli(capsys, monkeypatch, test_cache_dir):
    return lambda *args: _cli(capsys, monkeypatch, test_cache_dir, *args)


@pytest.fixture(scope="module")
def fault_server(tiny_encoder):
    """A live server on the tiny encoder; its --max-input-tokens (4096) is above the model's 2048
    positions, so the model's own limit is what refuses long texts."""
    require("fastapi")
    from types import SimpleNamespace

    from prompteol.serve import ServeSettings, create_app, serve_in_thread

    settings = ServeSettings(model=FAULT_MODEL, max_inputs=8, max_input_tokens=4096, max_request_bytes=256 * 1024,
                             max_wait_ms=1, max_batch_size=4)  # fmt: skip
    app = create_app(settings, tiny_encoder)
    with serve_in_thread(app) as url:
        yield SimpleNamespace(url=url, state=app.state.prompteol)


def _post(server, body) -> tuple[int, dict]:
    import json

    import httpx

    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = httpx.post(server.url + "/v1/embeddings", content=content, headers={"Content-Type": "application/json"},
                   timeout=60)  # fmt: skip
    return r.status_code, r.json()


def _assert_server_error(server, body, status: int, param: str | None, code: str, *words: str) -> dict:
    import httpx

    got, payload = _post(server, body)
    assert got == status, payload
    error = payload["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param and error["code"] == code, error
    for word in words:
        assert word in error["message"], error["message"]
    assert httpx.get(server.url + "/health").status_code == 200  # still up
    return error


# ================================================================================================
# input policy: lone surrogates and non-string inputs (library, CLI, server)
# ================================================================================================
#
# A lone UTF-16 surrogate ("a\ud800b") is valid JSON and a valid Python str, but not Unicode a
# tokenizer can encode: it is refused with the index (library), the line (CLI) or input[i]
# (server), never a TypeError from the tokenizer or a 500.

SURROGATE_JSON = b'"a\\ud800b"'  # the JSON text of a string holding U+D800 at character 1


def test_surrogate_library_names_the_index(tiny_encoder):
    from prompteol.encoder.prompts.builder import check_texts
    from prompteol.errors import InputError

    with pytest.raises(InputError, match=r"^texts\[3\] contains a lone surrogate \(U\+D800\) at character 1; "):
        tiny_encoder.encode(["a", "b", "c", "a\ud800b"])
    with pytest.raises(InputError, match=r"texts\[0\] contains a lone surrogate \(U\+DCFF\) at character 3"):
        check_texts(["bad\udcff"])  # what errors='surrogateescape' makes of the byte 0xff
    with pytest.raises(InputError, match=r"texts\[1\] contains a lone surrogate \(U\+D83D\)"):
        check_texts(["ok", "\ud83d\ude00"])  # a pair left as two code points is not valid either
    assert check_texts(["😀 ok", "Ünïcödé"]) == ["😀 ok", "Ünïcödé"]


@pytest.mark.parametrize("bad", [{"a": 1}, b"abc", bytearray(b"abc"), ["ok", b"abc"], ["ok", 3], "one string"])
def test_non_string_inputs_are_input_errors(tiny_encoder, bad):
    from prompteol.errors import InputError

    with pytest.raises(InputError, match="texts"):
        tiny_encoder.encode(bad)


def test_surrogate_cli_jsonl_names_the_line(tmp_path, fault_cli):
    src = tmp_path / "in.jsonl"
    src.write_bytes(b'{"text": "fine"}\n\n{"text": "also fine"}\n{"text": ' + SURROGATE_JSON + b"}\n")
    out = tmp_path / "out.npy"
    code, err = fault_cli(*_encode_args(src, out))
    _assert_one_line_error(code, err, "in.jsonl line 4", "'text'", "lone surrogate (U+D800) at character 1")
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_surrogate_cli_jsonl_other_field_names_the_line(tmp_path, fault_cli):
    """A surrogate in a field kept in .jsonl output could not be written after the work: refused first."""
    src = tmp_path / "in.jsonl"
    src.write_bytes(b'{"text": "fine", "id": ' + SURROGATE_JSON + b"}\n")
    out = tmp_path / "out.jsonl"
    code, err = fault_cli(*_encode_args(src, out))
    _assert_one_line_error(code, err, "in.jsonl line 1", "'id'", "lone surrogate")
    assert not out.exists()


def test_surrogate_cli_stdin_names_the_line(tmp_path, fault_cli, monkeypatch):
    import io

    stdin = io.TextIOWrapper(io.BytesIO(b"fine\nbad \xff byte\n"), encoding="utf-8", errors="surrogateescape")
    monkeypatch.setattr(sys, "stdin", stdin)
    out = tmp_path / "out.npy"
    code, err = fault_cli(*_encode_args(Path("-"), out))
    _assert_one_line_error(code, err, "- line 2", "lone surrogate (U+DCFF) at character 4")
    assert not out.exists()


def test_surrogate_cli_executable_prints_no_traceback(tmp_path, test_cache_dir):
    """The real ``prompteol`` executable, in a subprocess."""
    import os
    import shutil

    exe = shutil.which("prompteol") or str(Path(sys.executable).with_name("prompteol"))
    src = tmp_path / "in.jsonl"
    src.write_bytes(b'{"text": "fine"}\n{"text": ' + SURROGATE_JSON + b"}\n")
    out = tmp_path / "out.npy"
    env = {**os.environ, "PROMPTEOL_CACHE": str(test_cache_dir)}
    proc = subprocess.run([exe, *_encode_args(src, out)], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "in.jsonl line 2" in proc.stderr and "lone surrogate (U+D800)" in proc.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (b'{"model": "tiny-random-llama", "input": ["a", "b", "c", ' + SURROGATE_JSON + b"]}", "input[3]"),
        (b'{"model": "tiny-random-llama", "input": ' + SURROGATE_JSON + b"}", "'input'"),
    ],
    ids=["list", "string"],
)
def test_surrogate_server_is_a_400_naming_the_input(fault_server, body, where):
    _assert_server_error(fault_server, body, 400, "input", "invalid_input",
                         f"{where} contains a lone surrogate (U+D800) at character 1")  # fmt: skip


# ================================================================================================
# context length: prompts over the model's positions (library, CLI, server)
# ================================================================================================


def test_max_positions_from_the_model_config():
    from transformers import Gemma3Config, GPT2Config, LlamaConfig

    from prompteol.encoder.limits import max_positions

    assert max_positions(LlamaConfig(max_position_embeddings=8192)) == 8192
    assert max_positions(GPT2Config(n_positions=1024)) == 1024
    composite = Gemma3Config(text_config={"max_position_embeddings": 4096})
    assert max_positions(composite) == 4096  # the text config's (get_text_config)
    assert max_positions(object()) is None


@pytest.mark.parametrize("model", ["tiny-random-llama", "tiny-random-gpt2"])
def test_encoder_knows_its_max_positions(test_cache_dir, model):
    import prompteol

    enc = prompteol.Encoder.from_pretrained(model, cache_dir=test_cache_dir)
    assert enc.max_positions == enc.prompts.max_positions == 2048


def test_over_long_text_is_refused_with_index_tokens_and_limit(tiny_encoder):
    from prompteol.encoder.prompts.builder import ContextLengthError
    from prompteol.errors import InputError

    overhead = tiny_encoder.token_counts(["y."])[0] - 2  # template tokens (one per byte; "y." is kept as is)
    fits, over = "y" * (2047 - overhead) + ".", "y" * (2048 - overhead) + "."
    assert tiny_encoder.token_counts([fits, over]) == [2048, 2049]  # counting never refuses
    assert tiny_encoder.encode([fits]).shape == (1, tiny_encoder.dim)  # exactly the limit: accepted
    with pytest.raises(ContextLengthError) as info:
        tiny_encoder.encode(["short", "short", "other", over])  # duplicates: the index is still the caller's
    err = info.value
    assert isinstance(err, InputError) and (err.index, err.tokens, err.limit) == (3, 2049, 2048)
    message = str(err)
    assert message.startswith("texts[3] ('yyyy") and "2049 tokens" in message and "2048 positions" in message
    assert "max_length (--max-length N)" in message and f"N <= {2048 - overhead} here" in message


def test_over_long_text_with_max_length_is_cut_with_a_warning(tiny_encoder, caplog):
    enc = tiny_encoder.derive(max_length=500)
    caplog.set_level(logging.WARNING, logger="prompteol.encoder.prompts.builder")
    vecs = enc.encode(["short", "y" * 5000], use_embedding_cache=False)
    assert vecs.shape == (2, enc.dim) and np.isfinite(vecs).all()
    assert any("cut to max_length=500" in r.getMessage() for r in caplog.records)


def test_one_megabyte_line_cli_is_a_one_line_error(tmp_path, fault_cli):
    """Before: a traceback from a 62 GB allocation. Now: refused before any forward."""
    src = tmp_path / "in.txt"
    src.write_text("a short line\n" + "lorem ipsum " * 87_382 + "\nanother\n")  # a 1 MiB line
    out = tmp_path / "out.npy"
    code, err = fault_cli(*_encode_args(src, out))
    _assert_one_line_error(code, err, "texts[1]", "2048 positions", "--max-length")
    import re

    assert int(re.search(r"is (\d+) tokens", err).group(1)) > 1_000_000  # one per byte, template included
    assert not out.exists()


def test_over_long_text_server_is_a_400(fault_server):
    text = "y" * 3000  # 3000 tokens: under the server's --max-input-tokens (4096), over the model's 2048
    _assert_server_error(fault_server, {"model": FAULT_MODEL, "input": ["fine", text]}, 400, "input",
                         "context_length_exceeded", "input[1]", "2048 positions")  # fmt: skip


# ================================================================================================
# memory: batches split to fit, a sequence too large alone refused before any forward
# ================================================================================================
#
# prompteol.encoder.limits estimates a batch's activation memory from its lengths (formula in the module
# docstring) and plans batches within MEMORY_FRACTION of limits.available_memory(); here that
# function is replaced by one returning a small number.


def test_memory_estimate_formula():
    from prompteol.encoder.limits import ActivationShape

    sdpa = ActivationShape(hidden=576, intermediate=1536, heads=9, kv=192, layers=30, dtype_bytes=4, attention="sdpa")
    per_token = 4 * (10 * 576 + 4 * 1536 + 4 * 192 * 30)
    assert sdpa.batch_bytes(1, 1) == per_token + 5
    assert sdpa.batch_bytes(8, 100) == 8 * 100 * per_token + 8 * 100 * 100 * (1 + 4)
    eager = ActivationShape(576, 1536, 9, 192, 30, 4, "eager")
    assert eager.batch_bytes(2, 1000) == 2 * 1000 * per_token + 2 * 1000 * 1000 * (2 * 9 + 1) * 4
    assert ActivationShape(576, 1536, 9, 192, 30, 2, "flash_attention_2").batch_bytes(2, 10) == 2 * 10 * per_token // 2


def test_plan_batches_splits_to_fit_and_refuses_what_cannot():
    from prompteol.encoder.batching import MemoryLimitError, plan_batches

    lengths = [10, 50, 20, 50, 30, 40, 10, 5]
    cost = lambda n, t: n * t  # noqa: E731 - padded tokens as the "bytes"
    batches = plan_batches(lengths, 32, max_batch_bytes=100, batch_bytes=cost)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))  # nothing lost, nothing twice
    assert all(len(b) * max(lengths[i] for i in b) <= 100 for b in batches)
    assert plan_batches(lengths, 32) == [sorted(range(8), key=lambda i: -lengths[i])]  # no budget: one batch
    with pytest.raises(MemoryLimitError, match=r"texts\[1\] is 50 tokens") as info:
        plan_batches(lengths, 32, max_batch_bytes=49, batch_bytes=cost)
    assert (info.value.index, info.value.tokens, info.value.need, info.value.limit) == (1, 50, 50, 49)


class _Forwards:
    """Records the batch sizes the model runner is asked to compute."""

    def __init__(self, monkeypatch, encoder):
        self.sizes: list[int] = []
        inner = encoder.runner.vectors

        def vectors(seqs, *args, **kwargs):
            self.sizes.append(len(seqs))
            return inner(seqs, *args, **kwargs)

        monkeypatch.setattr(encoder.runner, "vectors", vectors)


def _memory_texts() -> list[str]:
    return [f"sentence {i} " + "word " * (i * 7 % 40) for i in range(24)]


def test_memory_limited_batches_are_split_and_give_the_same_vectors(tiny_encoder, monkeypatch):
    from prompteol.encoder import limits

    texts = _memory_texts()
    want = tiny_encoder.encode(texts, batch_size=32, use_embedding_cache=False)
    shape = limits.activation_shape(tiny_encoder.model, tiny_encoder.layer_index)
    longest = max(tiny_encoder.token_counts(texts))
    room = shape.batch_bytes(4, longest)  # about 4 of the longest fit
    monkeypatch.setattr(limits, "available_memory", lambda device=None: int(room / limits.MEMORY_FRACTION) + 1)
    forwards = _Forwards(monkeypatch, tiny_encoder)
    got = tiny_encoder.encode(texts, batch_size=32, use_embedding_cache=False)
    assert len(forwards.sizes) > 1 and sum(forwards.sizes) == len(texts), forwards.sizes
    assert forwards.sizes[0] <= 4  # the longest batch was cut to what fits
    assert np.abs(got - want).max() < 1e-5


def test_memory_sequence_too_large_alone_is_refused_before_any_forward(tiny_encoder, monkeypatch):
    from prompteol.encoder import limits
    from prompteol.errors import InputError

    monkeypatch.setattr(limits, "available_memory", lambda device=None: 64 * 1024)  # 64 KiB
    forwards = _Forwards(monkeypatch, tiny_encoder)
    with pytest.raises(limits.MemoryLimitError) as info:
        tiny_encoder.encode(["short", "a longer sentence " * 20, "mid length one"], use_embedding_cache=False)
    assert forwards.sizes == []  # nothing was computed
    err = info.value
    assert isinstance(err, InputError) and err.index == 1 and err.tokens > 300
    message = str(err)
    assert message.startswith(f"texts[1] is {err.tokens} tokens") and "MiB of memory" in message
    assert "64.0 KiB available on cpu" in message


def test_memory_refusal_cli_is_a_one_line_error(tmp_path, fault_cli, monkeypatch):
    from prompteol.encoder import limits

    monkeypatch.setattr(limits, "available_memory", lambda device=None: 64 * 1024)
    src = tmp_path / "in.txt"
    src.write_text("one\n" + "a longer sentence " * 20 + "\n")
    out = tmp_path / "out.npy"
    code, err = fault_cli(*_encode_args(src, out))
    _assert_one_line_error(code, err, "texts[1]", "KiB available")
    assert not out.exists()


def test_memory_refusal_server_is_a_503_and_the_server_stays_up(fault_server, monkeypatch):
    from prompteol.encoder import limits

    monkeypatch.setattr(limits, "available_memory", lambda device=None: 64 * 1024)
    _assert_server_error(fault_server, {"model": FAULT_MODEL, "input": ["a longer sentence " * 20]}, 503, "input",
                         "insufficient_memory", "an input is", "KiB available")  # fmt: skip
    monkeypatch.undo()
    status, payload = _post(fault_server, {"model": FAULT_MODEL, "input": ["a longer sentence " * 20]})
    assert status == 200 and len(payload["data"]) == 1


def test_available_memory_is_a_positive_number():
    from prompteol.encoder.limits import available_memory

    got = available_memory("cpu")
    assert got is not None and got > 0


# ================================================================================================
# output paths: checked before the model is loaded; OSErrors are one-line errors
# ================================================================================================


def _unloadable(monkeypatch):
    """Loading a model fails the test: the output check must come first."""
    import prompteol.cli.common as common

    def no_load(*args, **kwargs):
        raise AssertionError("a model was loaded before the output was checked")

    monkeypatch.setattr(common, "build_encoder", no_load)
    monkeypatch.setattr("prompteol.cli.encode_cmd.build_encoder", no_load)
    monkeypatch.setattr("prompteol.cli.eval_cmd.build_encoder", no_load)


def _read_only_dir(tmp_path: Path) -> Path:
    import os

    if os.geteuid() == 0:  # root writes through permissions: use a place no one can create files in
        return Path("/sys")
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


@pytest.mark.parametrize("case", ["parent is a file", "is a directory", "read-only folder"])
def test_unwritable_encode_output_fails_before_loading(tmp_path, fault_cli, monkeypatch, case):
    src = tmp_path / "in.txt"
    src.write_text("one\ntwo\n")
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "a-dir.npy").mkdir()
    out = {"parent is a file": tmp_path / "a-file" / "sub" / "out.npy", "is a directory": tmp_path / "a-dir.npy",
           "read-only folder": _read_only_dir(tmp_path) / "out.npy"}[case]  # fmt: skip
    _unloadable(monkeypatch)
    code, err = fault_cli(*_encode_args(src, out))
    words = {"parent is a file": "cannot create the folder", "is a directory": "is a directory",
             "read-only folder": "cannot write in"}[case]  # fmt: skip
    _assert_one_line_error(code, err, "-o", words)
    assert not (out.is_file())


def test_missing_output_parents_are_created(tmp_path, fault_cli):
    src = tmp_path / "in.txt"
    src.write_text("one\ntwo\n")
    out = tmp_path / "new" / "deeper" / "out.npy"
    code, err = fault_cli(*_encode_args(src, out))
    assert code == 0, err
    assert np.load(out).shape[0] == 2
    assert [p.name for p in out.parent.iterdir()] == ["out.npy"]  # the probe file is gone


def test_unwritable_eval_output_fails_before_loading_and_before_the_data(tmp_path, fault_cli, monkeypatch):
    (tmp_path / "a-file").write_text("x")
    _unloadable(monkeypatch)
    code, err = fault_cli("eval", "--model", FAULT_MODEL, "--tasks", "STS12", "--data-dir", str(tmp_path / "none"),
                          "-o", str(tmp_path / "a-file" / "results.json"))  # fmt: skip
    _assert_one_line_error(code, err, "-o", "cannot create the folder")


def test_oserror_while_writing_is_one_line_and_leaves_nothing(tmp_path, fault_cli, monkeypatch):
    import errno

    src = tmp_path / "in.txt"
    src.write_text("one\ntwo\n")
    out = tmp_path / "out.npy"

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "save", disk_full)
    code, err = fault_cli(*_encode_args(src, out))
    _assert_one_line_error(code, err, "No space left on device")
    assert list(tmp_path.iterdir()) == [src]  # neither the output nor its temporary file


def test_a_real_bug_keeps_its_traceback(tmp_path, fault_cli, monkeypatch):
    src = tmp_path / "in.txt"
    src.write_text("one\n")

    def bug(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(np, "save", bug)
    with pytest.raises(ZeroDivisionError):
        fault_cli(*_encode_args(src, tmp_path / "out.npy"))


# ================================================================================================
# damaged GGUF files: one-line errors naming the file, nothing half-converted left behind
# ================================================================================================


def _tiny_gguf(path: Path) -> Path:
    """A small valid GGUF file (a llama header and two float32 tensors) written with gguf's GGUFWriter."""
    gguf = pytest.importorskip("gguf")
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(64)
    w.add_embedding_length(8)
    w.add_block_count(1)
    w.add_feed_forward_length(16)
    w.add_head_count(2)
    w.add_head_count_kv(2)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tensor("token_embd.weight", np.zeros((16, 8), dtype=np.float32))
    w.add_tensor("output_norm.weight", np.ones((8,), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _gguf_case(tmp_path: Path, case: str) -> Path:
    path = tmp_path / "model.gguf"
    if case == "garbage":
        path.write_bytes(b"\x00not a model\xff" * 8)
        return path
    whole = _tiny_gguf(tmp_path / "whole.gguf").read_bytes()
    cut = {"truncated header": 100, "truncated tensor infos": 400, "truncated data": len(whole) - 16, "empty": 0}
    path.write_bytes(whole[: cut[case]])
    return path


GGUF_CASES = {
    "garbage": "is not a GGUF file",
    "empty": r"is not a GGUF file \(it is empty",
    "truncated header": "damaged or truncated GGUF file",
    "truncated tensor infos": "damaged or truncated GGUF file",
    "truncated data": r"is a truncated GGUF file: tensor 'output_norm.weight' ends at byte \d+ but the file has \d+",
}


@pytest.mark.parametrize("case", list(GGUF_CASES))
def test_damaged_gguf_is_a_clear_error(tmp_path, case):
    from prompteol.errors import ModelNotFoundError
    from prompteol.models.gguf import check_gguf

    path = _gguf_case(tmp_path, case)
    with pytest.raises(ModelNotFoundError, match=GGUF_CASES[case]) as info:
        check_gguf(path)
    assert str(path) in str(info.value)
    check_gguf(_tiny_gguf(tmp_path / "fine.gguf"))  # a whole file passes


@pytest.mark.parametrize("case", ["garbage", "truncated data"])
def test_damaged_gguf_cli_is_a_one_line_error(tmp_path, capsys, monkeypatch, case):
    cache = tmp_path / "cache"
    path = _gguf_case(tmp_path, case)
    src = tmp_path / "in.txt"
    src.write_text("one\n")
    out = tmp_path / "out.npy"
    code, err = _cli(capsys, monkeypatch, cache, "encode", "--model", str(path), "--no-cache", str(src), "-o", str(out))
    _assert_one_line_error(code, err, str(path))
    assert not out.exists()
    assert not list((cache / "gguf").glob("*")) if (cache / "gguf").exists() else True  # nothing half-converted


def test_gguf_transformers_cannot_load_is_a_clear_error(tmp_path):
    """A whole, well-formed GGUF file that transformers cannot use (no tokenizer here): its failure
    becomes one error naming the file, and no half-converted folder is left."""
    from prompteol.errors import ModelNotFoundError
    from prompteol.models.gguf import convert_gguf

    path = _tiny_gguf(tmp_path / "no-tokenizer.gguf")
    target = tmp_path / "converted"
    with pytest.raises(ModelNotFoundError, match="transformers cannot load the GGUF file") as info:
        convert_gguf(path, target, {"gguf_sha256": "0" * 64}, progress=False)
    assert str(path) in str(info.value)
    assert not target.exists() and not list(tmp_path.glob(".tmp-*"))


# ================================================================================================
# server request fields: types are checked strictly
# ================================================================================================


@pytest.mark.parametrize("dimensions", ["8", True, 8.0, "abc", [8]], ids=["string", "true", "float", "word", "list"])
def test_dimensions_must_be_an_integer(fault_server, dimensions):
    body = {"model": FAULT_MODEL, "input": "a", "dimensions": dimensions}
    _assert_server_error(fault_server, body, 400, "dimensions", "invalid_value", "dimensions", "integer")


def test_dimensions_integer_still_works(fault_server):
    status, payload = _post(fault_server, {"model": FAULT_MODEL, "input": ["a", "b"], "dimensions": 8})
    assert status == 200
    vecs = np.array([d["embedding"] for d in payload["data"]])
    assert vecs.shape == (2, 8) and np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)


def test_fault_server_answered_no_500(fault_server):
    import httpx

    assert 'status="500"' not in httpx.get(fault_server.url + "/metrics").text
