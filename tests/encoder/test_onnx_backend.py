"""The ONNX Runtime backend (``backend="onnxruntime"``): torch's vectors (float32, max abs diff < 1e-4) with
every read-out the graph takes, torch for what it cannot take, a clear error for what it cannot run, and a
fallback with one warning on a failed export, a failed first-call check or weights changed in place."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from conftest import require

from prompteol import Encoder
from prompteol.encoder.config import EncoderConfig
from prompteol.errors import ConfigError

require("onnxruntime")

SENTENCES = ["A man is playing a guitar.", "A woman slices an onion.", "Two dogs run in a field of grass today.",
             "x", "The cat sat on the mat and looked out of the window for a long time."]  # fmt: skip


@pytest.fixture(scope="module")
def pair(test_cache_dir, tmp_path_factory):
    """(torch, onnxruntime) encoders of the same tiny model; the exports in a folder of this module's own."""
    kw = {"embedding_cache": False}
    exports = tmp_path_factory.mktemp("onnx-cache")
    torch_enc = Encoder.from_pretrained("tiny-random-llama", cache_dir=test_cache_dir, **kw)
    ort_enc = Encoder.from_pretrained("tiny-random-llama", backend="onnxruntime", cache_dir=test_cache_dir, **kw)
    ort_enc.cache_dir = exports  # models from the shared test cache, exports here
    ort_enc.runner.onnx.cache_dir = exports
    return torch_enc, ort_enc, exports


def _fresh(model: str, test_cache_dir, exports, backend: str = "onnxruntime") -> Encoder:
    """An encoder of ``model`` from the shared test cache, with its ONNX exports (if any) under ``exports``."""
    enc = Encoder.from_pretrained(model, backend=backend, embedding_cache=False, cache_dir=test_cache_dir)
    if enc.runner.onnx is not None:
        enc.runner.onnx.cache_dir = enc.cache_dir = exports
    return enc


def test_vectors_equal_torch_and_the_export_is_reused(pair):
    torch_enc, ort_enc, exports = pair
    a, b = torch_enc.encode(SENTENCES, batch_size=2), ort_enc.encode(SENTENCES, batch_size=2)
    assert np.abs(a - b).max() < 1e-4
    state = ort_enc.describe()["backend"]
    assert state["requested"] == "onnxruntime" and state["active"] and state["fallback"] is None
    assert state["calls"] >= 3 and state["verified_max_diff"] < 1e-4 and state["layer"] == ort_enc.layer_index
    assert (exports / "onnx").is_dir() and any((exports / "onnx").glob("*/model.onnx"))
    assert torch_enc.describe()["backend"] is None
    # the encoder's fingerprint (the embedding cache's key) does not depend on the backend
    assert torch_enc.fingerprint == ort_enc.fingerprint


@pytest.mark.parametrize("changes", [{"layer": -2}, {"demonstrations": [("A man is smoking.", "Smoking")]},
                                     {"pooling": "mean"}, {"embed_filter": 2}, {"template": "ke"}])  # fmt: skip
def test_every_read_out_the_graph_takes(pair, changes):
    torch_enc, ort_enc, _ = pair
    t, o = torch_enc.derive(**changes), ort_enc.derive(**changes)
    o.cache_dir = ort_enc.cache_dir
    if o.runner.onnx is not None:
        o.runner.onnx.cache_dir = ort_enc.cache_dir
    a, b = t.encode(SENTENCES, batch_size=3), o.encode(SENTENCES, batch_size=3)
    assert np.abs(a - b).max() < 1e-4, changes
    state = o.describe()["backend"]
    assert state["active"] and state["calls"] >= 1 and state["fallback"] is None, state


