"""Fault injection with real files (the input policy and over-long texts, in the library, the CLI and the server): damaged inputs never give wrong results or tracebacks."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from faults import (
    FAULT_MODEL,
    SURROGATE_JSON,
    _assert_one_line_error,
    _assert_server_error,
    _encode_args,
)

# ================================================================================================
# input policy: lone surrogates and non-string inputs (library, CLI, server)
# ================================================================================================
#
# A lone UTF-16 surrogate ("a\ud800b") is valid JSON and a valid Python str, but not Unicode a
# tokenizer can encode: it is refused with the index (library), the line (CLI) or input[i]
# (server), never a TypeError from the tokenizer or a 500.



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
