"""``prompteol encode`` streamed (local engine): chunked output equals ``Encoder.encode`` of the whole
input for .npy / .jsonl / .parquet (float32 and float16, input columns kept), an interrupted run
resumes to the same file, bad input fails before any model loads, and memory stays bounded."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from conftest import require

from prompteol.cli.main import main
from prompteol.corpus import local, resume
from prompteol.corpus.source import open_source
from prompteol.errors import InputError

pa = require("pyarrow")
pq = require("pyarrow.parquet")

MODEL = "tiny-random-llama"
TEXTS = [f"sentence number {i} about topic {i % 7}" + " more" * (i % 5) for i in range(23)] + ["", "Ünïcödé ✓"]


class Counting:
    """The session's tiny encoder (no reload per command), recording the texts of every encode call."""

    def __init__(self, inner):
        self.inner = inner
        self.calls: list[int] = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode(self, texts, **kwargs):
        self.calls.append(len(texts))
        return self.inner.encode(texts, **kwargs)


@pytest.fixture
def enc(monkeypatch, tiny_encoder, test_cache_dir):
    monkeypatch.setenv("PROMPTEOL_CACHE", str(test_cache_dir))
    counting = Counting(tiny_encoder)
    monkeypatch.setattr("prompteol.cli.encode_cmd.build_encoder", lambda args, **kw: counting)
    return counting


def run(capsys, *args) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["encode", "--model", MODEL, "--no-progress", "--no-cache", *map(str, args)])
    return code, capsys.readouterr().err


def read_vectors(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        return np.load(path)
    if path.suffix == ".jsonl":
        return np.array([json.loads(line)["embedding"] for line in path.read_text().splitlines()])
    col = pq.read_table(path).column("embedding")
    dim = col.type.list_size
    return np.asarray(col.combine_chunks().flatten().to_numpy(zero_copy_only=False)).reshape(len(col), dim)


def write_text(tmp_path: Path, texts=TEXTS) -> Path:
    src = tmp_path / "in.txt"
    src.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    return src


# ---------------------------------------------------------------------------------------------- parity
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("fmt", ["npy", "jsonl", "parquet"])
@pytest.mark.parametrize("chunk", [7, 1000])  # several chunks (resumable path) and one chunk (one step)
def test_streamed_text_input_equals_whole_encode(tmp_path, capsys, enc, tiny_encoder, fmt, dtype, chunk):
    src = write_text(tmp_path)
    out = tmp_path / f"out.{fmt}"
    code, err = run(capsys, src, "-o", out, "--chunk-size", chunk, "--output-dtype", dtype, "--normalize")
    assert code == 0, err
    assert f"wrote {len(TEXTS)} x {tiny_encoder.dim} vectors" in err
    want = tiny_encoder.encode(TEXTS, normalize=True, use_embedding_cache=False)
    got = read_vectors(out)
    assert got.shape == want.shape
    if dtype == "float32":
        np.testing.assert_allclose(got, want, atol=1e-5)
    else:
        np.testing.assert_allclose(got, want.astype(np.float16).astype(np.float32), atol=2e-3)
        if fmt == "npy":
            assert np.load(out).dtype == np.float16
        if fmt == "parquet":
            assert pq.read_schema(out).field("embedding").type == pa.list_(pa.float16(), tiny_encoder.dim)
    assert max(enc.calls) <= chunk and sum(enc.calls) == len(TEXTS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", out.name]  # no partial files left
    if fmt == "jsonl":
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert [r["text"] for r in rows] == TEXTS and [r["index"] for r in rows] == list(range(len(TEXTS)))
    if fmt == "parquet":
        table = pq.read_table(out)
        assert table.column_names == ["text", "embedding"] and table.column("text").to_pylist() == TEXTS
        meta = json.loads(pq.read_schema(out).metadata[b"prompteol"])
        assert meta["fingerprint"] == tiny_encoder.fingerprint and meta["output_dtype"] == dtype


def _records(n=20):
    return [{"id": i, "score": i / 2 if i % 3 else i, "text": f"row {i} says {'hello ' * (i % 4)}",
             "tags": ["a"] * (i % 3), **({"extra": "only some"} if i % 5 == 0 else {})} for i in range(n)]  # fmt: skip


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_jsonl_input_keeps_fields_and_text_column(tmp_path, capsys, enc, tiny_encoder, fmt):
    recs = [{**{k: v for k, v in r.items() if k != "text"}, "sentence": r["text"]} for r in _records()]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in recs[:9]) + "\n\n" + "\n".join(json.dumps(r) for r in recs[9:]))
    out = tmp_path / f"out.{fmt}"
    code, err = run(capsys, src, "-o", out, "--chunk-size", 6, "--text-column", "sentence")
    assert code == 0, err
    want = tiny_encoder.encode([r["sentence"] for r in recs], use_embedding_cache=False)
    np.testing.assert_allclose(read_vectors(out), want, atol=1e-5)
    if fmt == "jsonl":
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert [{k: v for k, v in r.items() if k not in ("embedding", "index")} for r in rows] == recs
        assert [r["index"] for r in rows] == list(range(len(recs)))
    else:
        table = pq.read_table(out)
        assert table.column_names == ["id", "score", "tags", "extra", "sentence", "embedding"]
        assert table.column("score").type == pa.float64()  # ints and floats promote over the whole file
        assert table.column("extra").to_pylist()[:6] == ["only some", None, None, None, None, "only some"]
        assert table.column("sentence").to_pylist() == [r["sentence"] for r in recs]


