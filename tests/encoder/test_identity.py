"""The fingerprint (the embedding cache's key) changes with everything that changes a vector."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import require

from prompteol import EmbeddingCache, Encoder, EncoderConfig
from prompteol.encoder.identity import fingerprint
from prompteol.models.loading import folder_identity, resolve_model

TEXTS = ["A man is playing a guitar.", "Two dogs run."]


@pytest.fixture()
def local_folder(tmp_path, test_cache_dir):
    """A copy of the tiny Llama as a plain local folder (no marker: hashed file by file)."""
    src = resolve_model("tiny-random-llama", cache_dir=test_cache_dir).path
    dst = tmp_path / "model"
    shutil.copytree(src, dst)
    (dst / "prompteol_model.json").unlink()
    return dst


def _miss_after(change, folder, tmp_path, test_cache_dir):
    """Fingerprint before/after ``change(folder)``, and whether the second encoder misses the cache."""
    cache = EmbeddingCache(tmp_path / "emb.sqlite")
    before = Encoder.from_pretrained(str(folder), embedding_cache=cache, cache_dir=test_cache_dir)
    before.encode(TEXTS)
    change(folder)
    after = Encoder.from_pretrained(str(folder), embedding_cache=cache, cache_dir=test_cache_dir)
    return before.fingerprint, after.fingerprint, cache.count(after.fingerprint)


def _edit_json(path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    "change",
    [
        lambda f: _edit_json(f / "tokenizer_config.json", model_max_length=77),
        lambda f: _edit_json(f / "config.json", rms_norm_eps=1e-3),
        lambda f: (f / "special_tokens_map.json").write_text(json.dumps({"pad_token": "<pad>"})),
    ],
    ids=["tokenizer_config", "config", "new-tokenizer-file"],
)
def test_local_folder_tokenizer_and_config_files_change_the_fingerprint(change, local_folder, tmp_path, test_cache_dir):
    fp_before, fp_after, cached = _miss_after(change, local_folder, tmp_path, test_cache_dir)
    assert fp_before != fp_after
    assert cached == 0  # the new encoder finds nothing under its fingerprint: a miss, never a stale vector


def test_unchanged_folder_keeps_its_fingerprint_and_hits_the_cache(local_folder, tmp_path, test_cache_dir):
    (local_folder / "README.md").write_text("docs never change a vector")
    fp_before, fp_after, cached = _miss_after(lambda f: (f / "README.md").write_text("edited"), local_folder,
                                              tmp_path, test_cache_dir)  # fmt: skip
    assert fp_before == fp_after and cached == len(TEXTS)


def test_conversion_versions_are_part_of_a_converted_models_identity(tmp_path):
    marker = {"gguf_sha256": "ab" * 32, "conversion": {"transformers": "5.24.0", "gguf": "0.17.1"}}
    (tmp_path / "prompteol_model.json").write_text(json.dumps(marker))
    a = folder_identity(tmp_path)
    marker["conversion"]["transformers"] = "6.0.0"
    (tmp_path / "prompteol_model.json").write_text(json.dumps(marker))
    b = folder_identity(tmp_path)
    assert a["weights"] == b["weights"] and a != b
    cfg = EncoderConfig(model="x")
    assert fingerprint(cfg, a, 2) != fingerprint(cfg, b, 2)


def test_hub_commit_is_part_of_the_identity(test_cache_dir, monkeypatch):
    from prompteol.models import loading

    path = resolve_model("tiny-random-llama", cache_dir=test_cache_dir).path
    fake = loading.ResolvedModel("org/model", "hub", path, {"weights": "hub:org/model", "revision": None})
    monkeypatch.setattr(loading, "resolve_model", lambda *a, **k: fake)
    real_load = loading.load_base_model
    prints = []
    for commit in ("1111111", "2222222"):

        def load(*a, commit=commit, **k):
            model = real_load(*a, **k)
            model.config._commit_hash = commit  # what transformers records for a hub download
            return model

        monkeypatch.setattr(loading, "load_base_model", load)
        enc = Encoder.from_pretrained("org/model", cache_dir=test_cache_dir)
        assert enc.identity["commit"] == commit
        prints.append(enc.fingerprint)
    assert prints[0] != prints[1]


def test_adapter_config_changes_the_fingerprint_and_the_vectors(tmp_path, test_cache_dir):
    require("peft")
    from peft import LoraConfig, get_peft_model

    base = Encoder.from_pretrained("tiny-random-llama", cache_dir=test_cache_dir)
    peft_model = get_peft_model(base.model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # a non-zero update, as after training
    folder = tmp_path / "adapter"
    peft_model.save_pretrained(str(folder))
    peft_model.unload()  # leave the shared tiny model as it was
    a = Encoder.from_pretrained("tiny-random-llama", adapter=str(folder), cache_dir=test_cache_dir)
    va = a.encode(TEXTS, use_embedding_cache=False)
    _edit_json(folder / "adapter_config.json", lora_alpha=32)  # the same weights, scaled 4x
    b = Encoder.from_pretrained("tiny-random-llama", adapter=str(folder), cache_dir=test_cache_dir)
    assert a.adapter_identity["weights"] == b.adapter_identity["weights"]
    assert a.fingerprint != b.fingerprint
    assert np.abs(va - b.encode(TEXTS, use_embedding_cache=False)).max() > 1e-4


def test_fingerprint_version_is_part_of_the_fingerprint(tiny_encoder, monkeypatch):
    import prompteol.encoder.identity as identity

    cfg, ident = tiny_encoder.config, tiny_encoder.identity
    now = fingerprint(cfg, ident, tiny_encoder.layer_index)
    monkeypatch.setattr(identity, "FINGERPRINT_VERSION", identity.FINGERPRINT_VERSION + 1)
    assert fingerprint(cfg, ident, tiny_encoder.layer_index) != now


_CHANGED = {
    "template": "promptbert", "demonstrations": [("A man is smoking.", "Smoking")], "layer": 1, "pooling": "mean",
    "dtype": "bfloat16", "normalize_text": False, "max_length": 8, "quantization": "int8-dynamic",
    "token_prepending": (1, 2), "contrastive_layer": 1, "contrastive_alpha": 1.0, "contrastive_mode": "norm",
    "prompts": ("cot",), "combine": "concat", "embed_filter": 2, "embed_filter_band": "top",
}  # fmt: skip


def test_every_vector_option_changes_the_fingerprint_and_no_other_does(monkeypatch):
    monkeypatch.setenv("PROMPTEOL_ALLOW_LOSSY_INT8", "1")  # int8-dynamic is refused without it (it is lossy)
    ident = {"weights": "random:x"}
    base = EncoderConfig(model="x")
    vector = set(EncoderConfig.vector_fields())
    assert set(_CHANGED) == vector, "a new vector-changing option needs a changed value here"
    for name, value in _CHANGED.items():
        changed = base.replace(**{name: value})
        layer = 1 if name == "layer" else 2
        assert fingerprint(changed, ident, layer) != fingerprint(base, ident, 2), name
    for name, value in {"device": "cuda", "prefix_cache": False, "model": "y", "revision": "main", "packing": True,
                        "fused": True}.items():  # fmt: skip
        assert name not in vector
        assert fingerprint(base.replace(**{name: value}), ident, 2) == fingerprint(base, ident, 2), name


def test_weights_changed_in_place_never_write_under_the_old_fingerprint(tmp_path, test_cache_dir, caplog):
    cache = EmbeddingCache(tmp_path / "emb.sqlite")
    enc = Encoder.from_pretrained("tiny-random-llama", embedding_cache=cache, cache_dir=test_cache_dir)
    before = enc.encode(TEXTS)
    assert cache.count(enc.fingerprint) == len(TEXTS)
    param = next(enc.model.parameters())
    opt = torch.optim.SGD([param], lr=0.5)
    param.grad = torch.ones_like(param)
    opt.step()  # an optimizer step in place, as training does
    try:
        with caplog.at_level("WARNING"):
            after = enc.encode(TEXTS + ["a new sentence"])
        assert "changed in place" in caplog.text
        assert cache.count(enc.fingerprint) == len(TEXTS)  # nothing written under the old fingerprint
        assert np.abs(after[: len(TEXTS)] - before).max() > 0  # and nothing stale read back
    finally:
        with torch.no_grad():
            param.add_(0.5 * torch.ones_like(param))  # undo, for the other tests of the session


def test_weights_state_follows_in_place_changes_and_new_modules():
    """The parameter list is walked once and kept; an in-place update, a parameter or a module added anywhere (an
    adapter injected in place) changes the state, and a model no longer used is not kept alive."""
    import gc
    import weakref

    import torch

    from prompteol.encoder import identity

    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 3))
    first = identity.weights_state(model)
    assert identity.weights_state(model) == first and first[1] == 4
    with torch.no_grad():
        model[0].weight.add_(1.0)  # an optimizer step
    second = identity.weights_state(model)
    assert second != first and second[1] == 4
    model[1] = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 3))  # a module replaced
    assert identity.weights_state(model)[1] == 6
    model[0].lora = torch.nn.Parameter(torch.zeros(2))  # a parameter added
    assert identity.weights_state(model)[1] == 7
    model[0].sub = torch.nn.Linear(2, 2)  # a submodule added by attribute
    assert identity.weights_state(model)[1] == 9
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None