def test_methods_that_hook_inside_the_forward_run_on_torch_and_packing_gives_way(pair):
    torch_enc, ort_enc, _ = pair
    for changes in ({"token_prepending": (1, 2)}, {"contrastive_layer": 1}):
        o = ort_enc.derive(**changes)
        assert np.abs(o.encode(SENTENCES[:3]) - torch_enc.derive(**changes).encode(SENTENCES[:3])).max() < 1e-5
        state = o.describe()["backend"]
        assert state["active"] is False and "hooks into the forward" in state["torch_because"]
    packed = ort_enc.derive(packing=True)  # the server's default: ONNX Runtime takes the padded batches instead
    before = packed.runner.onnx.calls
    assert np.abs(packed.encode(SENTENCES) - torch_enc.encode(SENTENCES)).max() < 1e-4
    assert packed.runner.onnx.calls > before
    forward = packed.runner.onnx
    ids, mask = packed.runner.collate([[5, 6, 7], [5, 6]])
    assert not forward.takes(mask.unsqueeze(1).unsqueeze(1).bool(), 0)  # a packed (4-D) mask: torch


def test_bad_combinations_are_refused_with_the_reason():
    for bad, word in (({"dtype": "bfloat16"}, "dtype"), ({"fused": True}, "fused"), ({"device": "cuda"}, "CPU"),
                      ({"quantization": "4bit"}, "quantization")):  # fmt: skip
        with pytest.raises(ConfigError, match=word):
            EncoderConfig(backend="onnxruntime", **bad)
    with pytest.raises(ConfigError, match="backend should be one of"):
        EncoderConfig(backend="tensorrt")


def test_auto_dtype_resolves_to_float32_with_it():
    from prompteol.encoder.precision import resolve_dtype

    choice = resolve_dtype("auto", "cpu", "onnxruntime")
    assert choice.dtype == "float32" and "onnxruntime" in choice.reason


def test_a_failed_export_falls_back_to_torch_with_one_warning(test_cache_dir, tmp_path, monkeypatch, caplog):
    from prompteol.encoder.forward import onnx as onnx_mod

    def broken(self, folder, heads, head_dim):
        raise RuntimeError("exporter exploded")

    monkeypatch.setattr(onnx_mod.GraphExport, "write", broken)
    ref, enc = _fresh("tiny-random-qwen2", test_cache_dir, tmp_path, "torch"), _fresh("tiny-random-qwen2", test_cache_dir, tmp_path)
    with caplog.at_level(logging.WARNING, logger="prompteol.encoder.forward.onnx"):
        got = enc.encode(SENTENCES)
        enc.encode(SENTENCES[:2])
    assert np.abs(got - ref.encode(SENTENCES)).max() < 1e-6
    warnings = [r for r in caplog.records if "switched off" in r.getMessage()]
    assert len(warnings) == 1 and "exporter exploded" in warnings[0].getMessage()
    state = enc.describe()["backend"]
    assert state["active"] is False and "exporter exploded" in state["fallback"]
    assert not list(tmp_path.glob("onnx/*/model.onnx"))  # nothing half-written left behind


def test_a_failed_first_call_check_keeps_torch(test_cache_dir, tmp_path, monkeypatch, caplog):
    from prompteol.encoder.forward.onnx import OnnxForward

    real_feed = OnnxForward._feed

    def skewed(self, ids, mask, positions, kv, prefix_len):
        feed = real_feed(self, ids, mask, positions, kv, prefix_len)
        feed["position_ids"] = feed["position_ids"] + 3  # a wrong graph input: vectors differ
        return feed

    monkeypatch.setattr(OnnxForward, "_feed", skewed)
    ref, enc = _fresh("tiny-random-llama", test_cache_dir, tmp_path, "torch"), _fresh("tiny-random-llama", test_cache_dir, tmp_path)
    with caplog.at_level(logging.WARNING, logger="prompteol.encoder.forward.onnx"):
        got = enc.encode(SENTENCES)
    assert np.abs(got - ref.encode(SENTENCES)).max() < 1e-6
    assert "differed from torch" in enc.describe()["backend"]["fallback"]