@pytest.mark.parametrize("fmt", ["npy", "jsonl", "parquet"])
def test_parquet_input_keeps_columns(tmp_path, capsys, enc, tiny_encoder, fmt):
    recs = _records(30)
    src = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist(recs), src, row_group_size=4)  # row groups smaller than a chunk
    out = tmp_path / f"out.{fmt}"
    code, err = run(capsys, src, "-o", out, "--chunk-size", 9, "--output-dtype", "float16")
    assert code == 0, err
    want = tiny_encoder.encode([r["text"] for r in recs], use_embedding_cache=False)
    np.testing.assert_allclose(read_vectors(out), want.astype(np.float16).astype(np.float32), atol=2e-3)
    assert enc.calls == [9, 9, 9, 3]
    if fmt == "parquet":
        table = pq.read_table(out)
        assert table.drop_columns(["embedding"]).to_pylist() == pa.Table.from_pylist(recs).to_pylist()
    if fmt == "jsonl":
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert rows[5]["tags"] == ["a", "a"] and rows[5]["id"] == 5 and rows[5]["index"] == 5


def test_empty_inputs(tmp_path, capsys, enc, tiny_encoder):
    (tmp_path / "e.txt").write_text("")
    (tmp_path / "e.jsonl").write_text("\n\n")
    for src, fmt in (("e.txt", "npy"), ("e.txt", "parquet"), ("e.jsonl", "jsonl"), ("e.jsonl", "parquet")):
        out = tmp_path / f"o-{src}.{fmt}"
        assert run(capsys, tmp_path / src, "-o", out)[0] == 0
        assert read_vectors(out).shape[0] == 0
    assert np.load(tmp_path / "o-e.txt.npy").shape == (0, tiny_encoder.dim)
    assert pq.read_schema(tmp_path / "o-e.jsonl.parquet").names == ["text", "embedding"]


def test_stdin_is_spooled_and_streamed(tmp_path, capsys, enc, tiny_encoder, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("".join(t + "\n" for t in TEXTS)))
    out = tmp_path / "o.npy"
    assert run(capsys, "-", "-o", out, "--chunk-size", 10)[0] == 0
    np.testing.assert_allclose(np.load(out), tiny_encoder.encode(TEXTS, use_embedding_cache=False), atol=1e-5)
    assert enc.calls == [10, 10, 5]


# ---------------------------------------------------------------------------------------------- resume
class Stop(KeyboardInterrupt):
    pass


def _stop_after(monkeypatch, n: int) -> None:
    def hook(chunks_done: int) -> None:
        if chunks_done >= n:
            raise Stop

    monkeypatch.setattr(local, "_chunk_committed", hook)


