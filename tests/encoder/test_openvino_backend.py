"""The OpenVINO backend (``backend="openvino"``): the same float32 export as ONNX Runtime's, run by OpenVINO.

float32: torch's vectors (max abs diff < 1e-4) and torch's fingerprint; bfloat16: within a bfloat16 rounding of
torch's float32 (cosine), under a fingerprint of its own (never mixed with torch's bfloat16 vectors in a
cache); ``auto`` follows the CPU; what it cannot run is refused with the reason; a failed check falls back to
torch with one warning."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from conftest import require

from prompteol import Encoder
from prompteol.encoder.config import EncoderConfig
from prompteol.errors import ConfigError

require("openvino")
require("onnx")

SENTENCES = ["A man is playing a guitar.", "A woman slices an onion.", "Two dogs run in a field of grass today.",
             "x", "The cat sat on the mat and looked out of the window for a long time."]  # fmt: skip


def _enc(model: str, test_cache_dir, exports, **options) -> Encoder:
    """An encoder of ``model`` from the shared test cache, with its exports (if any) under ``exports``."""
    enc = Encoder.from_pretrained(model, embedding_cache=False, cache_dir=test_cache_dir, **options)
    if enc.runner.onnx is not None:
        enc.runner.onnx.cache_dir = enc.cache_dir = exports
    return enc


def _cosines(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    return tmp_path_factory.mktemp("openvino-exports")


def test_float32_equals_torch_with_the_same_fingerprint(test_cache_dir, exports):
    ref = Encoder.from_pretrained("tiny-random-llama", embedding_cache=False, cache_dir=test_cache_dir)
    enc = _enc("tiny-random-llama", test_cache_dir, exports, backend="openvino", dtype="float32")
    for changes in ({}, {"layer": -2}, {"demonstrations": [("A man is smoking.", "Smoking")]}, {"pooling": "mean"}):
        t, o = ref.derive(**changes), enc.derive(**changes)
        if o.runner.onnx is not None:
            o.runner.onnx.cache_dir = exports
        assert np.abs(t.encode(SENTENCES, batch_size=2) - o.encode(SENTENCES, batch_size=2)).max() < 1e-4, changes
        state = o.describe()["backend"]
        assert state["requested"] == "openvino" and state["active"] and state["fallback"] is None, state
        assert state["name"] == "openvino" and state["precision"] == "float32" and state["inference_precision"] == "f32"
    assert enc.fingerprint == ref.fingerprint


def test_bfloat16_is_close_to_float32_under_its_own_fingerprint(test_cache_dir, exports):
    ref = Encoder.from_pretrained("tiny-random-llama", embedding_cache=False, cache_dir=test_cache_dir)
    torch_bf16 = Encoder.from_pretrained("tiny-random-llama", embedding_cache=False, dtype="bfloat16",
                                         cache_dir=test_cache_dir)  # fmt: skip
    enc = _enc("tiny-random-llama", test_cache_dir, exports, backend="openvino", dtype="bfloat16")
    got = enc.encode(SENTENCES, batch_size=2)
    assert _cosines(got, ref.encode(SENTENCES)).min() > 0.99
    state = enc.describe()["backend"]
    assert state["active"] and state["precision"] == "bfloat16" and state["verified_max_diff"] <= 1e-2
    assert state["inference_precision"] in ("bf16", "f32")  # f32 where the CPU has no bfloat16 (OpenVINO's choice)
    # the torch model keeps float32 weights (it computes the prefix); the vectors are not torch's bfloat16 ones
    import torch

    assert next(enc.model.parameters()).dtype == torch.float32
    assert enc.describe()["dtype"] == "bfloat16"
    assert len({enc.fingerprint, torch_bf16.fingerprint, ref.fingerprint}) == 3


def test_the_export_is_shared_with_onnx_runtime(test_cache_dir, exports):
    require("onnxruntime")
    ov = _enc("tiny-random-qwen2", test_cache_dir, exports, backend="openvino", dtype="float32")
    ov.encode(SENTENCES[:2])
    ort = _enc("tiny-random-qwen2", test_cache_dir, exports, backend="onnxruntime")
    ort.encode(SENTENCES[:2])
    assert ov.describe()["backend"]["export"] == ort.describe()["backend"]["export"]
    assert ort.describe()["backend"]["export_s"] is None  # reused, not exported again


def test_auto_follows_the_cpu(monkeypatch):
    from prompteol.encoder import precision

    monkeypatch.setattr(precision, "native_bf16", lambda: True)
    choice = precision.resolve_dtype("auto", "cpu", "openvino")
    assert choice.dtype == "bfloat16" and "openvino" in choice.reason
    monkeypatch.setattr(precision, "native_bf16", lambda: False)
    choice = precision.resolve_dtype("auto", "cpu", "openvino")
    assert choice.dtype == "float32" and "without native bfloat16" in choice.reason


def test_what_it_cannot_run_is_refused_with_the_reason():
    for bad, word in (({"dtype": "float16"}, "dtype"), ({"dtype": "bf16-mixed"}, "dtype"), ({"fused": True}, "fused"),
                      ({"device": "cuda"}, "CPU"), ({"quantization": "4bit"}, "quantization")):  # fmt: skip
        with pytest.raises(ConfigError, match=f"backend='openvino' cannot run with .*{word}"):
            EncoderConfig(backend="openvino", **bad)
    EncoderConfig(backend="openvino", dtype="bfloat16")  # runs
    with pytest.raises(ConfigError, match="ONNX Runtime|float32"):
        EncoderConfig(backend="onnxruntime", dtype="bfloat16")


def test_a_missing_runtime_names_the_extra(monkeypatch):
    import sys

    from prompteol.encoder.forward.onnx import check_runtime

    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    with pytest.raises(ConfigError, match=r"pip install 'prompteol\[openvino\]'"):
        check_runtime("openvino")


def test_a_failed_first_call_check_keeps_torch_float32(test_cache_dir, exports, monkeypatch, caplog):
    from prompteol.encoder.forward import onnx as onnx_mod

    monkeypatch.setattr(onnx_mod, "COSINE_TOLERANCE", -1.0)  # nothing passes
    ref = Encoder.from_pretrained("tiny-random-llama", embedding_cache=False, cache_dir=test_cache_dir)
    enc = _enc("tiny-random-llama", test_cache_dir, exports, backend="openvino", dtype="bfloat16")
    with caplog.at_level(logging.WARNING, logger="prompteol.encoder.forward.onnx"):
        got = enc.encode(SENTENCES)
        enc.encode(SENTENCES[:2])
    assert np.abs(got - ref.encode(SENTENCES)).max() < 1e-6  # torch, float32 weights
    warnings = [r for r in caplog.records if "switched off" in r.getMessage()]
    assert len(warnings) == 1 and "openvino" in warnings[0].getMessage()
    assert "1 - lowest cosine" in enc.describe()["backend"]["fallback"]


def test_a_graph_traced_from_other_weights_dtype_is_another_export(test_cache_dir, exports):
    """An encoder built on a bfloat16 torch model never reuses (or writes) the float32 graph's export folder."""
    import torch

    enc = _enc("tiny-random-llama", test_cache_dir, exports, backend="openvino", dtype="float32")
    key32 = enc.runner.onnx.key()
    enc.model.to(torch.bfloat16)
    try:
        assert enc.runner.onnx.key() != key32
    finally:
        enc.model.to(torch.float32)


