"""The contrastive loss against a hand computation; GradCache against the plain backward."""

from __future__ import annotations

import math

import pytest
import torch

from prompteol.train.config import TrainConfig
from prompteol.train.gradcache import RandState, contrastive_step
from prompteol.train.loss import info_nce

ANCHORS = ["A man is playing a guitar.", "Two dogs run in a field.", "A woman slices onions.",
           "Kids are swimming.", "The market is crowded today.", "A cat sleeps."]  # fmt: skip
POSITIVES = ["A man plays guitar.", "Dogs are running outside.", "Someone cuts an onion.",
             "Children swim in a pool.", "Many people are at the market.", "A cat is napping."]  # fmt: skip
NEGATIVES = ["Nobody is playing music.", "The dogs are asleep indoors.", "A woman is driving a bus.",
             "The kids are in class.", "The market is empty.", "A dog barks loudly at night."]  # fmt: skip


def _hand_loss(a, p, n, t):
    def cos(u, v):
        return sum(x * y for x, y in zip(u, v)) / math.sqrt(sum(x * x for x in u) * sum(y * y for y in v))

    cands = p + (n or [])
    total = 0.0
    for i, u in enumerate(a):
        logits = [cos(u, c) / t for c in cands]
        total += -(logits[i] - math.log(sum(math.exp(x) for x in logits)))
    return total / len(a)


@pytest.mark.parametrize("with_neg", [True, False])
@pytest.mark.parametrize("temperature", [0.05, 1.0])
def test_info_nce_matches_hand_computation(with_neg, temperature):
    g = torch.Generator().manual_seed(0)
    a, p, n = (torch.randn(5, 7, generator=g, dtype=torch.float64) for _ in range(3))
    got = info_nce(a, p, n if with_neg else None, temperature).item()
    want = _hand_loss(a.tolist(), p.tolist(), n.tolist() if with_neg else None, temperature)
    assert got == pytest.approx(want, rel=1e-5)


def test_info_nce_is_low_when_pairs_match_and_scale_free():
    a = torch.eye(4) * 3.0
    loss = info_nce(a, a * 0.5, -a, 0.05)  # positives aligned, negatives opposite: near-zero loss
    assert loss.item() < 1e-6
    # cosine: rescaling any vector changes nothing
    g = torch.Generator().manual_seed(1)
    a, p, n = (torch.randn(3, 5, generator=g) for _ in range(3))
    assert info_nce(a * 7, p * 0.1, n * 3, 0.05).item() == pytest.approx(info_nce(a, p, n, 0.05).item(), rel=1e-5)


# ---------------------------------------------------------------------------------------------- GradCache
def _lora_encoder(cache_dir, dropout=0.0, checkpointing=True, seed=0):
    """The tiny encoder with LoRA whose weights are all random (LoRA's B starts at zero otherwise)."""
    from prompteol.train.lora import add_lora, build_training_encoder

    cfg = TrainConfig.build(model="tiny-random-llama", data="unused.csv", lora_r=4, lora_alpha=8, lora_dropout=dropout,
                      gradient_checkpointing=checkpointing)  # fmt: skip
    encoder = build_training_encoder(cfg, "cpu", cache_dir=cache_dir, progress=False)
    model = add_lora(encoder, cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    model.train()
    return encoder, model


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _run(encoder, model, micro, negatives=NEGATIVES, cutoff=8):
    model.zero_grad(set_to_none=True)
    res = contrastive_step(encoder, ANCHORS, POSITIVES, negatives, temperature=0.05, cutoff_len=cutoff,
                           micro_batch_size=micro)  # fmt: skip
    return res.loss, _grads(model)


@pytest.mark.parametrize("with_neg", [True, False])
def test_gradcache_gives_the_plain_gradients(test_cache_dir, with_neg):
    encoder, model = _lora_encoder(test_cache_dir)
    neg = NEGATIVES if with_neg else None
    loss_plain, plain = _run(encoder, model, None, neg)
    for micro in (1, 4):  # 4 leaves a smaller last micro-batch
        loss_cached, cached = _run(encoder, model, micro, neg)
        assert loss_cached == pytest.approx(loss_plain, rel=1e-6)
        assert plain.keys() == cached.keys() and len(plain) > 0
        for name in plain:
            scale = plain[name].abs().max().item()
            assert scale > 0, name  # every LoRA matrix gets a gradient
            assert (plain[name] - cached[name]).abs().max().item() <= 1e-5 * max(scale, 1.0), name


def test_training_forward_is_the_encode_path(test_cache_dir):
    """embed() (training, with the cutoff) gives encode()'s vectors for pre-cut sentences."""
    encoder, model = _lora_encoder(test_cache_dir)
    model.eval()
    with torch.no_grad():
        trained = encoder.embed(ANCHORS, max_length=1000).numpy()
    assert abs(trained - encoder.encode(ANCHORS, use_embedding_cache=False)).max() < 1e-5


def test_rand_state_replays_dropout(test_cache_dir):
    encoder, model = _lora_encoder(test_cache_dir, dropout=0.5, checkpointing=False)
    state = RandState()
    with torch.no_grad():
        first = encoder.embed(ANCHORS)
        other = encoder.embed(ANCHORS)  # fresh dropout masks
        with state.replay():
            again = encoder.embed(ANCHORS)
    assert not torch.allclose(first, other)
    assert torch.equal(first, again)


def test_gradcache_replays_the_dropout_of_the_first_pass(test_cache_dir, monkeypatch):
    """With dropout on, the second (gradient) pass recomputes exactly the first pass's embeddings."""
    encoder, model = _lora_encoder(test_cache_dir, dropout=0.3)
    seen: list[tuple[bool, torch.Tensor]] = []
    embed = encoder.embed

    def recording_embed(texts, max_length=None):
        out = embed(texts, max_length=max_length)
        seen.append((torch.is_grad_enabled(), out.detach().clone()))
        return out

    monkeypatch.setattr(encoder, "embed", recording_embed)
    _run(encoder, model, 2)
    first = [t for grad, t in seen if not grad]
    second = [t for grad, t in seen if grad]
    assert len(first) == len(second) == 3
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    # without the replay the masks differ: the check above is not vacuous
    with torch.no_grad():
        assert not torch.equal(embed(ANCHORS[:2] + POSITIVES[:2] + NEGATIVES[:2], max_length=8), first[0])
