"""Property-based fault suite (hypothesis): generated inputs and option values on every path.

1. **Texts.** Lists of generated texts (BOMs, lone surrogates, NUL and other control characters,
   carriage returns, combining marks, right-to-left text and overrides, zero-width characters,
   emoji, empty strings, lines past the model's context) go through the library, ``prompteol
   encode`` with each input (.txt, .jsonl, .parquet, stdin) and the server. Every path either
   returns the library's vectors of the same text after that path's documented normalisation
   (docs/reliability.md, "Input policy": a file's leading BOM and a line's final CR are not text),
   or refuses as the library does: an ``InputError`` in the library, one ``error:`` line and exit
   2 in the CLI, a 4xx in OpenAI's shape from the server. Never a traceback, never a 5xx.
2. **Options.** For every command, every option declared with a range (``positive_int`` and
   friends) and the encoder options with a format: a generated bad value is one ``error:`` line
   with exit 2, and no model is ever resolved or loaded.

Seeded and bounded: ``derandomize=True`` (the same examples on every run, no example database),
few examples each, the tiny random model at one torch thread; the whole file runs in well under
a minute on two cores.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import require
from faults import refuse_model_loads

hypothesis = require("hypothesis")
from hypothesis import HealthCheck, assume, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from prompteol.cli.main import build_parser, main  # noqa: E402
from prompteol.errors import InputError  # noqa: E402

MODEL = "tiny-random-llama"  # 2048 positions; a byte-level tokenizer: one token per UTF-8 byte
SEEDED = settings(derandomize=True, database=None, deadline=None, print_blob=True,
                  suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip

# ---------------------------------------------------------------------------------------------- texts
#: pieces of text that have broken one path or another somewhere: every kind the issue lists
PIECES = [
    "a", "man", "plays", " ", ".", "?", '"', "'", "\\", "{sentence}", "|",
    "e\u0301", "\u0301", "n\u0303\u0323",  # combining marks (one alone, stacked)
    "\u05e9\u05dc\u05d5\u05dd", "\u0645\u0631\u062d\u0628\u0627", "\u202e", "\u200f",  # RTL text, override, mark
    "\u200b", "\u200c", "\u200d", "\u2060", "\ufeff",  # zero-width characters and the BOM
    "\x00", "\x01", "\x07", "\x1b", "\x7f", "\x85", "\t", "\r", "\x0b", "\x0c", "\u2028", "\u2029",  # controls
    "😀", "👩\u200d💻", "文字",
]  # fmt: skip
#: what the library refuses: lone surrogates (valid JSON escapes, not Unicode) and lines past the context
REFUSED = ["\ud800", "a\udcffb", "\udfff", "y" * 2100]  # 2100 bytes + the template > 2048 positions

valid = st.one_of(
    st.lists(st.sampled_from(PIECES), max_size=6).map("".join),
    st.just(""),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n"), max_size=8),
)
text = valid | st.sampled_from(REFUSED) | st.tuples(valid, st.sampled_from(REFUSED)).map("".join)
#: half the lists hold only text the library takes, half may hold some it refuses
texts = st.lists(valid, min_size=1, max_size=4) | st.lists(text, min_size=1, max_size=4)


def library(encoder, items: list[str]):
    """``("ok", vectors)`` or ``("refused", the InputError)``: what the library does with ``items``."""
    try:
        return "ok", encoder.encode(items, use_embedding_cache=False)
    except InputError as exc:
        assert "\n" not in str(exc), str(exc)  # one line
        return "refused", exc


def as_lines(items: list[str]) -> list[str]:
    """What a text file (or stdin) of these lines holds: the file's leading BOM and each line's final
    CR (a Windows line ending) are not text."""
    out = [t[:-1] if t.endswith("\r") else t for t in items]
    if out and out[0].startswith("\ufeff"):
        out[0] = out[0][1:]
    return out


def _cli(capsys, *args) -> tuple[int, str]:
    capsys.readouterr()
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def _refused_in_one_line(code: int, err: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err, err
    assert len([line for line in err.splitlines() if line.startswith("error: ")]) == 1, err


@pytest.fixture(scope="module")
def encoder(tiny_encoder):
    return tiny_encoder


@pytest.fixture
def cli_encoder(monkeypatch, tiny_encoder, test_cache_dir):
    monkeypatch.setenv("PROMPTEOL_CACHE", str(test_cache_dir))
    monkeypatch.setattr("prompteol.cli.encode_cmd.build_encoder", lambda args, **kw: tiny_encoder)
    return tiny_encoder


def _write(folder: Path, fmt: str, items: list[str]) -> Path | None:
    """The items as an input file of ``fmt`` (``None`` when that format cannot hold them)."""
    path = folder / f"in.{fmt}"
    if fmt == "txt":
        body = ("\n".join(items) + "\n") if items else ""
        path.write_bytes(body.encode("utf-8", "surrogatepass"))  # a lone surrogate: bytes that are not UTF-8
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps({"text": t}) + "\n" for t in items), encoding="ascii")
    else:
        pa = require("pyarrow")
        pq = require("pyarrow.parquet")
        try:
            table = pa.table({"text": pa.array(items, pa.string())})
        except (pa.ArrowException, UnicodeError):
            return None  # Arrow cannot hold a lone surrogate: no such Parquet file exists
        pq.write_table(table, path)
    return path


@settings(SEEDED, max_examples=40)
@given(items=texts, fmt=st.sampled_from(["txt", "jsonl", "parquet", "stdin"]))
def test_every_input_format_gives_the_librarys_vectors_or_its_refusal(capsys, monkeypatch, cli_encoder, items, fmt):
    assume(all("\n" not in t for t in items))  # one sentence per line
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if fmt == "stdin":
            data = (("\n".join(items) + "\n") if items else "").encode("utf-8", "surrogatepass")
            monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8",
                                                               errors="surrogateescape"))  # fmt: skip
            src: Path | str = "-"
        else:
            written = _write(folder, fmt, items)
            assume(written is not None)
            src = written  # type: ignore[assignment]
        expected = library(cli_encoder, as_lines(items) if fmt in ("txt", "stdin") else items)
        event(f"{fmt}: {expected[0]}")
        out = folder / "out.npy"
        code, err = _cli(capsys, "encode", "-m", MODEL, "--no-progress", "--no-cache", src, "-o", out)
        if expected[0] == "ok":
            assert code == 0, err
            np.testing.assert_allclose(np.load(out), expected[1], atol=1e-5)
        else:
            _refused_in_one_line(code, err)
            assert not out.exists()


@settings(SEEDED, max_examples=40)
@given(items=texts, bom=st.booleans())
def test_a_file_bom_is_the_only_difference_from_the_library(capsys, cli_encoder, items, bom):
    """JSONL with and without a leading BOM: the same vectors as the library on the same strings."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.jsonl"
        body = "".join(json.dumps({"text": t}) + "\r\n" for t in items).encode("ascii")
        src.write_bytes((b"\xef\xbb\xbf" if bom else b"") + body)
        expected = library(cli_encoder, items)
        out = Path(tmp) / "out.jsonl"
        code, err = _cli(capsys, "encode", "-m", MODEL, "--no-progress", "--no-cache", src, "-o", out)
        if expected[0] == "ok":
            assert code == 0, err
            rows = [json.loads(line) for line in out.read_text(encoding="utf-8").split("\n") if line]
            assert [r["text"] for r in rows] == items and [r["index"] for r in rows] == list(range(len(items)))
            np.testing.assert_allclose(np.array([r["embedding"] for r in rows]), expected[1], atol=1e-5)
        else:
            _refused_in_one_line(code, err)


