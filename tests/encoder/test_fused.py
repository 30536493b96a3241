"""Fused forwards (``fused=True``, torch.compile'd blocks) and ``dtype="auto"``.

The fused path must give the eager path's vectors (float32: max abs diff < 1e-4) with every option,
fall back to eager on a compile failure or a failed first-call check, and say so in ``describe()``.
One real compilation of a tiny model per module (it takes seconds); the failure paths use fakes.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from prompteol import Encoder
from prompteol.encoder.config import EncoderConfig
from prompteol.encoder.forward.fused import FusedBlocks
from prompteol.errors import ConfigError

SENTENCES = ["A man is playing a guitar.", "A woman slices an onion.", "Two dogs run in a field of grass today.",
             "x", "The cat sat on the mat and looked out of the window for a long time."]  # fmt: skip


@pytest.fixture(scope="module")
def pair(test_cache_dir):
    """(eager, fused) encoders of the same tiny model (each its own load)."""
    kw = {"embedding_cache": False, "cache_dir": test_cache_dir}
    return Encoder.from_pretrained("tiny-random-llama", **kw), Encoder.from_pretrained("tiny-random-llama", fused=True, **kw)


def test_fused_vectors_equal_eager(pair):
    """The plain encoder: one real compilation of the two tiny blocks (the prefix and the batch paths)."""
    eager, fused = pair
    a, b = eager.encode(SENTENCES, batch_size=2), fused.encode(SENTENCES, batch_size=2)
    assert np.abs(a - b).max() < 1e-4
    state = fused.describe()["fused"]
    assert state["requested"] and state["active"] and state["fallback"] is None
    assert state["calls"] >= 1 and state["verified_max_diff"] < 1e-4 and state["compiled_blocks"] == 2
    assert eager.describe()["fused"] is None


@pytest.mark.slow
def test_fused_vectors_equal_eager_with_every_read_out(pair):
    """Every read-out sharing the compiled graphs (seconds to minutes of compiling: slow)."""
    eager, fused = pair
    for changes in ({"layer": -2}, {"demonstrations": [("A man is smoking.", "Smoking")]}, {"pooling": "mean"},
                    {"prompts": ["promptbert"]}, {"embed_filter": 2}, {"packing": True}):  # fmt: skip
        e, f = eager.derive(**changes), fused.derive(**changes)
        a, b = e.encode(SENTENCES, batch_size=2), f.encode(SENTENCES, batch_size=2)
        assert np.abs(a - b).max() < 1e-4, changes
        state = f.describe()["fused"]
        assert state["requested"] and state["active"] and state["fallback"] is None
        assert state["calls"] >= 1 and state["verified_max_diff"] < 1e-4
        assert e.describe()["fused"] is None


def test_methods_that_hook_inside_the_forward_run_eagerly(pair):
    eager, fused = pair
    for changes in ({"token_prepending": (1, 2)}, {"contrastive_layer": 1}):
        f = fused.derive(**changes)
        assert np.abs(f.encode(SENTENCES[:3]) - eager.derive(**changes).encode(SENTENCES[:3])).max() < 1e-5
        state = f.describe()["fused"]
        assert state["active"] is False and "hooks into the forward" in state["eager_because"]


def test_a_compile_failure_falls_back_to_eager_with_one_warning(test_cache_dir, monkeypatch, caplog):
    import torch

    def broken(fn, **kwargs):
        def run(*args, **kw):
            raise RuntimeError("inductor exploded")

        return run

    monkeypatch.setattr(torch, "compile", broken)
    kw = {"embedding_cache": False, "cache_dir": test_cache_dir}
    eager = Encoder.from_pretrained("tiny-random-qwen2", **kw)
    fused = Encoder.from_pretrained("tiny-random-qwen2", fused=True, **kw)
    with caplog.at_level(logging.WARNING, logger="prompteol.encoder.forward.fused"):
        got = fused.encode(SENTENCES)
        fused.encode(SENTENCES[:2])
    assert np.array_equal(got, eager.encode(SENTENCES))
    warnings = [r for r in caplog.records if "switched off" in r.getMessage()]
    assert len(warnings) == 1 and "inductor exploded" in warnings[0].getMessage()
    assert "inductor exploded" in fused.describe()["fused"]["fallback"]


def test_a_model_that_keeps_recompiling_goes_back_to_eager(monkeypatch, caplog):
    import prompteol.encoder.forward.fused as fused_mod

    blocks = FusedBlocks([])
    seconds = iter([0.0, 0.0] + [x for i in range(1, 20) for x in (10.0 * i, 10.0 * i + 5.0)])
    monkeypatch.setattr(fused_mod, "_compile_seconds", lambda: next(seconds))
    with caplog.at_level(logging.WARNING, logger="prompteol.encoder.forward.fused"):
        for _ in range(fused_mod.WARM_CALLS + fused_mod.MAX_LATE_COMPILES):
            blocks._count(fused_mod._compile_seconds())
    assert blocks.failed and "still compiling" in blocks.failed and blocks.late_compiles == fused_mod.MAX_LATE_COMPILES
    assert sum("switched off" in r.getMessage() for r in caplog.records) == 1


def test_a_wrong_compiled_result_is_caught_by_the_first_call_check(test_cache_dir, monkeypatch, caplog):
    import torch

    def wrong(fn, **kwargs):
        def run(*args, **kw):
            out = fn(*args, **kw)
            return out * 1.5 if isinstance(out, torch.Tensor) else (out[0] * 1.5, *out[1:])

        return run

    monkeypatch.setattr(torch, "compile", wrong)
    kw = {"embedding_cache": False, "cache_dir": test_cache_dir}
    eager = Encoder.from_pretrained("tiny-random-gemma3", **kw)
    fused = Encoder.from_pretrained("tiny-random-gemma3", fused=True, **kw)
    with caplog.at_level(logging.WARNING, logger="prompteol.encoder.forward.fused"):
        got = fused.encode(SENTENCES)
    assert np.abs(got - eager.encode(SENTENCES)).max() < 1e-6, "the eager result is used, never the wrong one"
    state = fused.describe()["fused"]
    assert "differed from eager" in state["fallback"] and state["verified_max_diff"] > 1e-4
    assert any("switched off" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("factor, kept", [(1e9, True), (0.0, False)])
def test_compiled_blocks_slower_than_eager_go_back_to_eager(test_cache_dir, monkeypatch, caplog, factor, kept):
    """The first call after the warm calls is timed against eager; clearly slower blocks are switched off
    (SLOWER_FACTOR 0: any fused time counts as slower; 1e9: never), and the vectors stay eager's."""
    import torch

    import prompteol.encoder.forward.fused as fused_mod

    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)  # "compiled" = the eager forward: no compiling
    monkeypatch.setattr(fused_mod, "SLOWER_FACTOR", factor)
    monkeypatch.setattr(fused_mod, "MIN_TIMED_S", 0.0)  # the tiny model's calls are judged too
    kw = {"embedding_cache": False, "cache_dir": test_cache_dir}
    eager = Encoder.from_pretrained("tiny-random-qwen2", **kw)
    fused = Encoder.from_pretrained("tiny-random-qwen2", fused=True, **kw)
    many = [f"{s} ({i})" for i in range(4) for s in SENTENCES]
    with caplog.at_level(logging.WARNING, logger="prompteol.encoder.forward.fused"):
        got = fused.encode(many, batch_size=2)
    assert np.abs(got - eager.encode(many, batch_size=2)).max() < 1e-6
    state = fused.describe()["fused"]
    check = state["speed_check"]
    assert check is not None and check["call"] == fused_mod.WARM_CALLS + 1 and check["eager_s"] > 0
    assert check["judged"]
    switched = [r.getMessage() for r in caplog.records if "switched off" in r.getMessage()]
    if kept:
        assert state["fallback"] is None and not switched
    else:
        assert "slower than eager" in state["fallback"] and len(switched) == 1


