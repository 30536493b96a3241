"""Ray engine (``prompteol encode --engine ray``, :mod:`prompteol.corpus.distributed`, :mod:`prompteol.corpus.formats`).

One local Ray session (2 CPUs) is shared by the module; every run uses two actors of
``tiny-random-llama`` at one torch thread. Starting Ray and the actors costs ~10-20 s here,
so only one end-to-end run (the CLI: Parquet + JSONL, row-range shards, equality with local
encode) always runs; the resume, float16 and ``embed_dataset`` runs are marked ``slow``. The
bad-input tests fail before Ray or any model starts, so they are fast.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import require
from faults import refuse_model_loads

ray = require("ray")
pa = require("pyarrow")
pq = require("pyarrow.parquet")

from prompteol.cli.main import main  # noqa: E402
from prompteol.corpus.distributed import embed_dataset, encode_files  # noqa: E402
from prompteol.corpus.formats import list_input_files, validate_inputs  # noqa: E402
from prompteol.corpus.resume import MANIFEST  # noqa: E402
from prompteol.corpus.shards import plan_shards  # noqa: E402
from prompteol.corpus.tables import read_table, read_texts  # noqa: E402
from prompteol.encoder.config import EncoderConfig  # noqa: E402
from prompteol.errors import ConfigError, InputError  # noqa: E402

MODEL = "tiny-random-llama"
SENTENCES = [f"Sentence {i}: " + "a man plays the guitar " * (i % 7) + "." for i in range(90)]


@pytest.fixture(scope="module")
def ray_session():
    started = not ray.is_initialized()
    if started:
        import logging

        ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    yield
    if started:
        ray.shutdown()


def _write_corpus(folder: Path) -> list[str]:
    """a.parquet: 50 rows in row groups of 16 (id, text, lang); b.jsonl: 40 rows with a blank line,
    a nested field and a field mixing ints and floats. Returns the sentences in output order."""
    folder.mkdir(parents=True, exist_ok=True)
    a = pa.table({"id": list(range(50)), "text": SENTENCES[:50], "lang": ["en"] * 50})
    pq.write_table(a, folder / "a.parquet", row_group_size=16)
    with open(folder / "b.jsonl", "w", encoding="utf-8") as f:
        for i, s in enumerate(SENTENCES[50:], start=50):
            f.write(json.dumps({"text": s, "meta": {"k": i}, "score": i if i % 2 else i + 0.5}) + "\n")
            if i == 60:
                f.write("\n")
    return SENTENCES


def _embeddings(table) -> np.ndarray:
    col = table.column("embedding").combine_chunks()
    return col.values.to_numpy(zero_copy_only=False).reshape(len(col), -1)


@pytest.fixture(scope="module")
def first_run(ray_session, tmp_path_factory, test_cache_dir):
    """The CLI on a corpus, with row-range shards: (input folder, output folder, summary lines)."""
    root = tmp_path_factory.mktemp("ray")
    _write_corpus(root / "in")
    out = root / "out"
    mp = pytest.MonkeyPatch()
    mp.setenv("PROMPTEOL_CACHE", str(test_cache_dir))  # main() sets it from --cache-dir; restored after
    try:
        rc = main(["--cache-dir", str(test_cache_dir), "encode", "--engine", "ray", str(root / "in"), "-o", str(out),
                   "-m", MODEL, "--num-actors", "2", "--cpus-per-actor", "1", "--ray-batch-rows", "8",
                   "--shard-rows", "20", "--no-progress"])  # fmt: skip
    finally:
        mp.undo()
    assert rc == 0
    return root / "in", out


def test_ray_cli_equals_local_encode(first_run, tiny_encoder, capsys):
    inp, out = first_run
    names = sorted(p.name for p in out.glob("part-*.parquet"))
    assert names == ["part-00000-00000.parquet", "part-00000-00001.parquet", "part-00000-00002.parquet",
                     "part-00001-00000.parquet", "part-00001-00001.parquet"]  # fmt: skip
    assert not list(out.glob(".*tmp*"))
    tables = [pq.read_table(out / n) for n in names]
    a = pa.concat_tables(tables[:3])
    b = pa.concat_tables(tables[3:])
    assert a.column_names == ["id", "text", "lang", "embedding"]
    assert b.column_names == ["text", "meta", "score", "embedding"]
    assert a.column("id").to_pylist() == list(range(50)) and set(a.column("lang").to_pylist()) == {"en"}
    assert b.column("meta").to_pylist()[:2] == [{"k": 50}, {"k": 51}]
    assert b.column("score").type == pa.float64() and b.column("score").to_pylist()[:2] == [50.5, 51.0]
    assert a.schema.field("embedding").type == pa.list_(pa.float32(), tiny_encoder.dim)
    texts = a.column("text").to_pylist() + b.column("text").to_pylist()
    assert texts == SENTENCES  # every row once, in input order
    got = np.concatenate([_embeddings(a), _embeddings(b)])
    ref = tiny_encoder.encode(SENTENCES, use_embedding_cache=False)
    assert np.abs(got - ref).max() < 1e-6
    meta = json.loads(a.schema.metadata[b"prompteol"])
    assert meta["config"]["model"] == MODEL and meta["source"].endswith("a.parquet")
    manifest = json.loads((out / MANIFEST).read_text())
    assert [s["name"] for s in manifest["shards"]] == names


def test_rerun_of_a_complete_output_does_nothing(first_run, tmp_path, capsys):
    inp, out = first_run
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    summary = encode_files(inp, copy, EncoderConfig(model=MODEL), num_actors=2, shard_rows=20)
    assert summary["shards_written"] == 0 and summary["shards_skipped"] == 5 and "ray_init_s" not in summary


def test_other_settings_in_the_same_output_are_refused(first_run, tmp_path):
    inp, out = first_run
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    with pytest.raises(InputError, match="other inputs or settings.*layer"):
        encode_files(inp, copy, EncoderConfig(model=MODEL, layer=1), shard_rows=20)
    with pytest.raises(InputError, match="shard_rows"):
        encode_files(inp, copy, EncoderConfig(model=MODEL), shard_rows=10)


@pytest.mark.slow
def test_interrupted_run_resumes_to_the_same_files(first_run, tmp_path, test_cache_dir):
    inp, out = first_run
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    # the state a killed run leaves: one shard never written, one half-written temporary file,
    # and (by hand) a damaged file under a final name
    (copy / "part-00000-00001.parquet").unlink()
    (copy / ".part-00000-00001.parquet.tmp-12345").write_bytes(b"PAR1 partial")
    (copy / "part-00001-00001.parquet").write_bytes(b"not parquet")
    summary = encode_files(inp, copy, EncoderConfig(model=MODEL), num_actors=2, batch_rows=8, shard_rows=20,
                           cache_dir=test_cache_dir)  # fmt: skip
    assert summary["shards_written"] == 2 and summary["shards_skipped"] == 3
    assert summary["temporary_files_removed"] == 1 and summary["rows"] == 40
    assert sum(a["rows"] for a in summary["actors"].values()) == 40
    assert sorted(p.name for p in copy.iterdir()) == sorted(p.name for p in out.iterdir())
    for p in out.glob("part-*.parquet"):
        before, after = pq.read_table(p), pq.read_table(copy / p.name)
        assert before.drop_columns(["embedding"]).equals(after.drop_columns(["embedding"]))
        assert np.abs(_embeddings(before) - _embeddings(after)).max() < 1e-6


@pytest.mark.parametrize("shard_rows", [None, 40])
def test_one_file_is_spread_over_every_actor(ray_session, tmp_path, tiny_encoder, test_cache_dir, shard_rows):
    """One input file (one shard without --shard-rows) is read in pieces, so every actor gets rows (a
    10,000-row file on 2 actors once went to one of them alone; docs/distributed.md)."""
    texts = [f"row {i}: " + "words " * (i % 5) for i in range(240)]
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"text": texts}), tmp_path / "in" / "one.parquet")
    summary = encode_files(tmp_path / "in" / "one.parquet", tmp_path / "out", EncoderConfig(model=MODEL),
                           num_actors=2, batch_rows=16, shard_rows=shard_rows, cache_dir=test_cache_dir)  # fmt: skip
    assert summary["shards"] == (1 if shard_rows is None else 6) and summary["rows"] == 240
    rows = [a["rows"] for a in summary["actors"].values()]
    assert len(rows) == 2 and min(rows) > 0, summary["actors"]
    names = ["part-00000.parquet"] if shard_rows is None else [f"part-00000-{i:05d}.parquet" for i in range(6)]
    out = pa.concat_tables([pq.read_table(tmp_path / "out" / name) for name in names])
    assert out.column("text").to_pylist() == texts  # input order kept
    ref = tiny_encoder.encode(texts, use_embedding_cache=False)
    assert np.abs(_embeddings(out) - ref).max() < 1e-5


@pytest.mark.slow
def test_float16_output_one_file_per_input(ray_session, tmp_path, tiny_encoder, test_cache_dir):
    _write_corpus(tmp_path / "in")
    summary = encode_files(str(tmp_path / "in" / "*.*"), tmp_path / "out", EncoderConfig(model=MODEL),
                           num_actors=2, output_dtype="float16", normalize=True, cache_dir=test_cache_dir)  # fmt: skip
    assert summary["shards_written"] == 2 and summary["rows"] == 90
    table = pq.read_table(tmp_path / "out" / "part-00000.parquet")
    assert table.schema.field("embedding").type == pa.list_(pa.float16(), tiny_encoder.dim)
    ref = tiny_encoder.encode(SENTENCES[:50], normalize=True, use_embedding_cache=False)
    assert np.abs(_embeddings(table).astype(np.float32) - ref).max() < 1e-3


@pytest.mark.slow
def test_embed_dataset_api(ray_session, tiny_encoder, test_cache_dir):
    ds = ray.data.from_items([{"text": s, "n": i} for i, s in enumerate(SENTENCES[:40])])
    config = EncoderConfig(model=MODEL, pooling="mean")
    out = embed_dataset(ds, config.to_dict(), num_actors=2, batch_rows=8, cache_dir=str(test_cache_dir))
    rows = sorted(out.take_all(), key=lambda r: r["n"])
    got = np.stack([np.asarray(r["embedding"], dtype=np.float32) for r in rows])
    ref = tiny_encoder.derive(pooling="mean").encode(SENTENCES[:40], use_embedding_cache=False)
    assert [r["text"] for r in rows] == SENTENCES[:40]
    assert np.abs(got - ref).max() < 1e-6


# ------------------------------------------------------------------ bad input: fails before Ray or a model starts
@pytest.fixture
def no_ray_start(monkeypatch):
    """Any attempt to start Ray or load a model fails the test."""
    refuse_model_loads(monkeypatch, "started Ray or loaded a model before validating the input",
                       "prompteol.corpus.distributed.start_ray")


def _cli(*argv: str) -> int:
    return main(["encode", "--engine", "ray", *argv, "-m", MODEL])


def test_missing_column_names_the_file_and_column(tmp_path, no_ray_start, capsys):
    pq.write_table(pa.table({"text": ["a"]}), tmp_path / "good.parquet")
    pq.write_table(pa.table({"sentence": ["a", "b"]}), tmp_path / "other.parquet")
    assert _cli(str(tmp_path), "-o", str(tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert "other.parquet" in err and "no column 'text'" in err and "sentence" in err
    assert not (tmp_path / "out").exists()


def test_non_string_parquet_column(tmp_path, no_ray_start):
    pq.write_table(pa.table({"text": [1, 2]}), tmp_path / "ints.parquet")
    with pytest.raises(InputError, match=r"ints\.parquet: column 'text' has type int64"):
        encode_files(tmp_path, tmp_path / "out", EncoderConfig(model=MODEL))


def test_parquet_nulls_from_statistics(tmp_path, no_ray_start):
    pq.write_table(pa.table({"text": ["a", None]}), tmp_path / "nulls.parquet")
    with pytest.raises(InputError, match=r"nulls\.parquet: column 'text' has 1 null"):
        encode_files(tmp_path, tmp_path / "out", EncoderConfig(model=MODEL))


def test_parquet_nulls_without_statistics_fail_while_reading(tmp_path):
    path = tmp_path / "nostats.parquet"
    pq.write_table(pa.table({"text": ["a", "b", None]}), path, write_statistics=False)
    validate_inputs([path])  # not visible up front
    with pytest.raises(InputError, match=r"nostats\.parquet row 2: column 'text' is null"):
        read_texts(path)


def test_jsonl_bad_values(tmp_path, no_ray_start):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n\n{"text": 3}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"bad\.jsonl line 3: expected an object .*: field 'text' is a number"):
        encode_files(bad, tmp_path / "out", EncoderConfig(model=MODEL))
    bad.write_text('{"text": "ok"}\n{"txt": "x"}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"bad\.jsonl line 2: expected an object .*: no field 'text'"):
        encode_files(bad, tmp_path / "out", EncoderConfig(model=MODEL))
    bad.write_text('{"text": "ok"}\n{"text": \n', encoding="utf-8")
    with pytest.raises(InputError, match=r"bad\.jsonl line 2: not valid JSON"):
        encode_files(bad, tmp_path / "out", EncoderConfig(model=MODEL))
    bad.write_text('{"text": "ok \\u00e9"}\n{"text": "x", "note": "\\ud800"}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"bad\.jsonl line 2: the field 'note' contains a lone surrogate"):
        encode_files(bad, tmp_path / "out", EncoderConfig(model=MODEL))


def test_jsonl_past_the_head_fails_while_reading(tmp_path):
    path = tmp_path / "long.jsonl"
    path.write_text("".join(json.dumps({"text": f"s{i}" if i != 150 else None}) + "\n" for i in range(200)))
    (info,) = validate_inputs([path])  # the first 100 rows are checked up front
    assert info.num_rows == 200
    with pytest.raises(InputError, match=r"long\.jsonl line 151: .*field 'text' is null"):
        read_texts(info)


def test_unreadable_files_and_inputs(tmp_path, no_ray_start):
    (tmp_path / "broken.parquet").write_bytes(b"not a parquet file")
    with pytest.raises(InputError, match=r"broken\.parquet: cannot read it as Parquet"):
        encode_files(tmp_path / "broken.parquet", tmp_path / "out", EncoderConfig(model=MODEL))
    with pytest.raises(InputError, match="does not exist"):
        encode_files(tmp_path / "missing.parquet", tmp_path / "out", EncoderConfig(model=MODEL))
    (tmp_path / "x.csv").write_text("text\na\n")
    with pytest.raises(InputError, match=r"x\.csv: unsupported input format"):
        encode_files(tmp_path / "x.csv", tmp_path / "out", EncoderConfig(model=MODEL))
    with pytest.raises(InputError, match="no .* files match"):
        encode_files(str(tmp_path / "*.jsonl"), tmp_path / "out", EncoderConfig(model=MODEL))


def test_reserved_output_column_and_output_checks(tmp_path, no_ray_start, capsys):
    pq.write_table(pa.table({"text": ["a"], "embedding": [[1.0]]}), tmp_path / "e.parquet")
    with pytest.raises(InputError, match=r"e\.parquet: has a field 'embedding', which the output writes itself"):
        encode_files(tmp_path / "e.parquet", tmp_path / "out", EncoderConfig(model=MODEL))
    good = tmp_path / "in" / "g.jsonl"
    good.parent.mkdir()
    good.write_text('{"text": "a"}\n')
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="is a file"):
        encode_files(good, tmp_path / "file", EncoderConfig(model=MODEL))
    (tmp_path / "stale").mkdir()
    (tmp_path / "stale" / "part-00000.parquet").write_bytes(b"")
    with pytest.raises(InputError, match="no _prompteol_manifest.json"):
        encode_files(good, tmp_path / "stale", EncoderConfig(model=MODEL))
    with pytest.raises(ConfigError, match="--device cuda"):
        encode_files(good, tmp_path / "o2", EncoderConfig(model=MODEL), gpus_per_actor=0.5)
    assert _cli(str(good), "-o", str(tmp_path / "o.npy")) == 2
    assert main(["encode", str(good), "-o", str(tmp_path / "o.npy"), "--num-actors", "2", "-m", MODEL]) == 2
    assert "--num-actors only work with --engine ray" in capsys.readouterr().err


# ------------------------------------------------------------------ tables and shards (no Ray)
def test_listing_and_shards(tmp_path):
    _write_corpus(tmp_path)
    (tmp_path / "_SUCCESS").write_text("")
    (tmp_path / ".hidden.parquet").write_bytes(b"")
    files = list_input_files(tmp_path)
    assert [Path(f).name for f in files] == ["a.parquet", "b.jsonl"]
    assert list_input_files(str(tmp_path / "*.jsonl")) == files[1:]
    infos = validate_inputs(files)
    assert [i.num_rows for i in infos] == [50, 40]
    shards = plan_shards(infos, shard_rows=15)
    assert [(s.name, s.start, s.stop) for s in shards][-3:] == [
        ("part-00001-00000.parquet", 0, 15), ("part-00001-00001.parquet", 15, 30), ("part-00001-00002.parquet", 30, 40)]  # fmt: skip
    # JSONL row ranges seek to their byte offset; together they read every row once
    texts = []
    for s in shards:
        offset = (s.offset_pos, s.offset_line) if s.offset_pos >= 0 else None
        from prompteol.corpus.tables import iter_tables

        texts += [t for tab in iter_tables(s.path, "text", s.start, s.stop, 4, offset) for t in tab["text"].to_pylist()]
    assert texts == SENTENCES
    assert read_table(files[1], start=5, stop=8).column("text").to_pylist() == SENTENCES[55:58]


@pytest.mark.parametrize("shard_rows", [None, 15])
def test_read_pieces_cover_every_row_once(tmp_path, shard_rows):
    """The read pieces (one read task each) cut shards at multiples of the piece size, JSONL ones
    seeking to their byte offset; together they read every row once, in order, each tagged with its shard."""
    from prompteol.corpus.shards import read_pieces
    from prompteol.corpus.tables import iter_tables

    _write_corpus(tmp_path)
    shards = plan_shards(validate_inputs(list_input_files(tmp_path)), shard_rows=shard_rows)
    pieces = read_pieces(shards, 4)
    assert all(p["stop"] - p["start"] <= 4 for p in pieces) and len(pieces) > len(shards)
    texts, rows_per_shard = [], {}
    for p in pieces:
        offset = (p["offset_pos"], p["offset_line"]) if p["offset_pos"] >= 0 else None
        got = [t for tab in iter_tables(p["path"], "text", p["start"], p["stop"], 3, offset) for t in tab["text"].to_pylist()]
        assert len(got) == p["stop"] - p["start"]
        texts += got
        rows_per_shard[p["index"]] = rows_per_shard.get(p["index"], 0) + len(got)
    assert texts == SENTENCES
    assert rows_per_shard == {s.index: s.num_rows for s in shards}


def test_jsonl_fields_of_mixed_types_are_kept_as_json(tmp_path):
    path = tmp_path / "m.jsonl"
    rows = [{"text": "a", "x": 1}, {"text": "b", "x": "one"}, {"text": "c"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = read_table(path)
    assert table.column("x").to_pylist() == ["1", '"one"', None]


def test_write_embeddings_parquet_is_atomic(tmp_path):
    from prompteol.corpus.sinks import write_embeddings_parquet

    table = pa.table({"text": ["a", "b"]})
    path = write_embeddings_parquet(tmp_path / "v.parquet", table, np.eye(2, 3, dtype=np.float32), "float16")
    back = pq.read_table(path)
    assert back.schema.field("embedding").type == pa.list_(pa.float16(), 3)
    with pytest.raises(InputError, match="3 vectors for a table of 2 rows"):
        write_embeddings_parquet(tmp_path / "w.parquet", table, np.zeros((3, 3)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.parquet"]


def test_a_second_run_on_the_same_output_is_refused(tmp_path, no_ray_start):
    import fcntl

    good = tmp_path / "g.jsonl"
    good.write_text('{"text": "a"}\n')
    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".prompteol.lock", "a") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(InputError, match="another run is writing"):
            encode_files(good, out, EncoderConfig(model=MODEL))


def test_an_actor_pool_larger_than_the_machine_is_refused(ray_session, tmp_path, monkeypatch):
    monkeypatch.setattr("prompteol.models.loading.resolve_model", lambda *a, **k: None)
    good = tmp_path / "g.jsonl"
    good.write_text('{"text": "a"}\n')
    with pytest.raises(ConfigError, match="needs 3 CPUs and 0 GPUs; Ray has 2 CPUs"):
        encode_files(good, tmp_path / "out", EncoderConfig(model=MODEL), num_actors=3)
