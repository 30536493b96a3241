"""EmbedFilter (embed_filter, embed_filter_band) on tiny random models: the vectors equal an explicit numpy
SVD projection of the unfiltered vectors, computed here from the weights on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from prompteol import ConfigError, Encoder, EncoderConfig
from prompteol.options import values_from_env

TEXTS = ["A man is playing a guitar.", "hi", "The quick brown fox jumps over the lazy dog.", "Two dogs run."]
DEMO = [("A man is smoking.", "Smoking")]


@pytest.fixture(scope="module")
def llama(test_cache_dir):  # untied: the LM head is read from the folder
    return Encoder.from_pretrained("tiny-random-llama", cache_dir=test_cache_dir)


def _enc(e, texts=TEXTS):
    return e.encode(texts, use_embedding_cache=False)


def _reference_basis(enc) -> np.ndarray:
    """Vh (H, H) by numpy's SVD of the LM head on disk (tied: the token embeddings), signs made canonical
    (largest-magnitude component positive)."""
    from safetensors.numpy import load_file

    tensors = load_file(str(Path(enc.source["path"]) / "model.safetensors"))
    head = [k for k in tensors if k.endswith("lm_head.weight")]
    if enc.model.config.tie_word_embeddings:
        head = [k for k in tensors if k.endswith(("embed_tokens.weight", "wte.weight"))]
    assert len(head) == 1, sorted(tensors)
    _, s, vh = np.linalg.svd(tensors[head[0]].astype(np.float64), full_matrices=False)
    assert np.all(np.diff(s) <= 0)
    top = np.abs(vh).argmax(axis=1)
    return vh * np.sign(vh[np.arange(len(vh)), top])[:, None]


def _band(h: int, k: int, band: str) -> list[int]:
    return {"middle": list(range((h - k) // 2, (h - k) // 2 + k)), "top": list(range(k)),
            "bottom": list(range(h - k, h)), "ends": list(range(k // 2)) + list(range(h - k // 2, h))}[band]  # fmt: skip


@pytest.mark.parametrize("model", ["tiny-random-llama", "tiny-random-gemma3", "tiny-random-gpt2"])
@pytest.mark.parametrize("band", ["middle", "top", "bottom", "ends"])
def test_the_filter_is_the_svd_band_projection_of_the_plain_vector(test_cache_dir, model, band):
    plain = Encoder.from_pretrained(model, cache_dir=test_cache_dir)
    vh = _reference_basis(plain)
    h = vh.shape[0]
    for tau in (2, 4):
        filtered = plain.derive(embed_filter=tau, embed_filter_band=band)
        k = h // tau
        want = _enc(plain).astype(np.float64) @ vh[_band(h, k, band)].T
        got = _enc(filtered)
        assert got.shape == (len(TEXTS), len(_band(h, k, band))) == (len(TEXTS), filtered.dim)
        np.testing.assert_allclose(got, want, atol=2e-4, rtol=1e-4)


def test_tau_1_keeps_every_dimension_and_is_the_plain_encoder(llama):
    one = llama.derive(embed_filter=1)
    assert one.config.embed_filter is None and one.fingerprint == llama.fingerprint
    np.testing.assert_array_equal(_enc(one), _enc(llama))
    assert one.dim == llama.dim == 32


def test_every_filter_setting_has_its_own_fingerprint(llama):
    settings = [{}, {"embed_filter": 2}, {"embed_filter": 4}, {"embed_filter": 2, "embed_filter_band": "top"}]
    assert len({llama.derive(**s).fingerprint for s in settings}) == len(settings)


def test_derive_on_one_loaded_model_shares_the_basis_and_gets_the_dimension_right(llama):
    from prompteol.encoder.methods import embed_filter

    two = llama.derive(embed_filter=2)
    assert two.dim == 16 and two.derive(embed_filter=4).dim == 8
    assert two.derive(embed_filter=None).dim == 32  # a derived encoder never inherits another dimension
    assert len(embed_filter._BASES[llama.model]) == 1  # one basis per loaded model and weight
    assert _enc(two).shape == (len(TEXTS), 16)


def test_it_composes_with_demonstrations_pooling_prefix_cache_packing_and_ensembles(llama):
    vh = _reference_basis(llama)
    band = vh[_band(32, 16, "middle")]
    for opts in (dict(demonstrations=DEMO), dict(pooling="mean"), dict(template="echo", pooling="echo"),
                 dict(prefix_cache=False), dict(packing=True), dict(token_prepending=(0, 1)), dict(contrastive_layer=1)):  # fmt: skip
        plain = llama.derive(**opts)
        want = _enc(plain) @ band.T
        np.testing.assert_allclose(_enc(plain.derive(embed_filter=2)), want, atol=2e-4, err_msg=str(opts))
    concat = llama.derive(embed_filter=2, prompts=("cot",), combine="concat")
    assert concat.dim == 32 and _enc(concat).shape == (len(TEXTS), 32)


def test_bad_values_are_refused_with_what_is_valid(llama):
    for tau in (0, -2, True, 2.5, "2"):
        with pytest.raises(ConfigError, match="embed_filter should be an int"):
            EncoderConfig(embed_filter=tau)
    with pytest.raises(ConfigError, match=r"embed_filter_band should be one of \['middle'"):
        EncoderConfig(embed_filter_band="edge")
    with pytest.raises(ConfigError, match=r"keeps 32 // 64 = 0 .* valid: 1\.\.32"):
        llama.derive(embed_filter=64)
    with pytest.raises(ConfigError, match=r"valid: 1\.\.16"):
        llama.derive(embed_filter=32, embed_filter_band="ends")
    with pytest.raises(ConfigError, match="last layer only"):
        llama.derive(embed_filter=2, layer=-2)
    assert llama.derive(embed_filter=2, layer=2).dim == 16  # the last layer by its index


def test_it_is_a_flag_a_server_variable_and_a_searchable_grid_axis():
    from prompteol.demos.search import parse_grid
    from prompteol.encoder.config import encoder_options

    opts = encoder_options()
    assert values_from_env({"PROMPTEOL_EMBED_FILTER": "4", "PROMPTEOL_EMBED_FILTER_BAND": "top"}, opts) == {
        "embed_filter": 4, "embed_filter_band": "top"}  # fmt: skip
    assert values_from_env({"PROMPTEOL_EMBED_FILTER": "none"}, opts) == {"embed_filter": None}
    assert [g["embed_filter"] for g in parse_grid(["embed_filter=none,2,4,8"])] == [None, 2, 4, 8]
    assert set(EncoderConfig.fields_of_kind("prompt")) >= {"embed_filter", "embed_filter_band"}


def test_the_embedding_cache_never_mixes_filtered_and_plain_vectors(tmp_path, llama):
    from prompteol.cache import EmbeddingCache

    cache = EmbeddingCache(tmp_path / "emb.sqlite")
    plain = llama.derive()
    plain.embedding_cache = cache
    first = plain.encode(TEXTS)
    filtered = llama.derive(embed_filter=2)
    filtered.embedding_cache = cache
    assert filtered.encode(TEXTS).shape == (len(TEXTS), 16) and first.shape == (len(TEXTS), 32)
    assert cache.count(plain.fingerprint) == cache.count(filtered.fingerprint) == len(TEXTS)
