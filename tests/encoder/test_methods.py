"""The training-free methods after PromptEOL, each proved on a tiny model (no download)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prompteol import ConfigError, Encoder, EncoderConfig
from prompteol.encoder.prompts.templates import TEMPLATE_SOURCES, TEMPLATES

TEXTS = ["A man is playing a guitar.", "hi", "The quick brown fox jumps over the lazy dog.", "Two dogs run."]
DEMO = [("A man is smoking.", "Smoking")]


@pytest.fixture(scope="module")
def base(test_cache_dir):
    return Encoder.from_pretrained("tiny-random-llama", cache_dir=test_cache_dir)


def _enc(e, texts=TEXTS):
    return e.encode(texts, use_embedding_cache=False)


def _reference_hidden(enc, ids):
    """hidden_states of a plain full forward of the base model (the reference for every check)."""
    with torch.inference_mode():
        return enc.model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states


# ---------------------------------------------------------------------------------------------- templates
@pytest.mark.parametrize("name", ["cot", "ke", "cp-irrelevant", "echo", *[f"metaeol-{i}" for i in range(1, 9)]])
def test_method_templates_have_their_exact_strings_and_sources(name):
    import re
    from pathlib import Path

    assert name in TEMPLATE_SOURCES
    # a copy of shared/docs/beyond.md, committed so the check runs on a fresh clone (tests/data/shared/README.md)
    doc = Path(__file__).resolve().parents[1] / "data" / "shared" / "beyond.md"
    text = doc.read_text()
    if name == "echo":  # the zero-shot form, with the document's {text} slot and its written "\\n"
        want = re.search(r"a plain zero-shot form is `(.+?)`", text).group(1)
        want = want.replace("{text}", "{sentence}").replace("\\n", "\n")
    elif name.startswith("metaeol-"):
        want = re.findall(r"^\d\. `(.+)`$", text, re.M)[int(name.split("-")[1]) - 1]
    else:
        label = {"cot": "Pretended CoT template", "ke": "Knowledge Enhancement template", "cp-irrelevant": "Auxiliary prompt"}
        want = re.search(label[name] + r": `(.+?)`", text).group(1)
    assert TEMPLATES[name].text == want


def test_method_options_are_recorded_in_config_and_fingerprint(base):
    variants = [dict(token_prepending=(1, 2)), dict(contrastive_layer=1), dict(contrastive_layer=1, contrastive_alpha=1.0),
                dict(prompts=("cot",)), dict(prompts=("cot",), combine="concat"), dict(template="echo", pooling="echo")]
    prints = {base.fingerprint}
    for v in variants:
        d = base.derive(**v)
        assert all(d.describe()[k] == EncoderConfig(**v).to_dict()[k] for k in v)
        prints.add(d.fingerprint)
    assert len(prints) == len(variants) + 1


def _method(encoder, name):
    """The encoder's built method of that name (:mod:`prompteol.encoder.methods`)."""
    return next(m for m in encoder.methods if m.name == name)


# ---------------------------------------------------------------------------------------------- token prepending
def test_token_prepending_with_an_empty_range_is_the_plain_encoder(base):
    tp = base.derive(token_prepending=(1, 1))
    assert tp.config.token_prepending is None
    np.testing.assert_array_equal(_enc(tp), _enc(base))


def test_token_prepending_places_the_placeholder_before_the_opening_quote(base):
    tp = base.derive(token_prepending=(0, 2))
    plain = base.prompts.tokenize(base.prompts.prepare(["x"]))[0]
    ids = tp.prompts.tokenize(tp.prompts.prepare(["x"]))[0]
    q = _method(tp, "token_prepending").placeholder_at
    assert len(ids) == len(plain) + 1 and ids[:q] == plain[:q] and ids[q + 1 :] == plain[q:]
    assert base.tokenizer.decode(plain[q:]).startswith('"')  # the opening quote follows the placeholder


