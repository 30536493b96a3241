"""Fault injection with real files (batches that would not fit in memory: split, or refused before any forward): damaged inputs never give wrong results or tracebacks."""

from __future__ import annotations

import numpy as np
import pytest
from faults import (
    FAULT_MODEL,
    _assert_one_line_error,
    _assert_server_error,
    _encode_args,
    _post,
)

# ================================================================================================
# memory: batches split to fit, a sequence too large alone refused before any forward
# ================================================================================================
#
# prompteol.encoder.limits estimates a batch's activation memory from its lengths (formula in the module
# docstring) and plans batches within MEMORY_FRACTION of limits.available_memory(); here that
# function is replaced by one returning a small number.


def test_memory_estimate_formula():
    from prompteol.encoder.limits import ActivationShape

    sdpa = ActivationShape(hidden=576, intermediate=1536, heads=9, kv=192, layers=30, dtype_bytes=4, attention="sdpa")
    per_token = 4 * (10 * 576 + 4 * 1536 + 4 * 192 * 30)
    assert sdpa.batch_bytes(1, 1) == per_token + 5
    assert sdpa.batch_bytes(8, 100) == 8 * 100 * per_token + 8 * 100 * 100 * (1 + 4)
    eager = ActivationShape(576, 1536, 9, 192, 30, 4, "eager")
    assert eager.batch_bytes(2, 1000) == 2 * 1000 * per_token + 2 * 1000 * 1000 * (2 * 9 + 1) * 4
    assert ActivationShape(576, 1536, 9, 192, 30, 2, "flash_attention_2").batch_bytes(2, 10) == 2 * 10 * per_token // 2


def test_plan_batches_splits_to_fit_and_refuses_what_cannot():
    from prompteol.encoder.batching import MemoryLimitError, plan_batches

    lengths = [10, 50, 20, 50, 30, 40, 10, 5]
    cost = lambda n, t: n * t  # noqa: E731 - padded tokens as the "bytes"
    batches = plan_batches(lengths, 32, max_batch_bytes=100, batch_bytes=cost)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))  # nothing lost, nothing twice
    assert all(len(b) * max(lengths[i] for i in b) <= 100 for b in batches)
    assert plan_batches(lengths, 32) == [sorted(range(8), key=lambda i: -lengths[i])]  # no budget: one batch
    with pytest.raises(MemoryLimitError, match=r"texts\[1\] is 50 tokens") as info:
        plan_batches(lengths, 32, max_batch_bytes=49, batch_bytes=cost)
    assert (info.value.index, info.value.tokens, info.value.need, info.value.limit) == (1, 50, 50, 49)


class _Forwards:
    """Records the batch sizes the model runner is asked to compute."""

    def __init__(self, monkeypatch, encoder):
        self.sizes: list[int] = []
        inner = encoder.runner.vectors

        def vectors(seqs, *args, **kwargs):
            self.sizes.append(len(seqs))
            return inner(seqs, *args, **kwargs)

        monkeypatch.setattr(encoder.runner, "vectors", vectors)


def _memory_texts() -> list[str]:
    return [f"sentence {i} " + "word " * (i * 7 % 40) for i in range(24)]


def test_memory_limited_batches_are_split_and_give_the_same_vectors(tiny_encoder, monkeypatch):
    from prompteol.encoder import limits

    texts = _memory_texts()
    want = tiny_encoder.encode(texts, batch_size=32, use_embedding_cache=False)
    shape = limits.activation_shape(tiny_encoder.model, tiny_encoder.layer_index)
    longest = max(tiny_encoder.token_counts(texts))
    room = shape.batch_bytes(4, longest)  # about 4 of the longest fit
    monkeypatch.setattr(limits, "available_memory", lambda device=None: int(room / limits.MEMORY_FRACTION) + 1)
    forwards = _Forwards(monkeypatch, tiny_encoder)
    got = tiny_encoder.encode(texts, batch_size=32, use_embedding_cache=False)
    assert len(forwards.sizes) > 1 and sum(forwards.sizes) == len(texts), forwards.sizes
    assert forwards.sizes[0] <= 4  # the longest batch was cut to what fits
    assert np.abs(got - want).max() < 1e-5


def test_memory_sequence_too_large_alone_is_refused_before_any_forward(tiny_encoder, monkeypatch):
    from prompteol.encoder import limits
    from prompteol.errors import InputError

    monkeypatch.setattr(limits, "available_memory", lambda device=None: 64 * 1024)  # 64 KiB
    forwards = _Forwards(monkeypatch, tiny_encoder)
    with pytest.raises(limits.MemoryLimitError) as info:
        tiny_encoder.encode(["short", "a longer sentence " * 20, "mid length one"], use_embedding_cache=False)
    assert forwards.sizes == []  # nothing was computed
    err = info.value
    assert isinstance(err, InputError) and err.index == 1 and err.tokens > 300
    message = str(err)
    assert message.startswith(f"texts[1] is {err.tokens} tokens") and "MiB of memory" in message
    assert "64.0 KiB available on cpu" in message


def test_memory_refusal_cli_is_a_one_line_error(tmp_path, fault_cli, monkeypatch):
    from prompteol.encoder import limits

    monkeypatch.setattr(limits, "available_memory", lambda device=None: 64 * 1024)
    src = tmp_path / "in.txt"
    src.write_text("one\n" + "a longer sentence " * 20 + "\n")
    out = tmp_path / "out.npy"
    code, err = fault_cli(*_encode_args(src, out))
    _assert_one_line_error(code, err, "texts[1]", "KiB available")
    assert not out.exists()


def test_memory_refusal_server_is_a_503_and_the_server_stays_up(fault_server, monkeypatch):
    from prompteol.encoder import limits

    monkeypatch.setattr(limits, "available_memory", lambda device=None: 64 * 1024)
    _assert_server_error(fault_server, {"model": FAULT_MODEL, "input": ["a longer sentence " * 20]}, 503, "input",
                         "insufficient_memory", "an input is", "KiB available")  # fmt: skip
    monkeypatch.undo()
    status, payload = _post(fault_server, {"model": FAULT_MODEL, "input": ["a longer sentence " * 20]})
    assert status == 200 and len(payload["data"]) == 1


def test_available_memory_is_a_positive_number():
    from prompteol.encoder.limits import available_memory

    got = available_memory("cpu")
    assert got is not None and got > 0