@pytest.mark.slow
def test_openvino_on_smollm2(smollm2_encoder, tmp_path):
    """A real model: float32 equals torch's (< 1e-4 relative), bfloat16 within cosine 0.999 of it, with and
    without a demonstration in the shared prefix."""
    from conftest import USER_CACHE

    for dtype in ("float32", "bfloat16"):
        ov = Encoder.from_pretrained("smollm2-135m", backend="openvino", dtype=dtype, embedding_cache=False,
                                     cache_dir=USER_CACHE)  # fmt: skip
        ov.runner.onnx.cache_dir = ov.cache_dir = tmp_path
        for changes in ({}, {"demonstrations": [("A man is smoking.", "Smoking")]}):
            t, o = smollm2_encoder.derive(**changes), ov.derive(**changes)
            a, b = t.encode(SENTENCES * 4, use_embedding_cache=False), o.encode(SENTENCES * 4)
            if dtype == "float32":
                assert np.abs(a - b).max() < 1e-4 * max(1.0, float(np.abs(a).max())), changes
            else:
                assert _cosines(a, b).min() > 0.999, changes
            assert o.describe()["backend"]["active"], changes


# ---------------------------------------------------------------------------------------------- backend="auto"
@pytest.fixture
def bf16_cpu(monkeypatch):
    """This CPU as one with native bfloat16 (the decision only; OpenVINO computes in float32 where it has none)."""
    from prompteol.encoder import precision
    from prompteol.encoder.forward import choice

    monkeypatch.setattr(precision, "native_bf16", lambda: True)
    monkeypatch.setattr(choice, "native_bf16", lambda: True)