@pytest.mark.parametrize(("start", "stop"), [(0, 2), (1, 2), (0, 1)])
def test_token_prepending_replaces_the_placeholder_only_inside_its_range(base, start, stop):
    tp = base.derive(token_prepending=(start, stop), prefix_cache=False)
    q = _method(tp, "token_prepending").placeholder_at
    ids = tp.prompts.tokenize(tp.prompts.prepare(["A man is playing a guitar."]))[0]
    blocks = tp.runner.all_blocks()
    seen, outs = {}, {}

    def record(runner, batch):  # installed after Token Prepending's hooks: sees what each block receives
        pre = [b.register_forward_pre_hook(
            lambda m, a, k, i=i: seen.__setitem__(i, (a[0] if a else k["hidden_states"]).clone()), with_kwargs=True)
            for i, b in enumerate(blocks)]  # fmt: skip
        post = [b.register_forward_hook(lambda m, a, o, i=i: outs.__setitem__(i, (o[0] if isinstance(o, tuple) else o).clone()))
                for i, b in enumerate(blocks)]  # fmt: skip
        return pre + post

    tp.runner.interventions.append(record)
    try:
        tp.encode(["A man is playing a guitar."], use_embedding_cache=False)
    finally:
        tp.runner.interventions.remove(record)
    last = len(ids) - 1
    for i in range(len(blocks)):
        prev_last = outs[i - 1][0, last] if i > 0 else None
        if start <= i < stop:  # replaced by the previous block's last-token state (the input's, for block 0)
            want = prev_last if i > 0 else seen[0][0, last]
            torch.testing.assert_close(seen[i][0, q], want)
        elif i > 0:  # untouched: the previous block's own output at the placeholder
            torch.testing.assert_close(seen[i][0, q], outs[i - 1][0, q])
    # everything but the placeholder row is the plain forward of the same ids below the first replacement
    ref = _reference_hidden(tp, ids)
    torch.testing.assert_close(seen[0][0, :q], ref[0][0, :q])


def test_token_prepending_is_exact_with_the_shared_prefix_and_demonstrations(base):
    tp = base.derive(token_prepending=(0, 2), demonstrations=DEMO)
    np.testing.assert_allclose(_enc(tp), _enc(tp.derive(prefix_cache=False)), atol=1e-5)
    assert len(tp.prompts.prefix_ids()) == _method(tp, "token_prepending").placeholder_at  # the shared part stops before it


# ---------------------------------------------------------------------------------------------- contrastive prompting
def test_contrastive_prompting_replaces_the_last_position_by_alpha_times_a_minus_b(base, monkeypatch):
    """With a captured state B that is not zero and alpha 0.5, the input of block 1's attention output projection
    becomes exactly 0.5 * (A - B) at the last token and stays A elsewhere; the vector equals the plain encoder's
    with that replacement done by hand."""
    from prompteol.encoder.methods.contrastive import attention_output

    text = ["A man is playing a guitar."]
    cp = base.derive(contrastive_layer=1, contrastive_alpha=0.5, prefix_cache=False)
    b = torch.randn(1, 32, generator=torch.Generator().manual_seed(3))  # (N, D): the auxiliary state, not zero
    monkeypatch.setattr(_method(cp, "contrastive_prompting").steering, "capture", lambda runner, seqs, prefix: b)
    target = attention_output(cp.runner.all_blocks()[1])
    seen: dict[str, torch.Tensor] = {}
    pre = target.register_forward_pre_hook(lambda m, args: seen.__setitem__("A", args[0].clone()))  # before steering
    post = target.register_forward_hook(lambda m, args, out: seen.__setitem__("steered", args[0].clone()))
    try:
        got = cp.encode(text, use_embedding_cache=False)
    finally:
        pre.remove()
        post.remove()
    a, steered = seen["A"][0], seen["steered"][0]  # (T, D)
    assert b.abs().min() > 0 and not torch.equal(a[-1], steered[-1])
    torch.testing.assert_close(steered[-1], 0.5 * (a[-1] - b[0]), rtol=0, atol=0)
    torch.testing.assert_close(steered[:-1], a[:-1], rtol=0, atol=0)

    def by_hand(module, args):
        x = args[0].clone()
        x[0, -1] = 0.5 * (x[0, -1] - b[0])
        return (x, *args[1:])

    plain = base.derive(prefix_cache=False)
    h = attention_output(plain.runner.all_blocks()[1]).register_forward_pre_hook(by_hand)
    try:
        want = plain.encode(text, use_embedding_cache=False)
    finally:
        h.remove()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert np.abs(got - plain.encode(text, use_embedding_cache=False)).max() > 1e-3  # the steering did change it


def test_contrastive_prompting_steers_only_the_last_position_at_its_layer(base):
    cp = base.derive(contrastive_layer=1, contrastive_alpha=0.5, prefix_cache=False)
    from prompteol.encoder.methods.contrastive import attention_output

    seen = []
    target = attention_output(cp.runner.all_blocks()[1])
    h = target.register_forward_pre_hook(lambda m, a: seen.append(a[0].clone()))
    try:
        cp.encode(["A man is playing a guitar."], use_embedding_cache=False)
        base.derive(prefix_cache=False).encode(["A man is playing a guitar."], use_embedding_cache=False)
    finally:
        h.remove()
    aux, steered_in, plain_in = seen[0], seen[1], seen[2]  # capture pass, steered pass (hook sees A), plain pass
    torch.testing.assert_close(steered_in, plain_in)  # the hook sees the unmodified A (it changes it after)
    assert aux.shape[-1] == plain_in.shape[-1]
    # the vectors differ from plain, and the change follows alpha * (A - B) at the last token only
    assert np.abs(_enc(cp) - _enc(base)).max() > 1e-4