def test_weights_changed_in_place_go_back_to_torch(test_cache_dir, tmp_path, caplog):
    import torch

    enc = _fresh("tiny-random-llama", test_cache_dir, tmp_path)
    enc.encode(SENTENCES[:2])
    assert enc.describe()["backend"]["active"]
    with torch.no_grad():
        next(enc.model.parameters()).add_(0.5)  # an optimizer step would do this
    with caplog.at_level(logging.WARNING, logger="prompteol.encoder.forward.onnx"):
        got = enc.encode(SENTENCES[:2], use_embedding_cache=False)
    ref = enc.runner.onnx
    assert "weights changed" in (ref.failed or "")
    again = _fresh("tiny-random-llama", test_cache_dir, tmp_path, "torch")
    with torch.no_grad():
        next(again.model.parameters()).add_(0.5)
    assert np.abs(got - again.encode(SENTENCES[:2])).max() < 1e-6


@pytest.mark.slow
def test_onnx_runtime_equals_torch_on_smollm2(smollm2_encoder, tmp_path):
    """A real model (its export takes seconds): the ONNX Runtime vectors equal torch's (< 1e-4), with and
    without a demonstration in the shared prefix, at the last layer and below it."""
    from conftest import USER_CACHE

    ort_enc = Encoder.from_pretrained("smollm2-135m", backend="onnxruntime", embedding_cache=False, cache_dir=USER_CACHE)
    ort_enc.runner.onnx.cache_dir = ort_enc.cache_dir = tmp_path
    for changes in ({}, {"demonstrations": [("A man is smoking.", "Smoking")]}, {"layer": -4}):
        t, o = smollm2_encoder.derive(**changes), ort_enc.derive(**changes)
        a = t.encode(SENTENCES * 4, use_embedding_cache=False)
        b = o.encode(SENTENCES * 4)
        # float32 rounding, relative to the largest coordinate (hundreds below the last layer's norm)
        assert np.abs(a - b).max() < 1e-4 * max(1.0, float(np.abs(a).max())), changes
        assert o.describe()["backend"]["active"], changes


def test_the_differentiable_path_stays_on_torch(pair):
    """``Encoder.embed`` (training) needs gradients: its forwards never go to ONNX Runtime."""
    torch_enc, ort_enc, _ = pair
    before = ort_enc.runner.onnx.calls
    out = ort_enc.embed(SENTENCES[:2])
    assert out.requires_grad and ort_enc.runner.onnx.calls == before
    out.sum().backward()


def test_an_export_that_would_not_fit_is_refused_with_the_numbers(test_cache_dir, tmp_path, monkeypatch, caplog):
    from prompteol.encoder.forward import onnx as onnx_mod

    monkeypatch.setattr(onnx_mod, "_free_memory", lambda: 1024)
    enc = _fresh("tiny-random-llama", test_cache_dir, tmp_path)
    with caplog.at_level(logging.WARNING, logger="prompteol.encoder.forward.onnx"):
        enc.encode(SENTENCES[:2])
    fallback = enc.describe()["backend"]["fallback"]
    assert "not enough free memory" in fallback and "GB free" in fallback
    assert not list(tmp_path.glob("onnx/*/model.onnx"))


@pytest.mark.parametrize("arch", ["tiny-random-opt", "tiny-random-gpt2"])
def test_models_with_dropout_give_torchs_vectors_and_stay_in_eval_mode(test_cache_dir, tmp_path, arch):
    """An export used to leave the model in training mode (torch.onnx.export restores the mode of the module it is
    given, a new one: training), so models with dropout (opt, gpt2) failed the first call's check and gave other
    vectors on the torch path after it."""
    ref, enc = _fresh(arch, test_cache_dir, tmp_path, "torch"), _fresh(arch, test_cache_dir, tmp_path)
    assert enc.runner.model.config.to_dict().get("dropout", 0) or enc.runner.model.config.to_dict().get("resid_pdrop", 0)
    got = enc.encode(SENTENCES, batch_size=2)
    assert np.abs(got - ref.encode(SENTENCES, batch_size=2)).max() < 1e-4
    state = enc.describe()["backend"]
    assert state["active"] and state["fallback"] is None and state["calls"] >= 3
    assert enc.runner.model.training is False
