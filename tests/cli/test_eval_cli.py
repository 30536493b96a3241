"""``prompteol eval`` and ``prompteol data``: results JSON, cache reuse, verification, offline download."""

from __future__ import annotations

import json
import tarfile
import time

import pytest

from prompteol.cli.main import main


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """A fresh cache root (tiny models + embedding cache); main() sets PROMPTEOL_CACHE, monkeypatch restores it."""
    root = tmp_path / "cache"
    monkeypatch.setenv("PROMPTEOL_CACHE", str(root))
    return root


def test_eval_writes_results_and_second_run_hits_the_cache(data_dir, tmp_path, isolated_cache, monkeypatch, capsys):
    from prompteol.encoder import Encoder

    calls = {"n": 0}
    real = Encoder._vectors

    def counting(self, *args, **kwargs):
        calls["n"] += 1
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Encoder, "_vectors", counting)
    out = tmp_path / "results.json"
    argv = ["--cache-dir", str(isolated_cache), "eval", "--model", "tiny-random-llama", "--tasks", "STSBenchmark-dev",
            "--data-dir", str(data_dir), "--output", str(out), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    first_calls = calls["n"]
    assert first_calls > 0
    res = json.loads(out.read_text())
    task = res["tasks"]["STSBenchmark-dev"]
    assert task["n"] == 1500 and isinstance(task["score"], float) and task["main_score"] == "spearman"
    assert res["encoder"]["model"] == "tiny-random-llama" and res["encoder"]["template"]["name"] == "prompteol"
    assert res["encoder"]["normalize_text"] is True and "fingerprint" in res["encoder"]
    assert {"torch", "transformers", "numpy", "scikit-learn", "scipy", "prompteol"} <= set(res["versions"])
    assert res["data"]["sha256"] == {
        "downstream/STS/STSBenchmark/sts-dev.csv": "c558fa95fec006608f13e3d942f153b614beabccbf33e64f36418d406a895e37"}
    assert res["elapsed_s"] > 0 and res["tasks"]["STSBenchmark-dev"]["elapsed_s"]["total"] > 0
    assert res["mode"] == "test" and res["date"]
    assert "STSBenchmark-dev" in capsys.readouterr().out

    # the second identical run is served from the persistent cache: no forward pass at all
    calls["n"] = 0
    out2 = tmp_path / "again.json"
    assert main(argv[:-3] + ["--output", str(out2), "--no-progress"]) == 0
    assert calls["n"] == 0
    assert json.loads(out2.read_text())["tasks"]["STSBenchmark-dev"]["score"] == task["score"]


def test_eval_options_reach_the_library(data_dir, tmp_path, isolated_cache, monkeypatch, capsys):
    """--no-cache, --batch-size, --mode, several encoders (baseline columns) -> one table and a multi-run JSON."""
    from eval_fakes import HashedBoW

    from prompteol.cli import eval_cmd

    seen = []

    def fake_build(args, use_embedding_cache=True, **defaults):
        seen.append(("model", args.model, use_embedding_cache))
        return HashedBoW()

    def fake_baseline(name, device="cpu", cache=True, **kw):
        seen.append(("baseline", name, cache))
        return HashedBoW(dim=64)

    monkeypatch.setattr(eval_cmd, "build_encoder", fake_build)
    monkeypatch.setattr("prompteol.evaluation.baselines.load_baseline", fake_baseline)
    out = tmp_path / "multi.json"
    argv = ["-v", "eval", "--model", "m", "--baseline", "all-minilm-l6-v2", "--tasks", "STS13", "--no-cache",
            "--data-dir", str(data_dir), "-o", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert seen == [("model", "m", False), ("baseline", "all-minilm-l6-v2", False)]
    res = json.loads(out.read_text())
    assert res["schema"] == "prompteol.eval-multi/1" and [r["label"] for r in res["runs"]] == ["m", "all-minilm-l6-v2"]
    table = capsys.readouterr().out
    assert "all-minilm-l6-v2" in table and "FNWN" in table and "(wmean)" in table  # -v shows the subsets
    seen.clear()
    assert main(["eval", "--baseline", "all-mpnet-base-v2", "--tasks", "STS13", "--data-dir", str(data_dir)]) == 0
    assert seen == [("baseline", "all-mpnet-base-v2", True)]  # no --model: the baseline alone


def test_eval_checks_data_before_loading_a_model(tmp_path, isolated_cache, monkeypatch, capsys):
    from prompteol.cli import common

    monkeypatch.setattr(common, "build_encoder", lambda *a, **k: pytest.fail("model loaded before data check"))
    monkeypatch.delenv("PROMPTEOL_DATA", raising=False)
    assert main(["eval", "--model", "tiny-random-llama", "--tasks", "STS13"]) == 2
    assert "PROMPTEOL_DATA" in capsys.readouterr().err
    (tmp_path / "downstream").mkdir()
    assert main(["eval", "--tasks", "STS13", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "STS.input.FNWN.txt: missing (expected sha256 a20cb41a" in err
    assert main(["eval", "--tasks", "STS99", "--data-dir", str(tmp_path)]) == 2
    assert "valid tasks are" in capsys.readouterr().err


def test_data_verify_exit_codes(data_dir, tmp_path, capsys):
    assert main(["data", "verify", "--data-dir", str(data_dir), "--tasks", "sts"]) == 0
    assert "SICKRelatedness" in capsys.readouterr().out
    (tmp_path / "downstream" / "MR").mkdir(parents=True)
    (tmp_path / "downstream" / "MR" / "rt-polarity.pos").write_text("not the file\n")
    assert main(["data", "verify", "--data-dir", str(tmp_path), "--tasks", "MR"]) == 1
    out = capsys.readouterr().out
    assert "bad checksum" in out and "missing" in out and "34e5b0da2d491e46" in out
    assert main(["data", "verify", "--data-dir", str(tmp_path / "nowhere")]) == 1


def test_data_download_fails_at_once_offline(tmp_path, capsys):
    t0 = time.perf_counter()
    code = main(["data", "download", "--dest", str(tmp_path / "d"), "--url", "http://127.0.0.1:9/senteval.tar",
                 "--timeout", "2", "--no-progress"])  # fmt: skip
    assert code == 2 and time.perf_counter() - t0 < 10
    err = capsys.readouterr().err
    assert "could not download" in err and "--data-dir" in err and "PROMPTEOL_DATA" in err


def test_data_download_unpacks_and_verifies_an_archive(data_dir, tmp_path, capsys):
    """The SimCSE archive holds the task folders at its top; a file:// URL stands in for the network."""
    archive = tmp_path / "senteval.tar"
    with tarfile.open(archive, "w") as tar:
        for sub in sorted((data_dir / "downstream").iterdir()):
            tar.add(sub, arcname=sub.name)
    dest = tmp_path / "root"
    assert main(["data", "download", "--dest", str(dest), "--url", archive.as_uri(), "--no-progress"]) == 0
    assert (dest / "downstream" / "STS" / "STS12-en-test").is_dir()
    assert "export PROMPTEOL_DATA=" in capsys.readouterr().err
    assert main(["data", "verify", "--data-dir", str(dest)]) == 0
    assert not list(dest.glob(".senteval*"))  # no partial files left behind