def test_contrastive_prompting_is_exact_with_the_shared_prefix(base):
    cp = base.derive(contrastive_layer=0, contrastive_mode="norm", demonstrations=DEMO)
    np.testing.assert_allclose(_enc(cp), _enc(cp.derive(prefix_cache=False)), atol=1e-5)


def test_contrastive_layer_out_of_range_is_a_clear_error(base):
    with pytest.raises(ConfigError, match="out of range"):
        base.derive(contrastive_layer=7)


# ---------------------------------------------------------------------------------------------- ensembles
def test_ensemble_of_one_prompt_twice_equals_the_plain_encoder(base):
    np.testing.assert_array_equal(_enc(base.derive(prompts=("prompteol",))), _enc(base))


def test_ensemble_mean_and_concat_of_several_prompts(base):
    members = [base.derive(template=t) for t in ("prompteol", "cot", "ke")]
    vecs = [_enc(m) for m in members]
    np.testing.assert_allclose(_enc(base.derive(prompts=("cot", "ke"))), np.mean(vecs, axis=0), atol=1e-6)
    cat = base.derive(prompts=("cot", "ke"), combine="concat")
    assert cat.dim == 3 * base.dim
    np.testing.assert_allclose(_enc(cat), np.concatenate(vecs, axis=1), atol=1e-6)


# ---------------------------------------------------------------------------------------------- echo
def test_echo_pools_exactly_the_second_copy(base):
    echo = base.derive(template="echo", pooling="echo")
    sentence = echo.prompts.prepare(["A man is playing a guitar."])[0]
    ids = echo.prompts.tokenize([sentence])[0]
    start = _method(echo, "echo").pool_starts(echo.prompts, [sentence])[0]
    copy = echo.tokenizer(" " + sentence, add_special_tokens=False)["input_ids"]
    assert ids[start:] == copy  # the span is the second copy (with its leading space), nothing else
    ref = _reference_hidden(echo, ids)[-1][0]  # (T, H)
    got = _enc(echo, ["A man is playing a guitar."])[0]
    np.testing.assert_allclose(got, ref[start:].mean(dim=0).numpy(), atol=1e-5)
    batch = _enc(echo)  # batched, padded: equal to one by one
    single = np.stack([_enc(echo, [t])[0] for t in TEXTS])
    np.testing.assert_allclose(batch, single, atol=1e-5)


def test_echo_pooling_needs_an_echo_template():
    with pytest.raises(ConfigError, match="echo template"):
        EncoderConfig(pooling="echo")


def test_methods_compose(base):
    combo = base.derive(token_prepending=(0, 1), contrastive_layer=1, demonstrations=DEMO, layer=-2)
    v = _enc(combo)
    assert v.shape == (len(TEXTS), base.dim) and np.isfinite(v).all()
    np.testing.assert_allclose(v, _enc(combo.derive(prefix_cache=False)), atol=1e-5)


# ---------------------------------------------------------------------------------------------- the protocol
def test_a_new_method_is_a_registered_class_and_the_encoder_is_not_edited(base):
    """A method the encoder has never heard of: registered by name, turned on by its config, its read-out
    applied."""
    from prompteol.encoder.methods import METHODS, Method, register

    class Doubled(Method):  # a read-out map
        name = "doubled-for-test"

        @classmethod
        def applies(cls, config):
            return config.layer == -1 and config.pooling == "mean"

        def readout(self, vectors):
            return 2 * vectors

    register(Doubled)
    try:
        mean = base.derive(pooling="mean")
        assert [m.name for m in mean.methods] == ["doubled-for-test"]
        doubled = _enc(mean)
    finally:
        del METHODS["doubled-for-test"]
    np.testing.assert_allclose(doubled, 2 * _enc(base.derive(pooling="mean")), rtol=1e-6)
    assert base.derive(pooling="mean").methods == []


def test_methods_are_built_in_registry_order_and_an_ensemble_alone(base):
    from prompteol.encoder.methods import METHODS

    assert list(METHODS) == ["ensemble", "embed_filter", "token_prepending", "contrastive_prompting", "echo"]
    both = base.derive(token_prepending=(0, 1), contrastive_layer=1)
    assert [m.name for m in both.methods] == ["token_prepending", "contrastive_prompting"]
    ensemble = base.derive(prompts=("cot",), token_prepending=(0, 1))
    assert [m.name for m in ensemble.methods] == ["ensemble"]  # its members apply Token Prepending themselves
    assert all([m.name for m in member.methods] == ["token_prepending"] for member in ensemble.methods[0].members)
