"""The exported graph's module (:mod:`prompteol.encoder.forward.export`): the grouped attention (no broadcast) and the
prefix-apart one give the hidden states of the expanded (eager) attention, with and without a prefix, at the top and
below it; models whose blocks have no ``self_attn``, or with many query heads a key/value head, keep the expanded
graph; a bad attention name is refused."""

from __future__ import annotations

import pytest
import torch

from prompteol import Encoder
from prompteol.encoder.forward.export import ATTENTIONS, GROUPED_MAX_QUERY_HEADS, GraphExport, default_attention


def _inputs(model, layers: int, prefix: int, heads: int, head_dim: int):
    """Two rows (the second padded on the right), an additive mask over prefix + tokens, positions after the
    prefix, and a random prefix's keys/values (batch 1) for ``layers`` blocks."""
    g = torch.Generator().manual_seed(0)
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 0]])
    t = ids.shape[1]
    real = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]).bool()
    causal = torch.arange(prefix + t).unsqueeze(0) <= (prefix + torch.arange(t)).unsqueeze(1)
    allowed = causal[None, None] & torch.cat([torch.ones(2, prefix, dtype=torch.bool), real], 1)[:, None, None, :]
    mask = torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)
    positions = prefix + torch.arange(t).expand(2, t)
    past = [torch.randn(1, heads, prefix, head_dim, generator=g) for _ in range(2 * layers)]
    return (ids, mask, positions, *past), real


@pytest.mark.parametrize("arch", ["tiny-random-llama", "tiny-random-qwen2", "tiny-random-gemma3"])
@pytest.mark.parametrize("prefix", [0, 3])
@pytest.mark.parametrize("below_top", [False, True])
def test_grouped_attention_equals_the_expanded_one(test_cache_dir, arch, prefix, below_top):
    enc = Encoder.from_pretrained(arch, cache_dir=test_cache_dir, embedding_cache=False)
    runner = enc.runner
    model, blocks, n = runner.model, list(runner.all_blocks()), runner.num_layers
    layer = n - 1 if below_top else n
    cfg = model.config.get_text_config()
    heads = cfg.num_key_value_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    assert cfg.num_attention_heads > heads  # grouped-query heads: the grouping is exercised
    args, real = _inputs(model, layer, prefix, heads, head_dim)
    impl = model.config._attn_implementation
    got = {}
    for attention in ATTENTIONS:
        with GraphExport(model, blocks, layer, n, attention).traced() as module, torch.no_grad():
            assert not module.training and not model.training
            got[attention] = module(*args)
    assert len(runner.all_blocks()) == n and model.config._attn_implementation == impl  # the model as it was
    assert model.training is False
    assert got["grouped"].shape == (2, 4, cfg.hidden_size)
    for attention in ATTENTIONS[:-1]:
        diff = (got[attention] - got["expanded"])[real].abs().max()
        assert diff <= 1e-5 * max(1.0, float(got["expanded"][real].abs().max())), attention
    assert not any(hasattr(blk.self_attn, "prompteol_prefix") for blk in blocks)  # nothing left on the modules


def test_models_without_self_attn_keep_the_expanded_graph(test_cache_dir):
    enc = Encoder.from_pretrained("tiny-random-gpt2", cache_dir=test_cache_dir, embedding_cache=False)
    blocks = list(enc.runner.all_blocks())
    assert default_attention(blocks) == "expanded"
    assert GraphExport(enc.runner.model, blocks, 2, 2).attention == "expanded"
    with pytest.raises(ValueError, match="self_attn"):
        GraphExport(enc.runner.model, blocks, 2, 2, "grouped")
    llama = Encoder.from_pretrained("tiny-random-llama", cache_dir=test_cache_dir, embedding_cache=False)
    assert default_attention(list(llama.runner.all_blocks())) == "grouped"
    with pytest.raises(ValueError, match="unknown attention"):
        GraphExport(llama.runner.model, list(llama.runner.all_blocks()), 2, 2, "flash")


def test_many_query_heads_a_key_value_head_keep_the_expanded_graph():
    """Measured slower grouped on qwen2.5-coder-0.5b (7 query heads a key/value head): expanded there."""

    class Block:
        def __init__(self, groups):
            self.self_attn = type("Attn", (), {"num_key_value_groups": groups})()

    assert default_attention([Block(1), Block(1)]) == "grouped"  # no grouped-query attention (opt)
    assert default_attention([Block(GROUPED_MAX_QUERY_HEADS)]) == "grouped"
    assert default_attention([Block(GROUPED_MAX_QUERY_HEADS + 1)]) == "expanded"
    assert default_attention([Block(7), Block(7)]) == "expanded"
