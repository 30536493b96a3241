"""Demonstrations: presets, candidate sets, leak guards and the resumable search (tiny model)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from prompteol import ConfigError, Demonstration, InputError
from prompteol.demos import candidates as C
from prompteol.demos import search as S
from prompteol.encoder.prompts import presets as P


def test_paper_presets_and_closest_size():
    assert P.get_preset("paper-opt-125m")[0] == Demonstration("A man is smoking.", "Smoking")
    assert P.get_preset("paper", model="smollm2-135m") == P.get_preset("paper-opt-125m")
    assert P.get_preset("paper", model="qwen2.5-coder-1.5b") == P.get_preset("paper-opt-1.3b")
    assert P.get_preset("paper", model="gemma3-270m") == P.get_preset("paper-opt-350m")
    with pytest.raises(ConfigError, match="valid"):
        P.get_preset("nope")


def test_save_and_read_user_preset(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMPTEOL_CACHE", str(tmp_path))
    rec = {"demonstrations": [{"sentence": "x y.", "word": "Z"}], "score": 50.0, "split": "stsb-dev", "n_pairs": 3}
    P.save_preset("tiny-random-llama", "searched-stsb-dev", rec)
    assert P.get_preset("searched-stsb-dev", model="tiny-random-llama") == [Demonstration("x y.", "Z")]
    assert P.get_preset("default", model="tiny-random-llama") == [Demonstration("x y.", "Z")]
    P.save_preset("tiny-random-llama", "searched-leakfree", {**rec, "demonstrations": [{"sentence": "a.", "word": "B"}]})
    assert P.get_preset("default", model="tiny-random-llama") == [Demonstration("a.", "B")]  # leak-free wins


@pytest.mark.parametrize(
    "text, word",
    [('Music".', "Music"), ('music"\n\n', "Music"), ("a woman is walking", None), ('"', None), (' peel" is', "Peel"),
     ('x"', None)],
)  # fmt: skip
def test_extract_word(text, word):
    assert C.extract_word(text) == word


def test_candidates_roundtrip_and_errors(tmp_path):
    cands = [C.Candidate("meat from a deer.", "Venison", "wordnet-3.0", {"pos": "noun"})]
    path = C.write_candidates(tmp_path / "c.jsonl", cands, {"source": "test"})
    got, prov = C.read_candidates(path)
    assert prov == {"source": "test"} and got[0].demonstration == Demonstration("meat from a deer.", "Venison")
    plain = tmp_path / "c.txt"
    plain.write_text("A man is smoking.|Smoking\n")
    assert C.read_candidates(plain)[0][0].word == "Smoking"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"sentence": "x"}\n')
    with pytest.raises(InputError, match="line 1"):
        C.read_candidates(bad)


def _fake_wordnet(root):
    root.mkdir()
    lines = {
        "noun": ["  1 licence header line",
                 "00000001 13 n 01 venison 0 000 | meat from a deer; \"venison stew\"",
                 "00000002 13 n 01 cat 0 000 | a cat is a small feline animal",
                 "00000003 13 n 01 ice_cream 0 000 | frozen dessert made of cream and sugar"],
        "adj": ["00000004 00 a 01 swiss 0 000 | relating to switzerland or its people"],
        "verb": [], "adv": [],
    }  # fmt: skip
    for pos, rows in lines.items():
        (root / f"data.{pos}").write_text("\n".join(rows) + "\n", encoding="latin-1")


def test_wordnet_candidates_from_data_files(tmp_path):
    _fake_wordnet(tmp_path / "wn")
    got = C.wordnet_candidates(n=10, root=tmp_path / "wn")
    # 'cat' is in its own definition and 'ice_cream' is not one word: both are left out
    assert [(c.sentence, c.word) for c in got] == [
        ("relating to switzerland or its people.", "Swiss"),
        ("meat from a deer.", "Venison"),
    ]
    with pytest.raises(ConfigError, match="wordnet-base"):
        C.wordnet_candidates(root=tmp_path / "missing")


@pytest.mark.parametrize("split", ["stsb-test", "STS12", "SICKRelatedness", "sick-test"])
def test_test_splits_are_refused(split):
    with pytest.raises(ConfigError, match="refusing"):
        S.check_split(split)


def test_split_reported_in_same_run_is_refused():
    with pytest.raises(ConfigError, match="same run"):
        S.check_split("stsb-dev", report=["STSBenchmark-dev"])
    S.check_split("stsb-dev", report=["STSBenchmark", "STS12"])  # test scores of other splits are fine


def test_leak_free_split_is_disjoint_from_test_sets(data_dir):
    cands = [C.Candidate("a man is playing a guitar .", "Music", "test")]
    split = S.load_selection_split("stsb-train-heldout", cands, data_dir)
    banned = C.test_sentences(data_dir)
    assert len(split) > 500 and split.leak_free
    assert not any(C._key(s) in banned for s in split.sentences1 + split.sentences2)
    assert "a man is playing a guitar" not in {C._key(s) for s in split.sentences1 + split.sentences2}
    sample = S.load_selection_split("stsb-dev", data_dir=data_dir, max_pairs=50, seed=1)
    assert len(sample) == 50 and not sample.leak_free


def _toy_split():
    s1 = ["a man plays guitar", "a dog runs", "the sun is hot", "a cat sleeps", "people dance", "rain falls"]
    s2 = ["a man plays a guitar", "a cat sleeps", "it is cold", "a kitten naps", "a crowd dances", "the sun shines"]
    return S.SelectionSplit("toy", s1, s2, np.array([5.0, 1.0, 0.5, 4.0, 3.5, 1.5]), True, "toy split")


def test_search_resumes_after_interruption(tmp_path, tiny_encoder, monkeypatch):
    cands = [C.Candidate(f"example sentence number {i}.", f"Word{i}", "test") for i in range(4)]
    results = tmp_path / "r.jsonl"
    calls = {"n": 0}
    real = S.score_split

    def dying(enc, split, batch_size=64):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(enc, split, batch_size)

    monkeypatch.setattr(S, "score_split", dying)
    with pytest.raises(KeyboardInterrupt):
        S.search(tiny_encoder, cands, _toy_split(), results, progress=False)
    assert len(S.read_results(results)[1]) == 2  # no demo + first candidate, written as they came
    calls["n"] = 100  # no more interruptions
    rows = S.search(tiny_encoder, cands, _toy_split(), results, progress=False)
    assert calls["n"] == 100 + 3, "finished candidates are skipped on resume"
    assert len(rows) == 5 and rows == sorted(rows, key=lambda r: -r["score"])
    assert {r["k"] for r in rows} == {0, 1}


def test_search_k2_greedy_and_header_check(tmp_path, tiny_encoder):
    cands = [C.Candidate(f"example {i}.", f"W{i}", "test") for i in range(3)]
    results = tmp_path / "r.jsonl"
    rows = S.search(tiny_encoder, cands, _toy_split(), results, k=2, pool=2, progress=False)
    pairs = [r for r in rows if r["k"] == 2]
    assert len(pairs) == 1  # the best single extended by the other of the 2 best singles
    header = json.loads(results.read_text().splitlines()[0])["search"]
    assert header["split"] == "toy" and header["n_pairs"] == 6
    other = S.SelectionSplit("other", *(_toy_split().__dict__[k] for k in ("sentences1", "sentences2", "scores")), True, "x")
    with pytest.raises(ConfigError, match="another search"):
        S.search(tiny_encoder, cands, other, results, progress=False)


def test_search_scores_match_direct_evaluation(tiny_encoder):
    split = _toy_split()
    demo = Demonstration("example 1.", "W1")
    from scipy.stats import spearmanr

    enc = tiny_encoder.derive(demonstrations=[demo])
    a, b = enc.encode(split.sentences1, use_embedding_cache=False), enc.encode(split.sentences2, use_embedding_cache=False)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert S.score_split(enc, split) == pytest.approx(100 * spearmanr(cos, split.scores)[0], abs=1e-6)


def test_cli_search_screens_rescores_and_saves_a_preset(tmp_path, data_dir, test_cache_dir, monkeypatch, capsys):
    from prompteol.cli.main import main

    monkeypatch.setenv("PROMPTEOL_CACHE", str(test_cache_dir))
    cands = tmp_path / "c.jsonl"
    C.write_candidates(cands, [C.Candidate(f"an example number {i}.", f"Word{i}", "test") for i in range(4)], {"source": "test"})
    results, presets = tmp_path / "r.jsonl", tmp_path / "presets.json"
    argv = ["--cache-dir", str(test_cache_dir), "demos", "search", "-m", "tiny-random-llama", "--candidates", str(cands),
            "--split", "stsb-train-heldout", "--data-dir", str(data_dir), "--max-pairs", "12", "--rescore", "2",
            "--max-candidates", "3", "--results", str(results), "--save-preset", "mine", "--preset-file", str(presets),
            "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    header, rows = S.read_results(results)
    assert header["n_pairs"] == 12 and sum(r["k"] == 1 for r in rows) == 3  # screening: a sample of 3 of 4
    full_header, full_rows = S.read_results(tmp_path / "r.rescore2.jsonl")
    assert full_header["n_pairs"] > 12 and sum(r["k"] == 1 for r in full_rows) == 2  # the 2 best, on the whole split
    record = json.loads(presets.read_text())["tiny-random-llama"]["mine"]
    best = max((r for r in full_rows), key=lambda r: r["score"])
    assert record["demonstrations"] == best["demonstrations"] and record["score"] == best["score"]
    assert record["n_pairs"] == full_header["n_pairs"] and record["leak_free"] and record["n_scored"] == 3
    assert record["screening"] == {"max_pairs": 12, "seed": 0, "rescored": 2} and "demos search" in record["command"]
    assert main(argv) == 0  # a rerun resumes: nothing new is scored
    assert len(S.read_results(results)[1]) == len(rows)
