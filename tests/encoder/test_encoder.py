"""The encoder core on tiny random models of each architecture (no download)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from prompteol import ConfigError, Encoder, EncoderConfig, InputError
from prompteol.encoder.batching import plan_batches
from prompteol.models.loading import resolve_layer

ARCHS = ["llama", "qwen2", "opt", "gpt2", "gemma3"]
TEXTS = [
    "A man is playing a guitar.",
    "hi",
    "The quick brown fox jumps over the lazy dog, then sleeps.",
    "Two dogs run.",
]
DEMO = [("A man is smoking.", "Smoking")]


@pytest.fixture(scope="module", params=ARCHS)
def arch_encoder(request, test_cache_dir):
    return Encoder.from_pretrained(f"tiny-random-{request.param}", cache_dir=test_cache_dir)


def _reference_model(name: str, test_cache_dir):
    """The same weights as a full causal LM (with its LM head), as the reference recipe loads them."""
    from transformers import AutoModelForCausalLM

    from prompteol.models.loading import resolve_model

    path = resolve_model(name, cache_dir=test_cache_dir).path
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def _skip_left_on_sliding(enc, side):
    # transformers builds sliding-window masks from token indices, so left padding longer than the
    # window shifts it; the encoder pads on the right by default for that reason.
    if side == "left" and getattr(enc.model.config, "sliding_window", None):
        pytest.skip("left padding is not exact for sliding-window attention (the default is right)")


@pytest.mark.parametrize("side", ["left", "right"])
def test_batch_equals_single(arch_encoder, side):
    enc = arch_encoder
    _skip_left_on_sliding(enc, side)
    enc.runner.padding_side = side
    try:
        batch = enc.encode(TEXTS, batch_size=8, use_embedding_cache=False)
        single = np.stack([enc.encode([t], use_embedding_cache=False)[0] for t in TEXTS])
    finally:
        enc.runner.padding_side = "right"
    assert batch.shape == (len(TEXTS), enc.dim) and batch.dtype == np.float32
    np.testing.assert_allclose(batch, single, atol=1e-5)


def test_padding_side_does_not_matter(arch_encoder):
    enc = arch_encoder
    _skip_left_on_sliding(enc, "left")
    right = enc.encode(TEXTS, use_embedding_cache=False)
    enc.runner.padding_side = "left"
    try:
        left = enc.encode(TEXTS, use_embedding_cache=False)
    finally:
        enc.runner.padding_side = "right"
    np.testing.assert_allclose(left, right, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("layer", [0, 1, -2, -1])
def test_layer_equals_hidden_states_of_full_forward(arch, layer, test_cache_dir):
    name = f"tiny-random-{arch}"
    enc = Encoder.from_pretrained(name, layer=layer, cache_dir=test_cache_dir)
    ref = _reference_model(name, test_cache_dir)
    sentence = enc.prompts.prepare(["A man is playing a guitar."])
    ids = torch.tensor(enc.prompts.tokenize(sentence))
    with torch.no_grad():
        hs = ref(input_ids=ids, output_hidden_states=True).hidden_states
    expected = hs[layer][0, -1].numpy()
    blocks = [m for m in enc.model.modules() if type(m).__name__.endswith(("DecoderLayer", "Block"))]
    calls = [0] * len(blocks)
    handles = [b.register_forward_hook(lambda *a, i=i: calls.__setitem__(i, calls[i] + 1)) for i, b in enumerate(blocks)]
    try:
        got = enc.encode(sentence, use_embedding_cache=False)[0]
    finally:
        for h in handles:
            h.remove()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # the forward stops at the requested layer: no block above it is ever computed
    k = resolve_layer(layer, enc.num_layers)
    assert k == enc.layer_index
    assert all(c > 0 for c in calls[:k]) and not any(calls[k:]), calls


def test_derive_reads_another_layer_of_the_same_model(tiny_encoder, test_cache_dir):
    top = tiny_encoder.encode(TEXTS, use_embedding_cache=False)
    low = tiny_encoder.derive(layer=1)
    assert low.model is tiny_encoder.model and low.fingerprint != tiny_encoder.fingerprint
    fresh = Encoder.from_pretrained("tiny-random-llama", layer=1, cache_dir=test_cache_dir)
    np.testing.assert_allclose(low.encode(TEXTS, use_embedding_cache=False),
                               fresh.encode(TEXTS, use_embedding_cache=False), atol=1e-6)  # fmt: skip
    np.testing.assert_allclose(tiny_encoder.encode(TEXTS, use_embedding_cache=False), top, atol=0)


def test_no_lm_head_in_encoder(tiny_encoder):
    names = [n for n, _ in tiny_encoder.model.named_modules()]
    assert not any("lm_head" in n for n in names)


def test_mean_pooling_is_true_masked_mean(test_cache_dir):
    name = "tiny-random-llama"
    enc = Encoder.from_pretrained(name, pooling="mean", cache_dir=test_cache_dir)
    ref = _reference_model(name, test_cache_dir)
    vecs = enc.encode(TEXTS, use_embedding_cache=False)  # batched: padded rows must not dilute the mean
    for text, vec in zip(TEXTS, vecs):
        ids = torch.tensor(enc.prompts.tokenize(enc.prompts.prepare([text])))
        with torch.no_grad():
            h = ref(input_ids=ids, output_hidden_states=True).hidden_states[-1][0]  # (T, H)
        np.testing.assert_allclose(vec, h.mean(dim=0).numpy(), atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_prefix_cache_equals_full_recomputation(arch, pooling, test_cache_dir):
    enc = Encoder.from_pretrained(
        f"tiny-random-{arch}", demonstrations=DEMO, pooling=pooling, cache_dir=test_cache_dir
    )
    assert enc.prefix.get(enc.runner) is not None, "the shared prefix should be usable for this architecture"
    cached = enc.encode(TEXTS, use_embedding_cache=False)
    full = enc.derive(prefix_cache=False).encode(TEXTS, use_embedding_cache=False)
    np.testing.assert_allclose(cached, full, atol=1e-4)


def test_prefix_boundary_merge_falls_back_to_full(tiny_encoder, monkeypatch):
    """If the tokenizer merges tokens across the prefix boundary, those prompts are computed in full."""
    enc = tiny_encoder
    prefix = enc.prompts.prefix_ids()
    seqs = enc.prompts.tokenize(enc.prompts.prepare(TEXTS[:2]))
    assert all(s[: len(prefix)] == prefix for s in seqs)
    # Simulate a merge: the second prompt's tokens no longer start with the prefix tokens.
    merged = [seqs[0], [seqs[1][0]] + [seqs[1][1] + 1] + seqs[1][2:]]
    calls = {"full": 0, "prefix": 0}
    real_full, real_prefix = enc.runner.full, enc.runner.with_prefix
    monkeypatch.setattr(enc.runner, "full", lambda s, **k: (calls.__setitem__("full", calls["full"] + len(s)), real_full(s, **k))[1])
    monkeypatch.setattr(
        enc.runner, "with_prefix", lambda p, s, **k: (calls.__setitem__("prefix", calls["prefix"] + len(s)), real_prefix(p, s, **k))[1]
    )
    with torch.inference_mode():
        got = enc._vectors(merged)
        want = real_full(merged)
    assert calls == {"full": 1, "prefix": 1}
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


def test_pad_token_is_assigned_without_changing_vectors(test_cache_dir):
    enc = Encoder.from_pretrained("tiny-random-gpt2", cache_dir=test_cache_dir)  # GPT-2 has no pad token
    assert enc.tokenizer.pad_token is not None
    batch = enc.encode(TEXTS, use_embedding_cache=False)
    single = np.stack([enc.encode([t], use_embedding_cache=False)[0] for t in TEXTS])
    np.testing.assert_allclose(batch, single, atol=1e-5)


def test_order_is_restored_and_duplicates_computed_once(tiny_encoder, monkeypatch):
    texts = ["b b b b b b b b", "a", "b b b b b b b b", "c c c"]
    seen = []
    real = tiny_encoder._vectors
    monkeypatch.setattr(tiny_encoder, "_vectors", lambda seqs, **k: (seen.extend(seqs), real(seqs, **k))[1])
    out = tiny_encoder.encode(texts, batch_size=2, use_embedding_cache=False)
    assert len(seen) == 3
    np.testing.assert_array_equal(out[0], out[2])
    np.testing.assert_allclose(out[1], tiny_encoder.encode(["a"], use_embedding_cache=False)[0], atol=1e-5)


def test_empty_input_gives_empty_array(tiny_encoder):
    out = tiny_encoder.encode([])
    assert out.shape == (0, tiny_encoder.dim) and out.dtype == np.float32


def test_non_string_item_names_its_index(tiny_encoder):
    with pytest.raises(InputError, match=r"texts\[1\]"):
        tiny_encoder.encode(["ok", 3, "x"])
    with pytest.raises(InputError, match="single string"):
        tiny_encoder.encode("not a list")


def test_empty_string_is_encoded_with_the_template(tiny_encoder):
    out = tiny_encoder.encode(["", "x"], use_embedding_cache=False)
    assert out.shape == (2, tiny_encoder.dim) and np.isfinite(out).all()
    assert tiny_encoder.prompts.render(tiny_encoder.prompts.prepare([""])[0]) == 'This sentence : "" means in one word:"'


def test_empty_string_without_tokens_is_a_clear_error(test_cache_dir):
    enc = Encoder.from_pretrained("tiny-random-qwen2", template="raw", cache_dir=test_cache_dir)  # no BOS
    with pytest.raises(InputError, match=r"texts\[0\].*no tokens"):
        enc.encode([""])


def test_long_text_truncated_only_with_max_length(test_cache_dir, caplog):
    long = "word " * 300
    enc = Encoder.from_pretrained("tiny-random-llama", cache_dir=test_cache_dir)
    assert len(enc.prompts.tokenize(enc.prompts.prepare([long]))[0]) > 1000  # no truncation by default
    short = Encoder.from_pretrained("tiny-random-llama", max_length=16, cache_dir=test_cache_dir)
    with caplog.at_level(logging.WARNING):
        prepared = short.prompts.prepare([long, "short"])
    assert "cut to max_length=16" in caplog.text
    assert prepared[1] == "short."
    assert len(short.tokenizer(prepared[0], add_special_tokens=False)["input_ids"]) <= 17  # 16 + normalisation '.'
    # the template stays intact around the cut sentence
    assert short.prompts.render(prepared[0]).endswith('" means in one word:"')


def test_normalize_option(tiny_encoder):
    assert tiny_encoder.prompts.prepare(['Is it "ok"?']) == ["Is it 'ok'."]
    v = tiny_encoder.encode(["x", "y"], normalize=True, use_embedding_cache=False)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)


def test_fingerprint_stable_and_sensitive(test_cache_dir):
    a = Encoder.from_pretrained("tiny-random-llama", cache_dir=test_cache_dir)
    b = Encoder.from_pretrained("tiny-random-llama", cache_dir=test_cache_dir, layer=a.num_layers)
    assert a.fingerprint == b.fingerprint  # -1 and num_layers are the same layer
    others = [
        dict(demonstrations=DEMO),
        dict(template="promptbert"),
        dict(layer=1),
        dict(pooling="mean"),
        dict(dtype="bfloat16"),
        dict(normalize_text=False),
    ]
    fps = {Encoder.from_pretrained("tiny-random-llama", cache_dir=test_cache_dir, **o).fingerprint for o in others}
    assert len(fps) == len(others) and a.fingerprint not in fps
    assert Encoder.from_pretrained("tiny-random-qwen2", cache_dir=test_cache_dir).fingerprint != a.fingerprint


def test_config_roundtrip_json(tiny_encoder, tmp_path):
    import json

    desc = tiny_encoder.describe()
    json.dumps(desc)  # JSON-serialisable
    cfg = EncoderConfig(model="tiny-random-llama", demonstrations=DEMO, layer=1, pooling="mean")
    path = tmp_path / "cfg.json"
    cfg.to_json(path)
    assert EncoderConfig.from_json(path) == cfg


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(pooling="max"), "pooling should be one of"),
        (dict(dtype="int4"), "dtype should be one of"),
        (dict(layer="last"), "layer should be an int"),
        (dict(template="raw", demonstrations=DEMO), "does not take demonstrations"),
        (dict(max_length=0), "max_length"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        EncoderConfig(**kwargs)


def test_layer_out_of_range(test_cache_dir):
    with pytest.raises(ConfigError, match="out of range"):
        Encoder.from_pretrained("tiny-random-llama", layer=7, cache_dir=test_cache_dir)


def test_plan_batches_keeps_groups_apart():
    lengths = [5, 50, 10, 40, 45, 3, 7]
    groups = [0, 1, 0, 0, 1, 0, 0]
    batches = plan_batches(lengths, batch_size=3, groups=groups)
    assert [[groups[i] for i in b] for b in batches] == [[0, 0, 0], [0, 0], [1, 1]]  # group 0 first, never mixed
    assert batches[0] == [3, 2, 6] and batches[-1] == [1, 4]  # longest first inside each group
    assert sorted(i for b in batches for i in b) == list(range(7))
    with pytest.raises(InputError, match="groups has 2 keys for 7 lengths"):
        plan_batches(lengths, batch_size=3, groups=[0, 1])


def test_prompts_that_miss_the_prefix_are_batched_apart(tiny_encoder):
    """A batch never mixes prompts that run against the shared prefix with those that cannot (two model calls,
    one of them small): the merged ones get batches of their own, and every vector is what it was."""
    enc = tiny_encoder
    sentences = enc.prompts.prepare(TEXTS[:4])
    seqs = enc.prompts.tokenize(sentences)
    merged = [seqs[0], [seqs[1][0], seqs[1][1] + 1, *seqs[1][2:]], seqs[2], [seqs[3][0], seqs[3][1] + 1, *seqs[3][2:]]]
    prefix = enc.prefix.get(enc.runner)
    assert [prefix.starts(s) for s in merged] == [True, False, True, False]
    batches = list(enc.iter_batches(sentences, 4, None, ids_of=dict(zip(sentences, merged))))
    assert sorted(sorted(b) for b, _ in batches) == [[0, 2], [1, 3]]
    with torch.inference_mode():
        want = enc.runner.vectors(merged, prefix).float().numpy()
    for batch, vecs in batches:
        np.testing.assert_allclose(vecs, want[batch], atol=1e-4, rtol=0)


def test_plan_batches_sorted_and_budgeted():
    lengths = [5, 50, 10, 40, 45, 3]
    batches = plan_batches(lengths, batch_size=2)
    assert [len(b) for b in batches] == [2, 2, 2]
    assert batches[0] == [1, 4]  # longest first
    assert sorted(i for b in batches for i in b) == list(range(6))
    budget = plan_batches(lengths, batch_size=10, max_batch_tokens=100)
    assert all(len(b) * max(lengths[i] for i in b) <= 100 or len(b) == 1 for b in budget)
    with pytest.raises(InputError):
        plan_batches(lengths, batch_size=0)


def test_embed_has_gradients_and_matches_encode(tiny_encoder):
    out = tiny_encoder.embed(TEXTS[:2])
    assert out.requires_grad
    np.testing.assert_allclose(out.detach().numpy(), tiny_encoder.encode(TEXTS[:2], use_embedding_cache=False), atol=1e-5)


def test_cache_serves_second_call_without_forward(tmp_path, test_cache_dir, monkeypatch):
    from prompteol import EmbeddingCache

    cache = EmbeddingCache(tmp_path / "e.sqlite")
    enc = Encoder.from_pretrained("tiny-random-llama", embedding_cache=cache, cache_dir=test_cache_dir)
    first = enc.encode(TEXTS)
    assert cache.count(enc.fingerprint) == len(TEXTS)
    monkeypatch.setattr(enc, "_vectors", lambda *a, **k: pytest.fail("forward called on a cache hit"))
    np.testing.assert_array_equal(enc.encode(TEXTS), first)


def test_derive_shares_model_and_changes_prompt(tiny_encoder):
    d = tiny_encoder.derive(demonstrations=DEMO)
    assert d.model is tiny_encoder.model and d.fingerprint != tiny_encoder.fingerprint
    assert d.prompts.render("x").startswith('This sentence : "A man is smoking." means in one word:"Smoking".')
    same = Encoder(tiny_encoder.model, tiny_encoder.tokenizer, EncoderConfig(model="tiny-random-llama", demonstrations=DEMO),
                   identity=tiny_encoder.identity, num_layers=tiny_encoder.num_layers)  # fmt: skip
    np.testing.assert_allclose(d.encode(TEXTS, use_embedding_cache=False), same.encode(TEXTS, use_embedding_cache=False), atol=1e-6)
    assert same.fingerprint == d.fingerprint
    with pytest.raises(ConfigError, match="cannot change"):
        tiny_encoder.derive(dtype="bfloat16")


def test_cache_survives_a_kill_mid_run(tmp_path, test_cache_dir):
    """A process killed (SIGKILL) while encoding leaves only complete, correct rows; a rerun finishes the job."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from prompteol import EmbeddingCache

    db = tmp_path / "e.sqlite"
    texts = [f"sentence number {i} " + "word " * (i % 9) for i in range(60)]
    (tmp_path / "texts.txt").write_text("\n".join(texts), encoding="utf-8")
    code = f"""
import time, torch
torch.set_num_threads(1)
from prompteol import Encoder, EmbeddingCache
enc = Encoder.from_pretrained("tiny-random-llama", embedding_cache=EmbeddingCache({str(db)!r}), cache_dir={str(test_cache_dir)!r})
real = enc._vectors
calls = []
def slow(seqs, **kw):
    calls.append(1)
    if len(calls) == 3:  # two batches are stored; the third never finishes
        print("STORED", flush=True)
        time.sleep(60)
    return real(seqs, **kw)
enc._vectors = slow
enc.encode(open({str(tmp_path / "texts.txt")!r}, encoding="utf-8").read().split("\\n"), batch_size=8)
"""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        line = ""
        while "STORED" not in line and time.monotonic() < deadline:
            line = proc.stdout.readline() or line
            if proc.poll() is not None:
                break
        assert "STORED" in line, "the child never reached its third batch"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    enc = Encoder.from_pretrained("tiny-random-llama", embedding_cache=EmbeddingCache(db), cache_dir=test_cache_dir)
    cache = EmbeddingCache(db)
    stored = cache.get_many(enc.fingerprint, enc.prompts.prepare(texts))
    assert len(stored) == 16, "exactly the two finished batches were kept"
    fresh = dict(zip(enc.prompts.prepare(texts), enc.encode(texts, use_embedding_cache=False)))
    for sentence, vec in stored.items():
        np.testing.assert_allclose(vec, fresh[sentence], atol=1e-5)
    np.testing.assert_allclose(enc.encode(texts), enc.encode(texts, use_embedding_cache=False), atol=1e-5)
    assert cache.count(enc.fingerprint) == len(texts)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("pooling", ["last", "mean"])