def test_a_call_too_short_to_time_keeps_the_compiled_blocks(test_cache_dir, monkeypatch):
    """Below MIN_TIMED_S of eager time the check records the times and keeps fused (a tiny model's call)."""
    import torch

    import prompteol.encoder.forward.fused as fused_mod

    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)
    monkeypatch.setattr(fused_mod, "SLOWER_FACTOR", 0.0)  # would switch off, were the call judged
    monkeypatch.setattr(fused_mod, "MIN_TIMED_S", 1e9)
    fused = Encoder.from_pretrained("tiny-random-qwen2", fused=True, embedding_cache=False, cache_dir=test_cache_dir)
    fused.encode([f"{s} ({i})" for i in range(4) for s in SENTENCES], batch_size=2)
    state = fused.describe()["fused"]
    assert state["speed_check"]["judged"] is False and state["fallback"] is None and state["active"]


# ------------------------------------------------------------------------------------ dtype auto
@pytest.mark.parametrize("native, expected", [(True, "bfloat16"), (False, "float32")])
def test_dtype_auto_follows_the_cpu(test_cache_dir, monkeypatch, native, expected):
    import prompteol.encoder.precision as precision

    monkeypatch.setattr(precision, "native_bf16", lambda: native)
    enc = Encoder.from_pretrained("tiny-random-llama", dtype="auto", embedding_cache=False, cache_dir=test_cache_dir)
    assert enc.config.dtype == expected and str(next(enc.model.parameters()).dtype) == f"torch.{expected}"
    p = enc.describe()["precision"]
    assert p["requested"] == "auto" and p["dtype"] == expected and "avx512_bf16" in p["flags"]
    assert ("native bfloat16" in p["reason"]) and (("without" in p["reason"]) != native)
    # the fingerprint is the resolved dtype's: the cache never mixes auto's vectors across machines
    explicit = Encoder.from_pretrained("tiny-random-llama", dtype=expected, embedding_cache=False, cache_dir=test_cache_dir)
    assert enc.fingerprint == explicit.fingerprint


