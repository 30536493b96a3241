"""The micro-batcher alone, with a fake model (no weights, no HTTP): merging, budgets, order, cancellation."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from conftest import require

require("fastapi")

from prompteol.serve.batcher import MicroBatcher, chunk_bounds  # noqa: E402

pytestmark = pytest.mark.timeout(60)


class FakeModel:
    """Vector of a text = [len(text), ord(first char)]; records every batch; can be held by a gate."""

    def __init__(self):
        self.batches: list[list[str]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.running = threading.Event()

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.running.set()
        self.gate.wait(30)
        self.batches.append(list(texts))
        if any(t.startswith("boom") for t in texts):
            raise RuntimeError("boom")
        return np.array([[len(t), ord(t[0])] for t in texts], dtype=np.float32)  # (N, 2)


def expected(texts):
    return np.array([[len(t), ord(t[0])] for t in texts], dtype=np.float32)


@pytest.mark.parametrize(
    ("lengths", "tokens", "want"),
    [
        ([], 100, []),
        ([5, 5, 5], 100, [(0, 3)]),
        ([5, 5, 5, 5, 5], 10, [(0, 2), (2, 4), (4, 5)]),
        ([10, 10, 30], 40, [(0, 2), (2, 3)]),
        ([100, 1, 1], 50, [(0, 1), (1, 3)]),  # too long alone: a chunk of its own
    ],
)
def test_chunk_bounds(lengths, tokens, want):
    assert chunk_bounds(lengths, tokens) == want


async def _with_batcher(model, coro_fn, **kw):
    kw = {"max_batch_tokens": 10_000, "max_wait": 0.05, **kw}
    batcher = MicroBatcher(model, **kw)
    await batcher.start()
    try:
        return await coro_fn(batcher)
    finally:
        await batcher.close()


def test_concurrent_submits_are_merged_and_answered_in_order():
    model = FakeModel()
    requests = [[f"{'x' * (i % 5 + 1)}{j}" for j in range(i % 3 + 1)] for i in range(20)]

    async def go(batcher):
        return await asyncio.gather(*(batcher.submit(r, [len(t) for t in r]) for r in requests))

    results = asyncio.run(_with_batcher(model, go))
    for req, got in zip(requests, results):
        np.testing.assert_array_equal(got, expected(req))
    assert len(model.batches) < len(requests)  # merged
    assert sum(len(b) for b in model.batches) == sum(len(r) for r in requests)


def test_budget_bounds_every_batch_and_large_requests_are_split():
    model = FakeModel()
    big = [f"s{i:03d}" for i in range(50)]  # 50 texts of 4 tokens

    async def go(batcher):
        small = batcher.submit(["a", "b"], [1, 1])
        return await asyncio.gather(batcher.submit(big, [4] * 50), small)

    got_big, got_small = asyncio.run(_with_batcher(model, go, max_batch_tokens=24))
    np.testing.assert_array_equal(got_big, expected(big))
    np.testing.assert_array_equal(got_small, expected(["a", "b"]))
    assert len(model.batches) > 50 * 4 / 24
    for batch in model.batches:
        assert sum(len(t) for t in batch) <= 24


def test_cancelled_job_never_reaches_the_model_and_others_go_on():
    model = FakeModel()

    async def go(batcher):
        model.gate.clear()
        first = asyncio.ensure_future(batcher.submit(["first"], [1]))
        while not model.running.is_set():  # the model thread is now held inside batch 1
            await asyncio.sleep(0.005)
        gone = asyncio.ensure_future(batcher.submit(["gone"], [1]))
        kept = asyncio.ensure_future(batcher.submit(["kept"], [1]))
        await asyncio.sleep(0.01)
        gone.cancel()
        model.gate.set()
        return await first, await kept, gone.cancelled()

    first, kept, cancelled = asyncio.run(_with_batcher(model, go))
    assert cancelled
    np.testing.assert_array_equal(kept, expected(["kept"]))
    assert all("gone" not in batch for batch in model.batches)


def test_a_failing_job_fails_alone():
    model = FakeModel()

    async def go(batcher):
        model.gate.clear()
        hold = asyncio.ensure_future(batcher.submit(["hold"], [1]))
        while not model.running.is_set():
            await asyncio.sleep(0.005)
        good = asyncio.ensure_future(batcher.submit(["good"], [1]))
        bad = asyncio.ensure_future(batcher.submit(["boom!"], [1]))
        await asyncio.sleep(0.01)
        model.gate.set()
        await hold
        return await asyncio.gather(good, bad, return_exceptions=True)

    good, bad = asyncio.run(_with_batcher(model, go))
    np.testing.assert_array_equal(good, expected(["good"]))
    assert isinstance(bad, RuntimeError)
    assert ["good", "boom!"] in model.batches  # merged first, then rerun one by one


def test_zero_wait_dispatches_at_once():
    model = FakeModel()

    async def go(batcher):
        return await batcher.submit(["solo"], [1])

    np.testing.assert_array_equal(asyncio.run(_with_batcher(model, go, max_wait=0.0)), expected(["solo"]))


@pytest.mark.parametrize("grace", [0.0, 0.5])
def test_closed_loop_clients_merge_into_full_groups(monkeypatch, grace):
    """Clients that send their next request when answered: the grace after each run lets the
    answered cohort rejoin, so groups grow to all clients instead of alternating halves.

    Not timing-sensitive: the clients come back 4 ms after an answer and the grace lasts 100 ms
    (half of a 200 ms run), so a loaded machine would have to stall the event loop for ~25x the
    clients' turnaround to change a group; without grace the alternation is decided without any
    wait (the answered cohort cannot rejoin before the queued one is taken, no await in between).
    """
    import time

    import prompteol.serve.batcher as batcher_module

    monkeypatch.setattr(batcher_module, "GRACE_FRACTION", grace)
    model = FakeModel()
    slow = model.__call__

    def run(texts):
        time.sleep(0.2)  # the grace after a run is then 100 ms
        return slow(texts)

    async def go(batcher):
        async def client(i):
            await asyncio.sleep(0.01 + 0.03 * (i % 2))  # two cohorts, the second 30 ms late
            for _ in range(5):
                await batcher.submit([f"c{i}"], [1])
                await asyncio.sleep(0.004)  # the answer's way back and the next request's way in

        await asyncio.gather(*(client(i) for i in range(8)))

    asyncio.run(_with_batcher(run, go, max_wait=0.001))
    sizes = [len(b) for b in model.batches]
    if grace:
        assert sizes[2:5] == [8, 8, 8], sizes
    else:  # the failure mode the grace exists for
        assert max(sizes[2:]) < 8, sizes


def test_close_answers_every_accepted_job_and_refuses_new_ones():
    """Shutdown drains: the group in flight and the queued jobs are all answered; a job submitted
    after close() began is refused with ShuttingDown (the server's 503), never left hanging."""
    from prompteol.serve.batcher import ShuttingDown

    model = FakeModel()

    async def go():
        batcher = MicroBatcher(model, max_batch_tokens=2, max_wait=0.001)
        await batcher.start()
        model.gate.clear()
        first = asyncio.ensure_future(batcher.submit(["first"], [1]))
        while not model.running.is_set():
            await asyncio.sleep(0.005)
        queued = [asyncio.ensure_future(batcher.submit([f"q{i}"], [1])) for i in range(5)]
        await asyncio.sleep(0.01)
        closing = asyncio.ensure_future(batcher.close(drain_timeout=30))
        await asyncio.sleep(0.01)
        with pytest.raises(ShuttingDown):
            await batcher.submit(["late"], [1])
        model.gate.set()
        await closing
        return await first, [await q for q in queued]

    first, queued = asyncio.run(go())
    np.testing.assert_array_equal(first, expected(["first"]))
    for i, got in enumerate(queued):
        np.testing.assert_array_equal(got, expected([f"q{i}"]))
    assert all("late" not in b for b in model.batches)


def test_close_after_the_drain_timeout_fails_the_rest_cleanly():
    from prompteol.serve.batcher import ShuttingDown

    model = FakeModel()

    async def go():
        batcher = MicroBatcher(model, max_batch_tokens=1, max_wait=0.001)
        await batcher.start()
        model.gate.clear()
        first = asyncio.ensure_future(batcher.submit(["first"], [1]))
        while not model.running.is_set():
            await asyncio.sleep(0.005)
        queued = [asyncio.ensure_future(batcher.submit([f"q{i}"], [1])) for i in range(3)]
        await asyncio.sleep(0.01)
        closing = asyncio.ensure_future(batcher.close(drain_timeout=0.05))
        await asyncio.sleep(0.2)  # the drain time passes while the model is still held
        model.gate.set()
        await closing
        return await first, await asyncio.gather(*queued, return_exceptions=True)

    first, rest = asyncio.run(go())
    np.testing.assert_array_equal(first, expected(["first"]))  # the group in flight is answered
    assert all(isinstance(r, ShuttingDown) for r in rest), rest