@pytest.mark.parametrize("rerun_chunk", [4, 5])
@pytest.mark.parametrize("fmt", ["npy", "jsonl", "parquet"])
def test_interrupted_run_resumes_to_the_same_file(tmp_path, capsys, enc, monkeypatch, fmt, rerun_chunk):
    src = write_text(tmp_path)
    whole = tmp_path / f"whole.{fmt}"
    assert run(capsys, src, "-o", whole, "--chunk-size", 4)[0] == 0
    out = tmp_path / f"out.{fmt}"
    partial, record = resume.partial_paths(out)
    _stop_after(monkeypatch, 3)
    code, err = run(capsys, src, "-o", out, "--chunk-size", 4)
    assert code == 130 and "12 of 25 rows are kept" in err
    assert not out.exists() and partial.exists() and json.loads(record.read_text())["rows_done"] == 12
    # a kill between writing a chunk and recording it leaves more on disk than the record says
    if fmt == "parquet":
        (partial / "part-000003.parquet").write_bytes(b"half a part")
    else:
        with open(partial, "ab") as f:
            f.write(b"\x00garbage of an unrecorded chunk" * 10)
    monkeypatch.setattr(local, "_chunk_committed", lambda n: None)
    enc.calls.clear()
    code, err = run(capsys, src, "-o", out, "--chunk-size", rerun_chunk)  # another chunk size continues too
    assert code == 0, err
    assert "resuming" in err and "12 of 25 rows were done" in err
    assert enc.calls == ([4, 4, 4, 1] if rerun_chunk == 4 else [5, 5, 3])  # only the rows not yet done
    assert not partial.exists() and not record.exists()
    if rerun_chunk != 4:  # other batches: the same vectors up to float rounding
        np.testing.assert_allclose(read_vectors(out), read_vectors(whole), atol=1e-5)
    elif fmt == "parquet":
        assert pq.read_table(out).equals(pq.read_table(whole))
    else:
        assert out.read_bytes() == whole.read_bytes()


def test_anything_else_starts_over_and_says_why(tmp_path, capsys, enc, monkeypatch):
    src = write_text(tmp_path)
    out = tmp_path / "out.npy"
    _, record = resume.partial_paths(out)
    for change, words in ((["--normalize"], "normalize changed"), (["--output-dtype", "float16"], "dtype changed"),
                          (["--layer", "1"], "fingerprint changed"), (["--no-resume"], "--no-resume")):  # fmt: skip
        _stop_after(monkeypatch, 1)
        assert run(capsys, src, "-o", out, "--chunk-size", 10)[0] == 130
        monkeypatch.setattr(local, "_chunk_committed", lambda n: None)
        if change == ["--layer", "1"]:  # another encoder: its fingerprint differs
            monkeypatch.setattr("prompteol.cli.encode_cmd.build_encoder", lambda a, **k: enc.inner.derive(layer=1))
        code, err = run(capsys, src, "-o", out, "--chunk-size", 10, *change)
        assert code == 0 and "starting over" in err and words in err and "resuming" not in err, err
        monkeypatch.setattr("prompteol.cli.encode_cmd.build_encoder", lambda a, **k: enc)
        assert not record.exists()
    # a changed input (same size: only the content differs) starts over too
    _stop_after(monkeypatch, 1)
    assert run(capsys, src, "-o", out, "--chunk-size", 10)[0] == 130
    src.write_text(src.read_text().replace("sentence", "Sentence"))
    monkeypatch.setattr(local, "_chunk_committed", lambda n: None)
    code, err = run(capsys, src, "-o", out, "--chunk-size", 10)
    assert code == 0 and "starting over" in err and "input." in err
    assert np.load(out).shape == (len(TEXTS), enc.dim)


def test_stdin_resumes_when_it_is_the_same_stream(tmp_path, capsys, enc, monkeypatch):
    text = "".join(t + "\n" for t in TEXTS)
    out = tmp_path / "o.jsonl"
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    _stop_after(monkeypatch, 1)
    assert run(capsys, "-", "-o", out, "--chunk-size", 10)[0] == 130
    monkeypatch.setattr(local, "_chunk_committed", lambda n: None)
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    code, err = run(capsys, "-", "-o", out, "--chunk-size", 10)
    assert code == 0 and "10 of 25 rows were done" in err
    assert [json.loads(line)["text"] for line in out.read_text().splitlines()] == TEXTS