@pytest.mark.parametrize("demos", [(), DEMO], ids=["no-demo", "demo"])
def test_packed_batches_equal_the_padded_path(arch, pooling, demos, test_cache_dir):
    texts = TEXTS + ["x", "a much longer sentence that needs more tokens than the others here", "mid length one"]
    enc = Encoder.from_pretrained(f"tiny-random-{arch}", pooling=pooling, demonstrations=demos, cache_dir=test_cache_dir)
    padded = enc.encode(texts, use_embedding_cache=False)
    packed = enc.derive(packing=True)
    calls = []
    real = packed.runner.packed
    packed.runner.packed = lambda *a, **k: (calls.append(1), real(*a, **k))[1]
    got = packed.encode(texts, use_embedding_cache=False)
    window = getattr(enc.model.config.get_text_config(), "sliding_window", None)
    longest = max(len(s) for s in enc.prompts.tokenize(enc.prompts.prepare(texts)))
    # packing is used unless a sequence is longer than a sliding attention window (tiny Gemma 3: 8)
    assert bool(calls) == (window is None or longest <= window), (window, longest)
    np.testing.assert_allclose(got, padded, atol=1e-4)


def test_pack_rows_fill_rows_and_keep_every_index():
    from prompteol.encoder.forward.runner import pack_rows

    rows = pack_rows([5, 3, 8, 1, 9, 2, 30], 10)
    assert sorted(i for r in rows for i in r) == list(range(7))
    lengths = [5, 3, 8, 1, 9, 2, 30]
    assert all(sum(lengths[i] for i in r) <= 10 or len(r) == 1 for r in rows)
    assert [6] in rows  # longer than a row: alone


def test_packed_rows_on_a_sliding_window_model_within_the_window(test_cache_dir):
    enc = Encoder.from_pretrained("tiny-random-gemma3", template="raw", cache_dir=test_cache_dir)  # window: 16
    texts = ["hi", "a dog", "two cats.", "x", "rain today"]
    calls = []
    packed = enc.derive(packing=True)
    real = packed.runner.packed
    packed.runner.packed = lambda *a, **k: (calls.append(1), real(*a, **k))[1]
    np.testing.assert_allclose(packed.encode(texts, use_embedding_cache=False),
                               enc.encode(texts, use_embedding_cache=False), atol=1e-4)  # fmt: skip
    assert calls
