"""EncodeOptions: the call options of encode, declared once, validated, carried as one object."""

from __future__ import annotations

import numpy as np
import pytest

from prompteol.encoder.encode_options import EncodeOptions, encode_with, takes_options
from prompteol.errors import ConfigError, InputError

TEXTS = ["A man is playing a guitar.", "Two dogs run in the park.", ""]


def test_options_are_validated_when_built():
    with pytest.raises(InputError, match="batch_size should be >= 1, got 0"):
        EncodeOptions(batch_size=0)
    with pytest.raises(InputError, match="max_batch_tokens should be >= 1 or None"):
        EncodeOptions(max_batch_tokens=0)
    with pytest.raises(ConfigError, match="precision should be one of"):
        EncodeOptions(precision="bf16")
    with pytest.raises(ConfigError, match="truncate_dim"):
        EncodeOptions(truncate_dim=0)
    assert EncodeOptions(prompt="promptbert").prompt.name == "promptbert"  # a preset name becomes its Template


def test_of_applies_what_is_given_over_options():
    base = EncodeOptions(batch_size=8, normalize=True)
    assert EncodeOptions.of(base) is base
    assert EncodeOptions.of(base, batch_size=4, normalize=None) == EncodeOptions(batch_size=4, normalize=True)
    assert EncodeOptions.of(None, show_progress=False) == EncodeOptions(show_progress=False)
    assert EncodeOptions().to_dict()["prompt"] is None
    assert [name for name, _, _ in EncodeOptions.options(("batch_size", "use_embedding_cache"))] == [
        "batch_size", "use_embedding_cache"]  # fmt: skip


def test_encode_takes_options_or_keywords_alike(tiny_encoder):
    opts = EncodeOptions(normalize=True, truncate_dim=8, use_embedding_cache=False)
    np.testing.assert_array_equal(tiny_encoder.encode(TEXTS, options=opts),
                                  tiny_encoder.encode(TEXTS, normalize=True, truncate_dim=8, use_embedding_cache=False))
    # a keyword overrides the options
    got = tiny_encoder.encode(TEXTS, options=opts, truncate_dim=4)
    assert got.shape == (3, 4) and np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-6)


def test_encode_with_passes_options_only_to_encoders_that_take_them(tiny_encoder):
    class Plain:
        def encode(self, sentences):
            return np.zeros((len(sentences), 2))

    assert takes_options(tiny_encoder) and not takes_options(Plain())
    assert encode_with(Plain(), TEXTS, EncodeOptions(batch_size=2)).shape == (3, 2)
    assert encode_with(tiny_encoder, TEXTS, EncodeOptions(truncate_dim=5)).shape == (3, 5)