def test_bfloat16_on_a_cpu_without_it_warns_once_with_the_faster_choice(monkeypatch, caplog):
    import prompteol.encoder.precision as precision

    monkeypatch.setattr(precision, "native_bf16", lambda: False)
    monkeypatch.setattr(precision, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="prompteol.encoder.precision"):
        assert precision.resolve_dtype("bfloat16").dtype == "bfloat16"
        precision.resolve_dtype("bfloat16")
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 1 and "4-6x slower" in msgs[0] and "'float32'" in msgs[0]


def test_unknown_dtype_names_the_valid_ones():
    with pytest.raises(ConfigError, match="auto"):
        EncoderConfig(dtype="fp8")


def test_int8_dynamic_is_refused_without_acknowledgement(monkeypatch):
    monkeypatch.delenv("PROMPTEOL_ALLOW_LOSSY_INT8", raising=False)
    with pytest.raises(ConfigError, match="ruins the vectors"):
        EncoderConfig(quantization="int8-dynamic")
    monkeypatch.setenv("PROMPTEOL_ALLOW_LOSSY_INT8", "1")
    assert EncoderConfig(quantization="int8-dynamic").quantization == "int8-dynamic"


def test_speed_defaults_of_eval_scale_and_searches(monkeypatch, data_dir):
    import prompteol.encoder.config as config

    assert config.SPEED_ENCODER_DEFAULTS is not None
    # the real values (conftest sets float32 / eager for the other tests)
    monkeypatch.setitem(config.SPEED_ENCODER_DEFAULTS, "dtype", "auto")
    monkeypatch.setitem(config.SPEED_ENCODER_DEFAULTS, "fused", False)
    seen = {}

    def capture(args, use_embedding_cache=True, **defaults):
        seen.update(defaults)
        raise SystemExit(0)

    from prompteol.cli import eval_cmd

    monkeypatch.setattr(eval_cmd, "build_encoder", capture)
    from prompteol.cli.main import main

    with pytest.raises(SystemExit):
        main(["eval", "--tasks", "STS13", "--no-cache", "--data-dir", str(data_dir)])
    assert seen.get("dtype") == "auto" and seen.get("fused") is False
    import argparse

    from prompteol.cli.main import build_parser

    parser = build_parser()
    args = parser.parse_args(["eval", "--no-fused", "--dtype", "float32"])
    assert isinstance(args, argparse.Namespace) and args.fused is False and args.dtype == "float32"
    assert parser.parse_args(["eval", "--fused"]).fused is True  # both forms exist whatever the default
    text = parser.parse_args(["eval"])
    assert text.fused is None and text.dtype is None  # not given: SPEED_ENCODER_DEFAULTS apply


@pytest.mark.slow
def test_fused_equals_eager_on_smollm2(smollm2_encoder):  # the real-model check
    """A real model: fused float32 vectors equal eager ones (< 1e-4) on STS-B-like sentences."""
    fused = Encoder.from_pretrained("smollm2-135m", fused=True, embedding_cache=False)
    eager = smollm2_encoder
    a = eager.encode(SENTENCES * 4, use_embedding_cache=False)
    b = fused.encode(SENTENCES * 4)
    assert np.abs(a - b).max() < 1e-4
    packed = fused.derive(packing=True).encode(SENTENCES * 4)  # the packed path's own graphs
    assert np.abs(a - packed).max() < 1e-4
    assert fused.describe()["fused"]["active"]
