"""Reading the SentEval data exactly as SentEval does, and verifying a data root."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest

from prompteol.errors import DataError
from prompteol.evaluation import check_data, load_sts_pairs, load_task_data, resolve_data_dir, verify_data
from prompteol.evaluation.data import senteval_text

OFFICIAL_STS = {"STS12": 3108, "STS13": 1500, "STS14": 3750, "STS15": 3000, "STS16": 1186,
                "STSBenchmark": 1379, "STSBenchmark-dev": 1500, "SICKRelatedness": 4927}  # fmt: skip


@pytest.mark.parametrize("name", list(OFFICIAL_STS))
def test_sts_readers_give_the_official_counts(data_dir, name):
    pairs = load_sts_pairs(name, data_dir)
    assert len(pairs) == len(pairs.sentences1) == len(pairs.sentences2) == OFFICIAL_STS[name]
    assert np.isfinite(pairs.scores).all() and pairs.scores.min() >= 0 and pairs.scores.max() <= 5


def test_selection_splits_for_demo_search(data_dir):
    assert len(load_sts_pairs("STSBenchmark-train", data_dir)) == 5749
    assert len(load_sts_pairs("SICK-train", data_dir)) == 4500
    assert len(load_sts_pairs("SICK-trial", data_dir)) == 500
    assert len(load_sts_pairs("STS15/answers-forums", data_dir)) == 375
    with pytest.raises(DataError, match="not an STS task or split"):
        load_sts_pairs("MR", data_dir)


def test_transfer_readers_give_the_official_counts(data_dir):
    counts = {name: {k: len(v) for k, v in load_task_data(name, data_dir).items()}
              for name in ("MR", "CR", "SUBJ", "MPQA", "SST2", "TREC", "MRPC")}  # fmt: skip
    assert counts == {
        "MR": {"all": 10662}, "CR": {"all": 3775}, "SUBJ": {"all": 10000}, "MPQA": {"all": 10606},
        "SST2": {"train": 67349, "dev": 872, "test": 1821}, "TREC": {"train": 5452, "test": 500},
        "MRPC": {"train": 4076, "test": 1725},
    }  # fmt: skip
    trec = load_task_data("TREC", data_dir)["train"]
    assert sorted(set(trec.labels.tolist())) == [0, 1, 2, 3, 4, 5]
    subj = load_task_data("SUBJ", data_dir)["all"]
    assert np.bincount(subj.labels).tolist() == [5000, 5000]


def test_sentences_are_presented_like_senteval(data_dir):
    assert senteval_text("  a  b\tc\u00a0d \n") == "a b c d"
    # STS15 answers-forums has a 0x85 byte inside UTF-8 characters: no line may be split there
    pairs = load_sts_pairs("STS15/answers-forums", data_dir)
    assert len(pairs) == 375
    raw = (data_dir / "downstream/STS/STS15-en-test/STS.input.answers-forums.txt").read_bytes()
    assert b"\x85" in raw
    # SICK test has CRLF endings: nothing of them survives
    sick = load_sts_pairs("SICKRelatedness", data_dir)
    assert not any("\r" in s for s in sick.sentences1 + sick.sentences2)
    # CR keeps its blank lines as empty sentences, as SentEval does
    cr = load_task_data("CR", data_dir)["all"]
    assert cr.texts.count("") == 4
    # the k-fold split sees SentEval's order: sorted by (tokens, label), stable
    keys = [(len(t.split()), int(y)) for t, y in zip(cr.texts, cr.labels)]
    assert keys == sorted(keys)


def test_verify_data_returns_checksums(data_dir):
    sums = verify_data(data_dir, "STS13")
    assert len(sums) == 6 and all(len(v) == 64 for v in sums.values())


def _copy_task(data_dir, tmp_path, task: str):
    from prompteol.evaluation import get_task

    for f in get_task(task).files:
        dst = tmp_path / f.path
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(data_dir / f.path, dst)
    return tmp_path


def test_verify_data_names_a_changed_file_and_its_checksum(data_dir, tmp_path):
    root = _copy_task(data_dir, tmp_path, "STS13")
    verify_data(root, "STS13")
    target = root / "downstream/STS/STS13-en-test/STS.gs.FNWN.txt"
    expected = hashlib.sha256(target.read_bytes()).hexdigest()
    target.write_bytes(target.read_bytes().replace(b"\n", b"\n\n", 1))
    with pytest.raises(DataError) as err:
        verify_data(root, "STS13")
    assert "STS.gs.FNWN.txt: bad checksum" in str(err.value) and expected in str(err.value)


def test_verify_data_names_a_missing_file(data_dir, tmp_path):
    root = _copy_task(data_dir, tmp_path, "STS13")
    (root / "downstream/STS/STS13-en-test/STS.input.OnWN.txt").unlink()
    with pytest.raises(DataError, match=r"STS\.input\.OnWN\.txt: missing \(expected sha256 cb74993e"):
        verify_data(root, "STS13")
    statuses = {s.path.rsplit("/", 1)[-1]: s.status for s in check_data(root, "STS13")}
    assert statuses["STS.input.OnWN.txt"] == "missing" and statuses["STS.gs.OnWN.txt"] == "ok"
    with pytest.raises(DataError, match="missing"):
        verify_data(root, "STS12")  # nothing of STS12 was copied


def test_data_root_resolution(tmp_path, monkeypatch, data_dir):
    monkeypatch.delenv("PROMPTEOL_DATA", raising=False)
    with pytest.raises(DataError, match="PROMPTEOL_DATA"):
        resolve_data_dir(None)
    monkeypatch.setenv("PROMPTEOL_DATA", str(data_dir))
    assert resolve_data_dir(None) == data_dir
    monkeypatch.setenv("PROMPTEOL_DATA", str(tmp_path))
    assert resolve_data_dir(data_dir) == data_dir  # the argument wins over the environment
    (tmp_path / "senteval" / "downstream").mkdir(parents=True)
    with pytest.raises(DataError, match="did you mean"):
        resolve_data_dir(None)  # $PROMPTEOL_DATA is checked too
    with pytest.raises(DataError, match="use its parent"):
        resolve_data_dir(tmp_path / "senteval" / "downstream")
