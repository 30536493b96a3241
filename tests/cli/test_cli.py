"""The command line: fast help, encode formats, clear errors, nothing partial written."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest

from prompteol.cli.main import main


@pytest.fixture(autouse=True)
def _restore_cache_env(monkeypatch, test_cache_dir):
    """`--cache-dir` sets PROMPTEOL_CACHE in this process; undo it after each test."""
    monkeypatch.setenv("PROMPTEOL_CACHE", str(test_cache_dir))


def test_help_does_not_import_torch():
    code = "import sys; from prompteol.cli.main import build_parser; build_parser().format_help(); " \
           "print('torch' in sys.modules, 'transformers' in sys.modules)"  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "encode" in capsys.readouterr().out


def _encode(tmp_path, test_cache_dir, *args):
    return main(["--cache-dir", str(test_cache_dir), "encode", "--model", "tiny-random-llama", "--no-progress", *args])


def test_encode_text_to_npy(tmp_path, test_cache_dir, tiny_encoder):
    src = tmp_path / "in.txt"
    src.write_text("A man is playing a guitar.\nA dog runs.\n\nLast line\n", encoding="utf-8")
    out = tmp_path / "out.npy"
    assert _encode(tmp_path, test_cache_dir, str(src), "-o", str(out)) == 0
    vecs = np.load(out)
    assert vecs.shape == (4, tiny_encoder.dim) and vecs.dtype == np.float32
    expected = tiny_encoder.encode(["A man is playing a guitar.", "A dog runs.", "", "Last line"], use_embedding_cache=False)
    np.testing.assert_allclose(vecs, expected, atol=1e-5)


def test_encode_jsonl_to_jsonl_keeps_fields(tmp_path, test_cache_dir):
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": 7, "text": "hello"}\n{"id": 8, "text": "world"}\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert _encode(tmp_path, test_cache_dir, str(src), "-o", str(out), "--normalize") == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [7, 8] and [r["index"] for r in rows] == [0, 1]
    assert abs(np.linalg.norm(rows[0]["embedding"]) - 1) < 1e-5


def test_encode_stdin(tmp_path, test_cache_dir, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("one\ntwo\n"))
    out = tmp_path / "o.npy"
    assert _encode(tmp_path, test_cache_dir, "-", "-o", str(out)) == 0
    assert np.load(out).shape[0] == 2


def test_encode_empty_input_writes_empty_array(tmp_path, test_cache_dir, tiny_encoder):
    src = tmp_path / "empty.txt"
    src.write_text("")
    out = tmp_path / "o.npy"
    assert _encode(tmp_path, test_cache_dir, str(src), "-o", str(out)) == 0
    assert np.load(out).shape == (0, tiny_encoder.dim)


@pytest.mark.parametrize(
    "content, name, output, message",
    [
        (None, "missing.txt", "o.npy", "cannot read input"),
        ('{"text": 3}\n', "bad.jsonl", "o.npy", "line 1: expected an object with a string 'text'"),
        ('{"text": "ok"}\nnot json\n', "bad2.jsonl", "o.npy", "line 2: not valid JSON"),
        ("fine\n", "in.txt", "o.csv", "should end in one of"),
        (b"\xff\xfe\x00bad", "bin.txt", "o.npy", "cannot read input"),
    ],
)
def test_encode_errors_are_clear_and_write_nothing(tmp_path, test_cache_dir, capsys, content, name, output, message):
    src = tmp_path / name
    if isinstance(content, bytes):
        src.write_bytes(content)
    elif content is not None:
        src.write_text(content)
    out = tmp_path / output
    assert _encode(tmp_path, test_cache_dir, str(src), "-o", str(out)) == 2
    assert message in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".o.*"))


def test_unknown_model_lists_aliases(tmp_path, test_cache_dir, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    src = tmp_path / "in.txt"
    src.write_text("x\n")
    code = main(["--cache-dir", str(test_cache_dir), "encode", "--model", "nope-model", str(src), "-o", str(tmp_path / "o.npy")])
    assert code == 2
    err = capsys.readouterr().err
    assert "smollm2-135m" in err and "tiny-random-llama" in err
    assert not (tmp_path / "o.npy").exists()


def test_models_list_json(capsys, test_cache_dir):
    assert main(["--cache-dir", str(test_cache_dir), "models", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["alias"] for r in rows} >= {"smollm2-135m", "qwen2.5-coder-1.5b"}
    assert all(r["state"] in ("pulled", "not pulled", "partial download") for r in rows)


def test_models_pull_unknown_alias(capsys):
    assert main(["models", "pull", "gpt-17"]) == 2
    assert "valid aliases" in capsys.readouterr().err


def test_cache_commands(tmp_path, capsys):
    assert main(["--cache-dir", str(tmp_path), "cache", "path"]) == 0
    assert str(tmp_path) in capsys.readouterr().out
    assert main(["--cache-dir", str(tmp_path), "cache", "clear"]) == 0
    assert "deleted 0" in capsys.readouterr().out


def test_cache_exports_lists_and_removes_the_backends_graphs(tmp_path, capsys):
    """Two exports as the backends write them (a folder per key with model.onnx and identity.json, a lock beside it)
    and one left incomplete: listed with their sizes and graphs, removed by key or all, an unknown key refused."""
    base = ["--cache-dir", str(tmp_path), "cache", "exports"]
    assert main(base) == 0 and ": 0, 0 B" in capsys.readouterr().out  # no onnx folder yet
    for key, attention in (("aaaa", "grouped"), ("bbbb", None)):
        folder = tmp_path / "onnx" / key
        folder.mkdir(parents=True)
        (folder / "model.onnx").write_bytes(b"x" * 2048)
        ident = {"identity": {"weights": {"weights": f"sha256:{key}"}}, "layer": 30, "export": 1}
        (folder / "identity.json").write_text(json.dumps({**ident, **({"attention": attention} if attention else {})}))
        (tmp_path / "onnx" / f"{key}.lock").touch()
    (tmp_path / "onnx" / "cccc").mkdir()  # an export that never finished
    assert main([*base, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    rows = {r["key"]: r for r in doc["exports"]}
    assert set(rows) == {"aaaa", "bbbb", "cccc"} and rows["aaaa"]["attention"] == "grouped"
    assert rows["bbbb"]["attention"] == "expanded" and rows["bbbb"]["weights"] == "sha256:bbbb" and rows["bbbb"]["layer"] == 30
    assert rows["aaaa"]["bytes"] > 2048 and rows["cccc"]["complete"] is False and rows["cccc"]["attention"] is None
    assert main(base) == 0 and "incomplete" in capsys.readouterr().out
    assert main([*base, "--clear", "zzzz"]) == 2 and "no export zzzz" in capsys.readouterr().err
    assert main([*base, "--clear", "aaaa"]) == 0 and "removed 1 export" in capsys.readouterr().out
    assert not (tmp_path / "onnx" / "aaaa").exists() and not (tmp_path / "onnx" / "aaaa.lock").exists()
    assert (tmp_path / "onnx" / "bbbb").is_dir()
    assert main([*base, "--clear"]) == 0 and "removed 2 export" in capsys.readouterr().out
    assert not [p for p in (tmp_path / "onnx").iterdir() if p.is_dir()]
