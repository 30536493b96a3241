"""Two CPU processes (gloo): the gathered loss and the summed gradients equal one process on the global batch."""

from __future__ import annotations

import os
import sys
import zlib

import pytest
import torch
from test_train_loss import ANCHORS, NEGATIVES, POSITIVES, _lora_encoder

WORLD = 2
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="file:// rendezvous")


def _spawn(fn, tmp_path, *args) -> list[dict]:
    import torch.multiprocessing as mp

    mp.spawn(fn, args=(str(tmp_path / "init"), str(tmp_path), *args), nprocs=WORLD, join=True)
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def _init(rank: int, init_file: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)


def _vectors():
    g = torch.Generator().manual_seed(0)
    return [torch.randn(8, 5, generator=g, dtype=torch.float64) for _ in range(3)]


class _TinyEncoder(torch.nn.Module):
    """Just what contrastive_step needs: ``embed(texts, max_length)``, here a linear map of fixed text features."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.proj = torch.nn.Linear(6, 5)

    def embed(self, texts, max_length=None):
        feats = [torch.randn(6, generator=torch.Generator().manual_seed(zlib.crc32(t.encode()))) for t in texts]
        return self.proj(torch.stack(feats))  # (B, 5)


def _vector_worker(rank: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    from prompteol.train.gradcache import contrastive_step
    from prompteol.train.loss import all_reduce_grads, global_info_nce

    _init(rank, init_file)
    try:
        local = [x[rank * 4 : (rank + 1) * 4].clone().requires_grad_() for x in _vectors()]
        loss = global_info_nce(*local, 0.05)
        loss.backward()
        out = {"loss": loss.item(), "grads": [x.grad for x in local], "steps": {}}
        enc = _TinyEncoder()
        s = slice(rank * 3, (rank + 1) * 3)
        for micro in (None, 1):  # plain and GradCache
            enc.zero_grad(set_to_none=True)
            res = contrastive_step(enc, ANCHORS[s], POSITIVES[s], NEGATIVES[s], temperature=0.05, cutoff_len=None,
                                   micro_batch_size=micro)  # fmt: skip
            all_reduce_grads(list(enc.parameters()))
            out["steps"][micro] = (res.loss, [p.grad.clone() for p in enc.parameters()])
        torch.save(out, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_gathered_loss_and_gradients_equal_one_process(tmp_path):
    """Each process holds the global loss and the gradient of its own rows; summed parameter
    gradients (plain and GradCache) equal one process's on the global batch."""
    from prompteol.train.gradcache import contrastive_step
    from prompteol.train.loss import info_nce

    results = _spawn(_vector_worker, tmp_path)
    a, p, n = (x.requires_grad_() for x in _vectors())
    loss = info_nce(a, p, n, 0.05)
    loss.backward()
    enc = _TinyEncoder()
    single = contrastive_step(enc, ANCHORS, POSITIVES, NEGATIVES, temperature=0.05, cutoff_len=None)
    for r, res in enumerate(results):
        assert res["loss"] == pytest.approx(loss.item(), rel=1e-12)
        for got, full in zip(res["grads"], (a.grad, p.grad, n.grad)):
            torch.testing.assert_close(got, full[r * 4 : (r + 1) * 4], rtol=1e-10, atol=1e-12)
        for micro in (None, 1):
            got_loss, got_grads = res["steps"][micro]
            assert got_loss == pytest.approx(single.loss, rel=1e-6)
            for got, param in zip(got_grads, enc.parameters()):
                torch.testing.assert_close(got, param.grad, rtol=1e-5, atol=1e-6)


def _model_worker(rank: int, init_file: str, out_dir: str, cache_dir: str) -> None:
    import torch.distributed as dist

    from prompteol.train.gradcache import contrastive_step
    from prompteol.train.loss import all_reduce_grads

    _init(rank, init_file)
    try:
        encoder, model = _lora_encoder(cache_dir)
        half = len(ANCHORS) // WORLD
        s = slice(rank * half, (rank + 1) * half)
        steps = {}
        for micro in (None, 1):  # plain and GradCache
            model.zero_grad(set_to_none=True)
            res = contrastive_step(encoder, ANCHORS[s], POSITIVES[s], NEGATIVES[s], temperature=0.05, cutoff_len=8,
                                   micro_batch_size=micro)  # fmt: skip
            all_reduce_grads([p for p in model.parameters() if p.requires_grad])
            steps[micro] = (res.loss, {k: v.grad.clone() for k, v in model.named_parameters() if v.requires_grad})
        torch.save(steps, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # ~15-30 s on 2 shared cores: each process imports transformers and peft
def test_two_processes_train_like_one(tmp_path, test_cache_dir):
    """The tiny model with LoRA: loss and summed LoRA gradients of 2 x 3 triplets == 1 x 6 triplets."""
    from prompteol.train.gradcache import contrastive_step

    encoder, model = _lora_encoder(test_cache_dir)  # also builds the tiny model folder before the children
    results = _spawn(_model_worker, tmp_path, str(test_cache_dir))
    model.zero_grad(set_to_none=True)
    single = contrastive_step(encoder, ANCHORS, POSITIVES, NEGATIVES, temperature=0.05, cutoff_len=8)
    want = {k: v.grad for k, v in model.named_parameters() if v.requires_grad}
    for steps in results:
        for micro in (None, 1):
            got_loss, got = steps[micro]
            assert got_loss == pytest.approx(single.loss, rel=1e-6)
            for k in want:
                scale = max(want[k].abs().max().item(), 1.0)
                assert (got[k] - want[k]).abs().max().item() <= 1e-5 * scale, k