# ---------------------------------------------------------------------------------------------- the server
@pytest.fixture(scope="module")
def server(tiny_encoder):
    require("fastapi")
    from types import SimpleNamespace

    from prompteol.serve import ServeSettings, create_app, serve_in_thread

    settings = ServeSettings(model=MODEL, max_inputs=8, max_input_tokens=4096, max_wait_ms=1, max_batch_size=4)
    with serve_in_thread(create_app(settings, tiny_encoder)) as url:
        yield SimpleNamespace(url=url)


@settings(SEEDED, max_examples=40)
@given(items=st.lists(text | st.sampled_from(["a\nb", "\n"]), min_size=1, max_size=5), single=st.booleans())
def test_the_server_gives_the_librarys_vectors_or_a_4xx(server, encoder, items, single):
    httpx = require("httpx")
    payload = items[0] if single else items
    body = json.dumps({"model": MODEL, "input": payload}).encode("ascii")  # \u escapes, surrogates included
    r = httpx.post(server.url + "/v1/embeddings", content=body, headers={"Content-Type": "application/json"},
                   timeout=60)  # fmt: skip
    sent = [items[0]] if single else items
    expected = library(encoder, sent)
    event(f"server: {expected[0]}")
    assert r.status_code < 500, r.text
    if expected[0] == "ok":
        assert r.status_code == 200, r.text
        got = np.array([d["embedding"] for d in r.json()["data"]])
        unit = expected[1] / np.linalg.norm(expected[1], axis=1, keepdims=True)
        np.testing.assert_allclose(got, unit, atol=1e-5)
    else:
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["param"] == "input"
        assert "\n" not in error["message"]