def test_auto_takes_openvino_for_bfloat16_on_a_bf16_cpu(test_cache_dir, exports, bf16_cpu, monkeypatch):
    monkeypatch.setenv("PROMPTEOL_CACHE", str(exports))
    enc = Encoder.from_pretrained("tiny-random-llama", backend="auto", dtype="auto", embedding_cache=False,
                                  cache_dir=test_cache_dir)  # fmt: skip
    enc.runner.onnx.cache_dir = enc.cache_dir = exports
    assert enc.config.backend == "openvino" and enc.config.dtype == "bfloat16"
    enc.encode(SENTENCES[:2])
    state = enc.describe()["backend"]
    assert state["requested"] == "auto" and state["active"] and state["auto"]["backend"] == "openvino", state
    assert "native bfloat16" in state["auto"]["reason"]
    derived = enc.derive(layer=-2)  # a derived encoder keeps the decision
    assert derived.describe()["backend"]["auto"]["backend"] == "openvino"


@pytest.mark.parametrize("options, why", [
    ({"dtype": "float32"}, "exact"),
    ({"dtype": "bfloat16", "token_prepending": (1, 2)}, "hooks inside the forward"),
    ({"dtype": "bfloat16", "fused": True}, "fused"),
])  # fmt: skip
def test_auto_stays_on_torch_with_the_reason(test_cache_dir, bf16_cpu, options, why):
    enc = Encoder.from_pretrained("tiny-random-llama", backend="auto", embedding_cache=False, cache_dir=test_cache_dir,
                                  **options)  # fmt: skip
    assert enc.config.backend == "torch" and enc.runner.onnx is None
    state = enc.describe()["backend"]
    assert state["requested"] == "auto" and state["active"] is False and why in state["torch_because"], state


def test_auto_stays_on_torch_without_bf16_or_room(test_cache_dir, bf16_cpu, monkeypatch):
    from prompteol.encoder.forward import choice
    from prompteol.encoder.limits import cpu_free_memory

    monkeypatch.setattr("prompteol.encoder.limits.cpu_free_memory", lambda: (1024, "test"))
    enc = Encoder.from_pretrained("tiny-random-llama", backend="auto", dtype="bfloat16", embedding_cache=False,
                                  cache_dir=test_cache_dir)  # fmt: skip
    assert enc.config.backend == "torch"
    assert "not enough free memory" in enc.describe()["backend"]["torch_because"]
    monkeypatch.setattr("prompteol.encoder.limits.cpu_free_memory", cpu_free_memory)
    monkeypatch.setattr(choice, "native_bf16", lambda: False)
    config = EncoderConfig(model="x", backend="auto", dtype="bfloat16")
    assert "without native bfloat16" in choice.resolve_backend(config, None).reason
    # weights on disk counted from the safetensors headers, before loading (the LM head too: an upper bound)
    loaded = sum(p.numel() for p in enc.model.parameters())
    assert loaded <= choice._parameters_on_disk(enc.source["path"]) < 2 * loaded


def test_auto_on_a_model_loaded_elsewhere_is_torch(test_cache_dir):
    ref = Encoder.from_pretrained("tiny-random-llama", embedding_cache=False, cache_dir=test_cache_dir)
    enc = Encoder(ref.model, ref.tokenizer, ref.config.replace(backend="auto"), identity=ref.identity,
                  num_layers=ref.num_layers)  # fmt: skip
    assert enc.config.backend == "torch" and "loaded elsewhere" in enc.describe()["backend"]["torch_because"]


