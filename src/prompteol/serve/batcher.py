"""Dynamic micro-batching: concurrent requests share model batches.

Each request's texts become one or more *jobs* (a request over the token budget is cut into
budget-sized chunks, so a huge request cannot hold the model for minutes while small ones
wait behind it). Jobs wait in one FIFO queue. A single collector task takes the oldest job,
then adds queued jobs while the merged group stays within ``max_batch_tokens`` prompt tokens
(the lengths of the token ids the server computed for the request, ``Encoder.prompts.build``, once,
in its tokenizer thread). Right after a run, the next group waits a short grace
(``GRACE_FRACTION`` of that run, at least ``max_wait``) for the clients the run answered to
send their next request, and stops waiting as soon as that many have: closed-loop clients then
merge into full groups instead of settling into a large and a small group that alternate.
Once the grace has passed with nothing queued, a job arriving at the idle model waits
``max_wait`` for company.

The group runs in one worker thread (torch uses its own intra-op threads inside it) through
``run`` -- for the server, ``Encoder.encode`` -- which sorts the group's sentences by length and
cuts them into model batches of at most ``max_batch_size`` sentences, exactly as it does for a
library caller: a deep queue therefore gets the library's length-sorted, little-padded batches.
The event loop keeps accepting and answering requests meanwhile.

Results go back through one future per job, sliced in input order. A job whose client has
gone (its future is cancelled) is dropped before it reaches the model, and a finished group
never waits on any client: it only sets futures. If a merged group fails, each of its jobs is
run again alone, so one bad job cannot fail the requests it was merged with.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from .metrics import ServeMetrics

__all__ = ["MicroBatcher", "ShuttingDown", "chunk_bounds"]

log = logging.getLogger(__name__)

#: after a run, a group that is not full waits up to this fraction of that run for the clients
#: just answered to send their next request (it stops as soon as they all have). Answered
#: closed-loop clients take a noticeable part of a run to come back (their HTTP work shares the
#: cores); with 5% the groups kept alternating between almost all and a few of 32 requests, and a
#: half-size batch computes fewer sentences per second on a CPU (not recorded; the load test's
#: mean group size is in its records, docs/serving.md). The wait costs nothing when the queue fills
#: a group (a full group never waits), and at most 10% idle model time when nobody comes back.
GRACE_FRACTION = 0.1


class ShuttingDown(RuntimeError):
    """The batcher is closing: the job was not run (the server answers 503)."""


def chunk_bounds(lengths: Sequence[int], max_tokens: int) -> list[tuple[int, int]]:
    """``[start, end)`` ranges of consecutive items of at most ``max_tokens`` tokens in all
    (an item longer than ``max_tokens`` gets a range of its own)."""
    bounds: list[tuple[int, int]] = []
    start, total = 0, 0
    for i, n in enumerate(lengths):
        if i > start and total + n > max_tokens:
            bounds.append((start, i))
            start, total = i, 0
        total += n
    if start < len(lengths):
        bounds.append((start, len(lengths)))
    return bounds


@dataclass(eq=False)
class _Job:
    texts: list[Any]  # the items to embed (the server: prepared sentences with their token ids)
    lengths: list[int]
    future: asyncio.Future
    arrived: float

    @property
    def tokens(self) -> int:
        return sum(self.lengths)


class MicroBatcher:
    """Merge concurrent :meth:`submit` calls into groups run by ``run(texts) -> (N, H)``.

    ``run`` is called in one dedicated thread, one batch at a time. Create the batcher, then
    ``await start()`` inside the running event loop; ``await close()`` at shutdown.
    """

    def __init__(
        self,
        run: Callable[[list[Any]], np.ndarray],
        *,
        max_batch_tokens: int,
        max_wait: float,
        metrics: ServeMetrics | None = None,
    ):
        self._run = run
        self.max_batch_tokens = max_batch_tokens
        self.max_wait = max_wait
        self.metrics = metrics or ServeMetrics()
        self._queue: deque[_Job] = deque()
        self._queued_sentences = 0
        self._last_run = 0.0  # seconds of the last group's model run
        self._last_jobs = 0  # jobs answered by the last group
        self._wakeup = asyncio.Event()  # binds to the loop of its first wait (the serving loop)
        self._task: asyncio.Task | None = None
        self._closing = False  # no new jobs; the queue is drained
        self._abort = False  # drain time is over: stop after the group in flight
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prompteol-model")

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="prompteol-batcher")

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` in the model thread (warm-up, probes): never concurrently with a batch."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def close(self, drain_timeout: float = 30.0) -> None:
        """Stop accepting jobs, run the ones already accepted (for up to ``drain_timeout`` seconds),
        then fail what is left with :class:`ShuttingDown`. The group in flight always finishes and
        is answered: no accepted job is ever dropped without an answer."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=drain_timeout)
            except TimeoutError:
                self._abort = True  # the loop ends after the group in flight (a model call cannot be cut)
                self._fail_queued()
                self._wakeup.set()
                await self._task
            self._task = None
        self._fail_queued()
        await asyncio.to_thread(self._executor.shutdown, True)

    def _fail_queued(self) -> None:
        while self._queue:
            job = self._pop()
            if not job.future.done():
                job.future.set_exception(ShuttingDown("the server is shutting down; send the request again"))
        self._gauges()

    @property
    def queued(self) -> int:
        """Jobs waiting for the model (cancelled ones included until the collector drops them)."""
        return len(self._queue)

    @property
    def queued_sentences(self) -> int:
        return self._queued_sentences

    # ------------------------------------------------------------------ submit
    async def submit(self, texts: Sequence[Any], lengths: list[int]) -> np.ndarray:
        """Vectors (N, H) for ``texts`` (items whose prompt lengths are ``lengths``), in input order."""
        if self._task is None and not self._closing:
            raise RuntimeError("MicroBatcher.start() was not awaited")
        if self._closing:
            raise ShuttingDown("the server is shutting down; send the request again")
        if not texts:
            raise ValueError("submit() needs at least one text")
        loop = asyncio.get_running_loop()
        now = time.perf_counter()
        jobs = [
            _Job(list(texts[a:b]), list(lengths[a:b]), loop.create_future(), now)
            for a, b in chunk_bounds(lengths, self.max_batch_tokens)
        ]
        for job in jobs:
            self._queue.append(job)
            self._queued_sentences += len(job.texts)
        self._gauges()
        self._wakeup.set()
        try:
            parts = await asyncio.gather(*(job.future for job in jobs))
        except BaseException:  # cancelled (client gone) or failed: drop what has not run yet
            for job in jobs:
                job.future.cancel()
            raise
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    # ------------------------------------------------------------------ collector
    def _gauges(self) -> None:
        self.metrics.queue_depth.set(len(self._queue))
        self.metrics.queue_sentences.set(self._queued_sentences)

    def _pop(self) -> _Job:
        job = self._queue.popleft()
        self._queued_sentences -= len(job.texts)
        return job

    def _drop_cancelled(self) -> None:
        while self._queue and self._queue[0].future.done():
            self._pop()

    async def _collect(self) -> list[_Job]:
        """The next group: the oldest live job plus whatever fits and arrives before the deadline.

        Right after a run, the group waits until ``grace_until`` (``max(max_wait, GRACE_FRACTION x
        last run)`` after the model became free) for the clients the last group answered to come
        back, and stops as soon as that many jobs did. Later, on an idle model, a job waits
        ``max_wait`` for company.
        """
        free_since = time.perf_counter()  # the model is free from now on
        grace_until = free_since + max(self.max_wait, GRACE_FRACTION * self._last_run) if self._last_jobs else 0.0
        batch: list[_Job] = []
        tokens = returned = 0
        deadline = float("inf")  # set by the first job taken
        grace = False
        while True:
            self._drop_cancelled()
            if self._abort:  # drain time is over: what this group took is answered, not dropped
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(ShuttingDown("the server is shutting down; send the request again"))
                return []
            if self._queue:
                job = self._queue[0]
                if batch and tokens + job.tokens > self.max_batch_tokens:
                    break  # full: the next job starts the following group
                self._pop()
                batch.append(job)
                tokens += job.tokens
                returned += job.arrived >= free_since
                if len(batch) == 1:
                    grace = job.arrived <= grace_until
                    deadline = grace_until if grace else job.arrived + self.max_wait
                continue
            waited = time.perf_counter() >= deadline or (grace and returned >= self._last_jobs)
            if batch and (waited or self._closing):  # draining: take what fits, wait for nobody
                break
            if self._closing and not batch:
                return []  # drained
            self._wakeup.clear()
            if not batch:  # idle: sleep until a job arrives
                await self._wakeup.wait()
                continue
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout=deadline - time.perf_counter())
            except TimeoutError:
                break
        self._gauges()
        log.debug("group: %d job(s), %d token(s), %d returned; waited %.1f ms (grace: %s)", len(batch), tokens,
                  returned, 1000 * (time.perf_counter() - free_since), grace)  # fmt: skip
        return batch

    async def _loop(self) -> None:
        while not (self._abort or (self._closing and not self._queue)):
            batch = await self._collect()
            batch = [job for job in batch if not job.future.done()]
            try:
                if batch:
                    await self._execute(batch)
            except Exception as exc:  # noqa: BLE001 - a bug here must not stop the server's only collector
                log.exception("the batcher failed on a batch of %d job(s)", len(batch))
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)

    async def _execute(self, batch: list[_Job]) -> None:
        texts = [t for job in batch for t in job.texts]
        m = self.metrics
        m.batch_sentences.observe(len(texts))
        m.batch_requests.observe(len(batch))
        m.batch_tokens.observe(sum(job.tokens for job in batch))
        start = time.perf_counter()
        self._last_jobs = len(batch)
        try:
            vectors = await self.call(self._run, texts)
        except Exception as exc:  # noqa: BLE001 - isolate: rerun each job alone, fail only the culprit
            if len(batch) == 1:
                log.exception("a batch of %d sentence(s) failed", len(texts))
                if not batch[0].future.done():
                    batch[0].future.set_exception(exc)
                return
            log.warning("a merged batch of %d jobs failed (%s); running each job alone", len(batch), exc)
            for job in batch:
                if not job.future.done():
                    await self._execute([job])
            return
        finally:
            self._last_run = time.perf_counter() - start
            m.batch_seconds.observe(self._last_run)
            log.debug("ran %d sentence(s) in %.3f s", len(texts), self._last_run)
        offset = 0
        for job in batch:
            n = len(job.texts)
            if not job.future.done():  # its client may have left while the batch ran
                job.future.set_result(vectors[offset : offset + n])
            offset += n