# ---------------------------------------------------------------------------------------------- options
def _ranged_options() -> list[tuple[tuple[str, ...], str, object]]:
    """``(command path, flag, parser)`` of every option declared with a range, in every command."""
    out = []

    def walk(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    walk(child, (*path, name))
            elif getattr(action.type, "low", None) is not None and action.option_strings:
                out.append((path, action.option_strings[0], action.type))

    walk(build_parser(), ())
    return out


RANGED = _ranged_options()


def _below(parse) -> st.SearchStrategy[str]:
    """Text that ``parse`` (an ``at_least`` parser) must refuse: below its bound, not a number, not finite."""
    low, above, kind = parse.low, parse.above, parse.kind
    words = st.sampled_from(["x", "", "one", "1,5", "-", "0x10" if kind is int else "1e"])
    if low == float("-inf"):  # any number: only what is not one
        return words | st.sampled_from(["nan", "inf"] if kind is float else ["1.5", "1e3"])
    if kind is int:
        numbers = st.integers(max_value=int(low) - (0 if above else 1), min_value=-(10**6)).map(str)
        return numbers | st.sampled_from(["x", "1.5", "", "one", "0x10"])
    numbers = st.floats(max_value=low, min_value=-1e6, exclude_max=not above, allow_nan=False).map(repr)
    return numbers | st.sampled_from(["nan", "inf", "-inf", "x", ""])


@pytest.fixture
def no_model(monkeypatch):
    refuse_model_loads(monkeypatch, "a model was resolved or loaded before the options were checked")


def test_every_command_declares_its_counts_with_a_range():
    commands = {path[0] for path, _, _ in RANGED if path}
    assert {"encode", "eval", "serve", "train", "mteb", "data"} <= commands, commands
    assert ("encode",) in {p for p, f, _ in RANGED if f == "--batch-size"}
    assert all(f == "--threads" for p, f, _ in RANGED if p == ())


@settings(SEEDED, max_examples=80)
@given(data=st.data())
def test_a_bad_value_of_any_ranged_option_is_one_line_before_any_model(capsys, no_model, data):
    path, flag, parse = data.draw(st.sampled_from(RANGED), label="option")
    value = data.draw(_below(parse), label="value")
    code, err = _cli(capsys, *path, f"{flag}={value}")
    _refused_in_one_line(code, err)
    assert flag in err or flag.lstrip("-") in err, err


ENCODER_COMMANDS = {
    "encode": ["encode", "in.txt", "-o", "out.npy"], "eval": ["eval", "--tasks", "STS12"], "serve": ["serve"],
    "export": ["export", "sentence-transformers", "out-st"], "mteb": ["mteb", "--tasks", "STS12", "-o", "out"],
}  # fmt: skip
BAD_ENCODER_VALUES = {
    "--layer": st.sampled_from(["x", "1.5", "", "-"]),
    "--max-length": st.integers(max_value=0, min_value=-100).map(str) | st.just("many"),
    "--device": st.sampled_from(["gpu", "cuda0", "tpu", "cuda:x", "CPU", "", "cuda:-1"]),
    "--demo": st.text(alphabet=st.characters(blacklist_characters="|", blacklist_categories=("Cs",)), max_size=12),
    "--template": st.sampled_from(["nope", "no slot here", "{sentance}", ""]),
    "--pooling": st.sampled_from(["first", "max", "", "LAST"]),
    "--contrastive-alpha": st.sampled_from(["nan", "inf", "x"]),
    "--token-prepending": st.sampled_from(["3", "5:1", "a:b", "-1:2"]),
    "--embed-filter": st.integers(max_value=0, min_value=-10).map(str),
    "--contrastive-layer": st.sampled_from(["-1", "x"]),
}  # fmt: skip


@settings(SEEDED, max_examples=80)
@given(data=st.data())
def test_a_bad_encoder_option_is_one_line_before_any_model(capsys, no_model, monkeypatch, tmp_path_factory, data):
    folder = tmp_path_factory.getbasetemp() / "encoder-options"
    folder.mkdir(exist_ok=True)
    (folder / "in.txt").write_text("a\n")
    monkeypatch.chdir(folder)
    command = data.draw(st.sampled_from(sorted(ENCODER_COMMANDS)), label="command")
    flag = data.draw(st.sampled_from(sorted(BAD_ENCODER_VALUES)), label="flag")
    value = data.draw(BAD_ENCODER_VALUES[flag], label="value")
    code, err = _cli(capsys, *ENCODER_COMMANDS[command], f"{flag}={value}")
    _refused_in_one_line(code, err)
