"""Triplet files (CSV / JSONL): every bad row reported with its line number; the SNLI converter."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from prompteol.errors import DataError
from prompteol.train.data import Triplet, TripletDataError, read_triplets, write_triplets
from prompteol.train.snli import snli_triplets

SNLI_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "snli-devtest"


def _write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_csv_simcse_format(tmp_path):
    path = _write(tmp_path, "t.csv", 'sent0,sent1,hard_neg\nA man sings.,A man is singing.,A woman sleeps.\n'
                                     '"Commas, quoted.",B,"She said ""no"""\n\n')  # fmt: skip
    assert read_triplets(path) == [
        Triplet("A man sings.", "A man is singing.", "A woman sleeps."),
        Triplet("Commas, quoted.", "B", 'She said "no"'),
    ]


def test_csv_pairs_without_hard_negatives(tmp_path):
    path = _write(tmp_path, "t.csv", "sent1,sent0\npos,anchor\n")  # column order does not matter
    assert read_triplets(path) == [Triplet("anchor", "pos", None)]


def test_csv_bad_rows_are_all_reported_with_line_numbers(tmp_path):
    text = (
        "sent0,sent1,hard_neg\n"  # 1
        "ok,ok,ok\n"  # 2
        "only,two\n"  # 3: too few fields
        "a,,c\n"  # 4: empty positive
        "ok,ok,ok\n"  # 5
        'x"y",b,c\n'  # 6: a quote inside an unquoted field is text (as in every CSV reader)
        "a,b,c,d\n"  # 7: too many
        '"spans\nlines",b,c\n'  # 8-9: multi-line field (an unclosed quote in real files)
        "ok,ok,   \n"  # 10: blank hard negative
    )
    with pytest.raises(TripletDataError) as info:
        read_triplets(_write(tmp_path, "t.csv", text))
    lines = [p.line for p in info.value.problems]
    assert lines == [3, 4, 7, 8, 10]
    msg = str(info.value)
    assert "line 3: expected 3 fields (sent0,sent1,hard_neg), got 2" in msg and "line 4: sent1 is empty" in msg
    assert "line 8: sent0 spans several lines (an unclosed quote?)" in msg and "line 10: hard_neg is empty" in msg
    assert "--skip-bad-rows" in msg and "out of" in msg


def test_csv_invalid_utf8_and_broken_quote(tmp_path):
    path = _write(tmp_path, "t.csv", b'sent0,sent1,hard_neg\nok,ok,ok\ncaf\xe9,b,c\nok,ok,ok\n"unclosed,b,c\n')
    with pytest.raises(TripletDataError) as info:
        read_triplets(path)
    problems = {p.line: p.problem for p in info.value.problems}
    assert problems[3] == "sent0 is not valid UTF-8"
    assert problems[5] == "broken CSV quoting (unexpected end of data)"


def test_csv_header_must_name_the_columns(tmp_path):
    with pytest.raises(TripletDataError, match=r"line 1: the header \['a', 'b'\] lacks \['sent0', 'sent1'\]"):
        read_triplets(_write(tmp_path, "t.csv", "a,b\nx,y\n"))


def test_skip_bad_rows_reports_each_skipped_row(tmp_path, caplog):
    path = _write(tmp_path, "t.csv", "sent0,sent1,hard_neg\nok,ok,ok\nbad,row\nok2,ok2,ok2\n")
    with caplog.at_level(logging.WARNING, logger="prompteol.train.data"):
        rows = read_triplets(path, skip_bad_rows=True)
    assert [r.anchor for r in rows] == ["ok", "ok2"]
    assert "line 3: expected 3 fields" in caplog.text and "skipped 1 bad row(s); 2 kept" in caplog.text


def test_jsonl_bad_rows(tmp_path):
    text = (
        '{"sent0": "a", "sent1": "b", "hard_neg": "c"}\n'  # 1
        "not json\n"  # 2
        '{"sent0": "a", "sent1": "b"}\n'  # 3: hard_neg missing while row 1 has one
        '["a", "b", "c"]\n'  # 4
        '{"sent0": "a", "sent1": 7, "hard_neg": "c"}\n'  # 5
        "\n"
        '{"sent0": "x", "sent1": "y", "hard_neg": "z"}\n'  # 7
    )
    with pytest.raises(TripletDataError) as info:
        read_triplets(_write(tmp_path, "t.jsonl", text))
    assert [p.line for p in info.value.problems] == [2, 3, 4, 5]
    assert "line 5: sent1 should be a string, got int" in str(info.value)


def test_unknown_suffix_and_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"valid: \['.csv', '.jsonl'\]"):
        read_triplets(_write(tmp_path, "t.tsv", "x"))
    with pytest.raises(DataError, match="no such file"):
        read_triplets(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="holds no rows"):
        read_triplets(_write(tmp_path, "e.csv", "sent0,sent1,hard_neg\n"))


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_write_read_roundtrip(tmp_path, suffix):
    rows = [Triplet('He said "hi", then left.', "b", "c"), Triplet("x", "y, z", "w")]
    path = tmp_path / f"t{suffix}"
    write_triplets(path, rows)
    assert read_triplets(path) == rows


@pytest.fixture(scope="module")
def snli_dir() -> Path:
    if not (SNLI_DIR / "labels.dev").is_file():
        pytest.skip(f"SNLI dev/test files not found at {SNLI_DIR}")
    return SNLI_DIR


def test_snli_converter_counts(snli_dir):
    dev = snli_triplets(snli_dir, splits=["dev"])
    test = snli_triplets(snli_dir, splits=["test"])
    # premises with both an entailment and a contradiction; their i-th of each paired
    assert (len(dev), len(test)) == (2954, 2929)
    assert dev[0] == Triplet(
        "Two women are embracing while holding to go packages .",
        "Two woman are holding packages .",
        "The men are fighting outside a deli .",
    )
    assert len(snli_triplets(snli_dir)) == 2954 + 2929
    assert all(t.anchor and t.positive and t.negative for t in dev)


def test_snli_converter_errors(tmp_path):
    with pytest.raises(DataError, match="s1.dev is missing"):
        snli_triplets(tmp_path, splits=["dev"])
    with pytest.raises(DataError, match="unknown SNLI split"):
        snli_triplets(tmp_path, splits=["train2"])
    for name, text in (("s1.dev", "p\np\n"), ("s2.dev", "h1\nh2\n"), ("labels.dev", "entailment\nmaybe\n")):
        (tmp_path / name).write_text(text)
    with pytest.raises(DataError, match="labels.dev line 2: label 'maybe'"):
        snli_triplets(tmp_path, splits=["dev"])


def test_cli_convert_snli(tmp_path, snli_dir, capsys):
    from prompteol.cli.main import main

    out = tmp_path / "snli.csv"
    assert main(["train", "convert-snli", "--data-dir", str(snli_dir), "--splits", "dev", "-o", str(out)]) == 0
    assert len(read_triplets(out)) == 2954
    assert "wrote 2954 triplets" in capsys.readouterr().err


def test_public_api_and_light_import():
    import subprocess
    import sys

    import prompteol.train as train_pkg

    assert sorted(train_pkg.__all__) == sorted(train_pkg._EXPORTS)
    for name in train_pkg.__all__:
        assert getattr(train_pkg, name) is not None
    code = "import sys, prompteol.train, prompteol.cli.train_cmd; print('torch' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        == "False"
    )