@pytest.mark.slow  # two cold starts of the executable; the in-process interruptions above cover the logic
def test_sigkill_leaves_no_final_file_and_a_rerun_finishes(tmp_path, test_cache_dir, tiny_encoder):
    """The real executable, killed by SIGKILL after its second chunk (no handler runs), then rerun."""
    src = write_text(tmp_path)
    out = tmp_path / "out.npy"
    cmd = [sys.executable, "-m", "prompteol.cli.main", "--threads", "1", "--cache-dir", str(test_cache_dir),
           "encode", "--model", MODEL, "--no-cache", "--no-progress", str(src), "-o", str(out), "--chunk-size", "8"]  # fmt: skip
    env = {**os.environ, "PROMPTEOL_TEST_KILL_AFTER_CHUNKS": "2"}
    killed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    assert not out.exists() and json.loads(resume.partial_paths(out)[1].read_text())["rows_done"] == 16
    env.pop("PROMPTEOL_TEST_KILL_AFTER_CHUNKS")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "16 of 25 rows were done" in done.stderr, done.stderr
    np.testing.assert_allclose(np.load(out), tiny_encoder.encode(TEXTS, use_embedding_cache=False), atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", "out.npy"]


# ---------------------------------------------------------------------------------------------- bad input
@pytest.fixture
def no_model(monkeypatch, test_cache_dir):
    monkeypatch.setenv("PROMPTEOL_CACHE", str(test_cache_dir))

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr("prompteol.cli.encode_cmd.build_encoder", refuse)


def _bad_parquet(path: Path) -> None:
    table = pa.table({"text": ["ok"] * 13 + [None] + ["ok"] * 3})
    pq.write_table(table, path, write_statistics=False)  # no null counts: only reading every row finds it


BAD_INPUTS = [
    # name, file, content, extra args, words
    ("JSONL bad line late", "in.jsonl", "".join('{"text": "ok"}\n' for _ in range(50)) + "{oops\n", [],
     "in.jsonl line 51: not valid JSON"),
    ("JSONL no text field", "in.jsonl", '{"text": "a"}\n\n{"sentence": "b"}\n', [],
     "in.jsonl line 3: expected an object with a string 'text' field"),
    ("JSONL text column", "in.jsonl", '{"sentence": "a"}\n{"text": "b"}\n', ["--text-column", "sentence"],
     "in.jsonl line 2: expected an object with a string 'sentence' field"),
    ("JSONL surrogate late", "in.jsonl", '{"text": "ok"}\n' * 30 + '{"text": "x", "id": "\\udc80"}\n', [],
     "line 31: the field 'id' contains a lone surrogate (U+DC80)"),
    ("text not UTF-8 late", "in.txt", b"fine\n" * 40 + b"bad \xff\n", [], "cannot read input"),
    ("Parquet null without statistics", "in.parquet", _bad_parquet, [],
     "in.parquet row 13: column 'text' is null"),
    ("Parquet missing column", "in.parquet", lambda p: pq.write_table(pa.table({"t": ["a"]}), p), [],
     "no column 'text'"),
    ("text column on text", "in.txt", "a\n", ["--text-column", "x"], "applies to JSONL and Parquet input"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "file", "content", "extra", "words"), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_fails_before_the_model_with_the_line(tmp_path, capsys, no_model, name, file, content, extra,
                                                        words):  # fmt: skip
    src = tmp_path / file
    if callable(content):
        content(src)
    elif isinstance(content, bytes):
        src.write_bytes(content)
    else:
        src.write_text(content)
    code, err = run(capsys, src, "-o", tmp_path / "out.npy", "--chunk-size", 4, *extra)
    assert code == 2 and words in err, err
    assert [p.name for p in tmp_path.iterdir()] == [file]


def _colliding_input(path: Path, field: str) -> None:
    if path.suffix == ".parquet":
        pq.write_table(pa.table({"text": ["a", "b"], field: [1, 2]}), path)
    else:
        path.write_text('{"text": "a"}\n' + json.dumps({"text": "b", field: 1}) + "\n")


@pytest.mark.parametrize(("field", "out"), [("embedding", "out.parquet"), ("embedding", "out.jsonl"),
                                            ("index", "out.jsonl")])  # fmt: skip
@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_an_input_field_the_output_writes_is_refused_the_same_way_in_every_format(tmp_path, capsys, no_model,
                                                                                  suffix, field, out):  # fmt: skip
    """An input field named like an output field (.jsonl writes index and embedding, .parquet embedding)
    is refused before the model, with the same message whatever the input format (issue 24, case 5)."""
    src = tmp_path / f"in{suffix}"
    _colliding_input(src, field)
    code, err = run(capsys, src, "-o", tmp_path / out)
    assert code == 2 and f"has a field '{field}', which the output writes itself" in err, err
    assert "rename or drop it in the input first" in err
    assert [p.name for p in tmp_path.iterdir()] == [src.name]


def test_npy_output_keeps_no_fields_so_nothing_collides(tmp_path, capsys, enc):
    src = tmp_path / "in.jsonl"
    _colliding_input(src, "embedding")
    code, err = run(capsys, src, "-o", tmp_path / "out.npy")
    assert code == 0, err


def test_stdin_surrogate_late_names_the_line(tmp_path, capsys, no_model, monkeypatch):
    stdin = io.TextIOWrapper(io.BytesIO(b"fine\n" * 20 + b"bad \xff byte\n"), encoding="utf-8",
                             errors="surrogateescape")  # fmt: skip
    monkeypatch.setattr(sys, "stdin", stdin)
    code, err = run(capsys, "-", "-o", tmp_path / "out.npy", "--chunk-size", 3)
    assert code == 2 and "- line 21: the text contains a lone surrogate (U+DCFF) at character 4" in err


def test_too_long_text_in_a_later_chunk_names_its_line_and_keeps_progress(tmp_path, capsys, enc):
    texts = [f"short {i}" for i in range(14)] + ["y" * 5000] + ["after"]
    src = write_text(tmp_path, texts)
    out = tmp_path / "out.npy"
    code, err = run(capsys, src, "-o", out, "--chunk-size", 10)
    assert code == 2
    line = next(line for line in err.splitlines() if line.startswith("error: "))
    assert "in.txt line 15: texts[14] ('yyyy" in line and "2048 positions" in line
    assert "10 of 16 rows are kept" in err and not out.exists()


def test_ray_only_and_local_only_flags(tmp_path, capsys, no_model):
    src = write_text(tmp_path)
    code, err = run(capsys, src, "-o", tmp_path / "o.npy", "--num-actors", "2")
    assert code == 2 and "--num-actors only work with --engine ray" in err
    code, err = run(capsys, src, "-o", tmp_path / "o", "--engine", "ray", "--chunk-size", "5")
    assert code == 2 and "--chunk-size only work with the local engine" in err


# ---------------------------------------------------------------------------------------------- memory
def test_no_encode_call_gets_more_than_a_chunk(tmp_path, capsys, enc):
    texts = [f"line {i}" for i in range(103)]
    src = write_text(tmp_path, texts)
    assert run(capsys, src, "-o", tmp_path / "o.parquet", "--chunk-size", 16)[0] == 0
    assert enc.calls == [16] * 6 + [7]


def test_validation_and_reading_hold_one_chunk(tmp_path):
    """20,000 lines (1.2 MB; ~6 MB as parsed records): checking them and reading them chunk by chunk
    allocates about one chunk at a time."""
    src = tmp_path / "big.jsonl"
    with open(src, "w") as f:
        for i in range(20_000):
            f.write(json.dumps({"id": i, "text": f"sentence number {i} about topic {i % 97}"}) + "\n")
    warm = tmp_path / "warm.jsonl"  # the first call imports pyarrow & co: not what is measured
    warm.write_text('{"id": 1, "text": "a"}\n')
    list(open_source(str(warm), None, "parquet", chunk_size=500).chunks(500))
    tracemalloc.start()
    try:
        source = open_source(str(src), None, "parquet", chunk_size=500)
        _, validate_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        rows = 0
        for chunk in source.chunks(500):
            assert len(chunk) <= 500
            rows += len(chunk)
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert source.rows == rows == 20_000
    assert validate_peak < 2 << 20 and read_peak < 2 << 20, (validate_peak, read_peak)


def test_open_source_errors_name_the_input(tmp_path):
    with pytest.raises(InputError, match="cannot read input .*no such file"):
        open_source(str(tmp_path / "missing.txt"))
    with pytest.raises(InputError, match="is a directory"):
        open_source(str(tmp_path))


def test_a_second_run_on_the_same_output_is_refused(tmp_path, capsys, enc):
    src = write_text(tmp_path)
    out = tmp_path / "out.npy"
    with resume.output_lock(out):  # another run holds it
        code, err = run(capsys, src, "-o", out, "--chunk-size", 10)
    assert code == 2 and "another `prompteol encode` is writing out.npy" in err
    assert not resume.partial_paths(out)[0].exists()  # it wrote nothing
    assert run(capsys, src, "-o", out, "--chunk-size", 10)[0] == 0  # once released, a run goes through
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", "out.npy"]


def test_a_failure_before_the_first_chunk_leaves_nothing(tmp_path, capsys, enc):
    src = write_text(tmp_path, ["y" * 5000] + [f"short {i}" for i in range(12)])
    code, err = run(capsys, src, "-o", tmp_path / "out.jsonl", "--chunk-size", 5)
    assert code == 2 and "in.txt line 1: texts[0]" in err and "rows are kept" not in err
    assert [p.name for p in tmp_path.iterdir()] == ["in.txt"]