def test_eval_defaults_to_auto_and_the_searches_do_not():
    from prompteol.cli.main import build_parser

    parser = build_parser()
    assert parser.parse_args(["eval"]).encoder_defaults["backend"] == "auto"
    assert parser.parse_args(["eval", "--backend", "torch"]).backend == "torch"
    for command in (["scale"], ["demos", "search", "--candidates", "c.jsonl"], ["methods", "search", "--grid", "g"],
                    ["serve"], ["encode", "in.txt", "-o", "out.npy"]):  # fmt: skip
        args = parser.parse_args(command)
        assert "backend" not in args.encoder_defaults, command


@pytest.fixture
def two_threads():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)  # OpenVINO gives a stream at least one thread
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("streams", ["1", "2"])
def test_streams_cut_a_batch_and_keep_every_row(test_cache_dir, exports, monkeypatch, two_threads, streams):
    """Several OpenVINO streams run the parts of one batch at once; the rows come back in order, equal to torch."""
    monkeypatch.setenv("PROMPTEOL_OV_STREAMS", streams)
    ref = Encoder.from_pretrained("tiny-random-llama", embedding_cache=False, cache_dir=test_cache_dir)
    enc = _enc("tiny-random-llama", test_cache_dir, exports, backend="openvino", dtype="float32")
    demo = {"demonstrations": [("A man is smoking.", "Smoking")]}
    for t, o in ((ref, enc), (ref.derive(**demo), enc.derive(**demo))):
        if o.runner.onnx is not None:
            o.runner.onnx.cache_dir = exports
        for batch_size in (1, 2, 5):
            got = o.encode(SENTENCES, batch_size=batch_size)
            assert np.abs(t.encode(SENTENCES, batch_size=batch_size) - got).max() < 1e-4, (streams, batch_size)
    state = enc.describe()["backend"]
    assert state["streams"] == int(streams) and state["fallback"] is None, state


def test_the_prefix_is_fed_once_and_follows_the_encoder(test_cache_dir, exports, monkeypatch, two_threads):
    """The prefix's keys and values are the same arrays every call (each request is given them once), and new ones
    when another encoder on the same forward brings another prefix: interleaved, every vector is still torch's."""
    from prompteol.encoder.forward.onnx import OnnxForward

    monkeypatch.setenv("PROMPTEOL_OV_STREAMS", "2")
    ref = Encoder.from_pretrained("tiny-random-llama", embedding_cache=False, cache_dir=test_cache_dir)
    enc = _enc("tiny-random-llama", test_cache_dir, exports, backend="openvino", dtype="float32")
    demo = {"demonstrations": [("A man is smoking.", "Smoking")]}
    pairs = [(ref, enc), (ref.derive(**demo), enc.derive(**demo))]
    assert pairs[1][1].runner.onnx is enc.runner.onnx  # one forward for both prefixes
    feeds: list[dict] = []
    real_feed = OnnxForward._feed
    monkeypatch.setattr(OnnxForward, "_feed", lambda self, *a: feeds.append(real_feed(self, *a)) or feeds[-1])
    for t, o in pairs + pairs:
        feeds.clear()
        got = o.encode(SENTENCES, batch_size=2)
        assert np.abs(t.encode(SENTENCES, batch_size=2) - got).max() < 1e-4
        with_prefix = [f for f in feeds if f["past_k0"].shape[2] > 0]
        assert len(with_prefix) > 1 and all(f["past_k0"] is with_prefix[0]["past_k0"] for f in with_prefix)
        given = enc.runner.onnx.session._given
        assert any(g.get("past_v1") is feeds[-1]["past_v1"] for g in given)  # the requests hold the arrays given
    assert enc.describe()["backend"]["fallback"] is None


