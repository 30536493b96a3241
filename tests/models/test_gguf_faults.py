"""Fault injection with real files (damaged GGUF files: one-line errors naming the file, nothing half-converted left): damaged inputs never give wrong results or tracebacks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from faults import (
    _assert_one_line_error,
    _cli,
)

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
