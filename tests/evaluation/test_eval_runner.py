"""``evaluate`` on the real data with any object that has ``encode``: results fields, errors, metadata."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from eval_fakes import HashedBoW

from prompteol.errors import ConfigError, DataError, InputError
from prompteol.evaluation import RESULTS_SCHEMA, evaluate, get_task


def test_any_object_with_encode(data_dir):
    enc = HashedBoW()
    res = evaluate(enc, tasks="STSBenchmark-dev,STS13", data_dir=data_dir)
    json.dumps(res)  # JSON-serialisable as is
    assert res["schema"] == RESULTS_SCHEMA and res["mode"] == "test"
    assert set(res) >= {"date", "tasks", "averages", "encoder", "protocol", "data", "versions", "elapsed_s"}
    dev = res["tasks"]["STSBenchmark-dev"]
    assert dev["n"] == 1500 and dev["split"] == "dev" and 30 < dev["score"] < 80
    sts13 = res["tasks"]["STS13"]
    assert set(sts13["spearman"]) == {"all", "mean", "wmean"} and set(sts13["subsets"]) == {"FNWN", "headlines", "OnWN"}
    assert set(sts13["elapsed_s"]) == {"encode", "score", "total"}
    encode_s = sum(t["elapsed_s"]["encode"] for t in res["tasks"].values())
    assert res["encode_s"] == {"total": pytest.approx(encode_s, abs=2e-3), "one_off": 0.0, "net": res["encode_s"]["total"]}
    assert len(enc.calls) == 2  # one encode call per task, unique sentences only
    assert enc.calls[0] == dev["sentences"] < 2 * 1500
    assert res["encoder"]["class"].endswith("HashedBoW")
    assert {"numpy", "scipy", "scikit-learn", "prompteol", "python"} <= set(res["versions"])
    assert len(res["data"]["sha256"]) == 7
    # deterministic
    again = evaluate(HashedBoW(), tasks="STSBenchmark-dev", data_dir=data_dir)
    assert again["tasks"]["STSBenchmark-dev"]["score"] == dev["score"]


def test_a_backend_made_in_the_run_is_a_one_off_beside_the_encoding(data_dir):
    class Exported(HashedBoW):
        def describe(self):
            return {"backend": {"name": "openvino", "calls": 3, "export_s": 0.5, "session_s": 0.25}}

    res = evaluate(Exported(), tasks="STSBenchmark-dev", data_dir=data_dir)
    spent = res["tasks"]["STSBenchmark-dev"]["elapsed_s"]["encode"]
    assert res["encode_s"] == {"total": spent, "one_off": 0.75, "net": pytest.approx(spent - 0.75, abs=2e-3)}
    unused = type("Unused", (HashedBoW,), {"describe": lambda self: {"backend": {"calls": 0, "export_s": 0.5}}})
    assert evaluate(unused(), tasks="STSBenchmark-dev", data_dir=data_dir)["encode_s"]["one_off"] == 0.0


def test_describe_is_recorded(data_dir):
    class Described(HashedBoW):
        def describe(self):
            return {"model": "bow", "dim": np.int64(self.dim), "path": data_dir}

    res = evaluate(Described(), tasks="STS13", data_dir=data_dir)
    assert res["encoder"]["model"] == "bow" and res["encoder"]["dim"] == 256 and isinstance(res["encoder"]["path"], str)
    json.dumps(res)


def test_bad_encoder_output_is_explained(data_dir):
    class Flat:
        def encode(self, sentences):
            return np.zeros(len(sentences))

    with pytest.raises(InputError, match="one row per sentence"):
        evaluate(Flat(), tasks="STS13", data_dir=data_dir)
    with pytest.raises(InputError, match="encode"):
        evaluate(object(), tasks="STS13", data_dir=data_dir)
    with pytest.raises(ConfigError, match="mode should be one of"):
        evaluate(HashedBoW(), tasks="STS13", data_dir=data_dir, mode="quick")


def test_data_is_verified_before_anything_is_encoded(data_dir, tmp_path):
    for f in get_task("STS13").files:
        (tmp_path / f.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(data_dir / f.path, tmp_path / f.path)
    (tmp_path / get_task("STS13").files[0].path).write_text("changed\n")
    enc = HashedBoW()
    with pytest.raises(DataError, match="bad checksum"):
        evaluate(enc, tasks="STS13", data_dir=tmp_path)
    assert enc.calls == []


def test_sts_group_average(data_dir):
    res = evaluate(HashedBoW(), tasks="sts", data_dir=data_dir)
    scores = [res["tasks"][n]["score"] for n in res["tasks"]]
    assert len(scores) == 7 and res["averages"]["sts"] == pytest.approx(np.mean(scores))


def test_classifier_and_seeds_are_checked_before_anything_is_encoded(data_dir):
    enc = HashedBoW()
    with pytest.raises(ConfigError, match="classifier should be one of"):
        evaluate(enc, tasks="MR", data_dir=data_dir, classifier="svm")
    for bad in (0, -1, 1.5, True, "3"):
        with pytest.raises(ConfigError, match="seeds should be"):
            evaluate(enc, tasks="MR", data_dir=data_dir, seeds=bad)
    assert enc.calls == []


def test_cli_classifier_and_seeds_reach_evaluate(data_dir, tmp_path, monkeypatch, capsys):
    """`prompteol eval --classifier senteval --seeds 3` passes both to evaluate (defaults: lbfgs, 1)."""
    import prompteol.evaluation
    from prompteol.cli import eval_cmd
    from prompteol.cli.main import main

    seen = []

    def fake_evaluate(encoder, tasks, **kwargs):
        seen.append(kwargs)
        return {"tasks": {}, "averages": {}, "encoder": {}, "elapsed_s": 0.0}

    monkeypatch.setattr(eval_cmd, "build_encoder", lambda args, **kw: HashedBoW())
    monkeypatch.setattr(prompteol.evaluation, "evaluate", fake_evaluate)
    base = ["eval", "--model", "m", "--tasks", "MR", "--data-dir", str(data_dir), "--no-progress"]
    assert main(base + ["--classifier", "senteval", "--seeds", "3", "--mode", "fast"]) == 0
    assert main(base) == 0
    assert main(base + ["--max-iter", "5000"]) == 0
    assert [(k["classifier"], k["seeds"], k["mode"], k["max_iter"]) for k in seen] == [
        ("senteval", 3, "fast", None), ("lbfgs", 1, "test", None), ("lbfgs", 1, "test", 5000)]  # fmt: skip
    for bad in (["--seeds", "0"], ["--seeds", "two"], ["--classifier", "svm"], ["--max-iter", "0"]):
        with pytest.raises(SystemExit) as exc:
            main(base + bad)
        assert exc.value.code == 2
    assert "--seeds" in capsys.readouterr().err