def test_a_call_takes_batch_size_sentences_per_stream(test_cache_dir, exports, monkeypatch, two_threads):
    """On the OpenVINO backend a call holds ``batch_size`` sentences per stream (before and after the session is
    made); on torch, and once the backend is off, ``batch_size``."""
    from types import SimpleNamespace

    from prompteol.encoder.forward.choice import rows_per_call

    monkeypatch.setenv("PROMPTEOL_OV_STREAMS", "2")
    enc = _enc("tiny-random-llama", test_cache_dir, exports, backend="openvino", dtype="float32")
    assert rows_per_call(enc.runner.onnx, 3) == 6  # no session yet: the streams it will have
    sizes: list[int] = []
    got = enc.encode(SENTENCES, batch_size=2)  # makes the session
    real = enc.runner.onnx.session.run
    monkeypatch.setattr(enc.runner.onnx.session, "run", lambda names, feed: sizes.append(len(feed["input_ids"])) or
                        real(names, feed))  # fmt: skip
    again = enc.encode(SENTENCES, batch_size=2)
    assert max(sizes) == 4 and np.abs(got - again).max() < 1e-5
    assert rows_per_call(None, 3) == 3 and rows_per_call(SimpleNamespace(runtime="onnxruntime", failed=None), 3) == 3
    assert rows_per_call(SimpleNamespace(runtime="openvino", failed="broken"), 3) == 3


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_each_stream_computes_its_part_without_the_padding_it_does_not_need(
    test_cache_dir, exports, monkeypatch, two_threads, side, pooling
):
    """The second half of a length-sorted batch is shorter: its stream gets only the token columns of its own
    rows (either padding side), and every vector is still torch's."""
    from prompteol.encoder.forward import onnx as backend

    monkeypatch.setenv("PROMPTEOL_OV_STREAMS", "2")
    ref = Encoder.from_pretrained("tiny-random-llama", embedding_cache=False, cache_dir=test_cache_dir, pooling=pooling)
    enc = _enc("tiny-random-llama", test_cache_dir, exports, backend="openvino", dtype="float32", pooling=pooling)
    ref.runner.padding_side = enc.runner.padding_side = side
    widths: list[tuple[int, int]] = []
    real_trim = backend._trim
    monkeypatch.setattr(backend, "_trim", lambda k, v, lo, hi, t: (widths.append((hi - lo, t)) if k == "input_ids"
                                                                   else None, real_trim(k, v, lo, hi, t))[1])  # fmt: skip
    got = enc.encode(SENTENCES, batch_size=5)
    assert np.abs(ref.encode(SENTENCES, batch_size=5) - got).max() < 1e-4
    assert enc.describe()["backend"]["fallback"] is None
    assert any(width < t for width, t in widths), widths  # "x" and the short ones ran narrower than the batch


def test_real_span_and_trim_cut_the_token_axis():
    from prompteol.encoder.forward.onnx import _real_span, _trim

    neg = np.finfo(np.float32).min
    t, p = 4, 2
    mask = np.full((2, 1, t, p + t), neg, dtype=np.float32)
    mask[:, :, :, :p] = 0  # the prefix
    for row, length in ((0, 3), (1, 2)):  # right padding: real tokens at 0..length-1
        for i in range(length):
            mask[row, 0, i, p : p + i + 1] = 0
    assert _real_span(mask) == (0, 3)
    cut = _trim("attention_mask", mask, 0, 3, t)
    assert cut.shape == (2, 1, 3, p + 3) and (cut[:, :, :, :p] == 0).all()
    np.testing.assert_array_equal(cut[:, :, :, p:], mask[:, :, :3, p : p + 3])
    ids = np.arange(8).reshape(2, 4)
    np.testing.assert_array_equal(_trim("input_ids", ids, 1, 3, t), ids[:, 1:3])
    assert _trim("past_k0", ids, 1, 3, t) is ids  # the prefix's keys/values keep their shape
    assert _real_span(np.full((1, 1, t, p + t), neg, dtype=np.float32)) == (0, t)  # no real token: untouched


@pytest.mark.parametrize("raw", ["0", "two", "-1"])
def test_a_bad_stream_count_is_refused(raw, monkeypatch):
    from prompteol.encoder.forward.onnx import openvino_streams

    monkeypatch.setenv("PROMPTEOL_OV_STREAMS", raw)
    with pytest.raises(ConfigError, match="PROMPTEOL_OV_STREAMS"):
        openvino_streams(2)
    monkeypatch.delenv("PROMPTEOL_OV_STREAMS")
    assert openvino_streams(2) == 2 and openvino_streams(1) == 1
