"""The state of one server app and the one way every route gets raw vectors.

The state of one server app: the encoder (loaded in the lifespan hook), the micro-batcher, the
tokenizer thread, the metrics and the settings, and the one way every route gets raw vectors
(:meth:`ServerState.vectors`).

Each request is tokenized once, in the one tokenizer thread (off the event loop; the tokenizer is never
used from two threads), and the model thread receives the token ids
(:class:`~prompteol.encoder.prompts.builder.Tokenized`), so it never tokenizes.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

import numpy as np
from fastapi import Request

from ..encoder.batching import MemoryLimitError
from ..encoder.encode_options import EncodeOptions
from ..encoder.prompts.builder import Tokenized
from ..errors import InputError
from .batcher import MicroBatcher, ShuttingDown
from .errors import ServeError
from .metrics import ServeMetrics
from .settings import ServeSettings

__all__ = ["ServerState", "EmbeddingModel", "load_encoder", "decode_token_ids"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class PromptsPart(Protocol):
    tokenizer: Any

    def build(self, texts: Sequence[str]) -> Tokenized: ...

    def render(self, sentence: str) -> str: ...


class EmbeddingModel(Protocol):
    """What the server needs from an encoder (:class:`prompteol.Encoder` is one)."""

    @property
    def dim(self) -> int: ...

    @property
    def prompts(self) -> PromptsPart: ...

    def encode(self, texts: Sequence[str] | Tokenized, *, options: EncodeOptions | None = None) -> np.ndarray: ...


def load_encoder(settings: ServeSettings) -> EmbeddingModel:
    from ..encoder.encoder import Encoder

    return Encoder.from_config(
        settings.encoder, embedding_cache=settings.embedding_cache, cache_dir=settings.cache_dir, progress=False
    )


def decode_token_ids(tokenizer, seqs: Sequence[Sequence[int]], names: Sequence[str]) -> list[str]:
    """Token-id sequences as text (special tokens dropped); an id outside the vocabulary is an
    :class:`InputError` naming the input (``names[i]``)."""
    vocab = len(tokenizer)
    out = []
    for name, seq in zip(names, seqs):
        bad = next((t for t in seq if not 0 <= t < vocab), None)
        if bad is not None:
            raise InputError(f"{name} holds the token id {bad}, outside this model's vocabulary (0..{vocab - 1})")
        out.append(tokenizer.decode(list(seq), skip_special_tokens=True))
    return out


class ServerState:
    """The encoder, the batcher, the metrics and the settings of one app."""

    def __init__(self, settings: ServeSettings, encoder: EmbeddingModel | None = None):
        self.settings = settings
        self.metrics = ServeMetrics()
        self.encoder = encoder
        self._owns_encoder = encoder is None
        self.batcher: MicroBatcher | None = None
        self.dim = 0
        self.created = int(time.time())
        self._tokenizer_thread: ThreadPoolExecutor | None = None

    def _encode(self, items: list[tuple[str, list[int]]], use_cache: bool | None = None) -> np.ndarray:
        """Vectors of merged ``(prepared sentence, prompt token ids)`` items (the model thread)."""
        s = self.settings
        prompts = Tokenized([sentence for sentence, _ in items], [ids for _, ids in items])
        # encode sorts the merged sentences by length and runs model batches of max_batch_size; the raw
        # vectors come back (each route post-processes them as its API says: /v1 per --normalize, /embed per request)
        options = EncodeOptions(batch_size=s.max_batch_size, show_progress=False,
                                use_embedding_cache=s.embedding_cache if use_cache is None else use_cache)  # fmt: skip
        return self._encoder().encode(prompts, options=options)

    async def start(self) -> None:
        s = self.settings
        if s.threads:
            import torch

            torch.set_num_threads(s.threads)
        if self.encoder is None:
            log.info("loading %s", s.model)
            self.encoder = await asyncio.to_thread(load_encoder, s)
        self._tokenizer_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prompteol-tokenize")
        self.batcher = MicroBatcher(self._encode, max_batch_tokens=s.max_batch_tokens, max_wait=s.max_wait_ms / 1000,
                                    metrics=self.metrics)  # fmt: skip
        await self.batcher.start()
        encoder = self._encoder()
        self.dim = int(await self.batcher.call(lambda: encoder.dim))
        # one forward now (it also builds the shared-prefix cache), not on the first client's time
        warm = await self.tokenize(["warm up"])
        await self.batcher.call(self._encode, list(zip(warm.sentences, warm.ids)), False)
        log.info("serving %r as %r: %d dimensions", s.model, s.model_name, self.dim)

    async def stop(self) -> None:
        if self.batcher is not None:
            await self.batcher.close(drain_timeout=self.settings.drain_timeout_s)
            self.batcher = None
        if self._tokenizer_thread is not None:
            self._tokenizer_thread.shutdown(wait=True)
            self._tokenizer_thread = None
        if self._owns_encoder:
            self.encoder = None

    def _encoder(self) -> EmbeddingModel:
        if self.encoder is None:
            raise RuntimeError("the server state was not started")
        return self.encoder

    def require_batcher(self) -> MicroBatcher:
        if self.batcher is None:
            raise ServeError(503, "the model is not loaded (the server is starting or stopping)", type="server_error")
        return self.batcher

    async def tokenize(self, texts: list[str]) -> Tokenized:
        """Prepared sentences and prompt token ids, computed in the tokenizer thread (off the event loop)."""
        return await self.in_tokenizer_thread(self._encoder().prompts.build, texts)

    async def in_tokenizer_thread(self, fn, *args):
        """``fn(*args)`` in the one tokenizer thread (the tokenizer is never used from two threads)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._tokenizer_thread, fn, *args)

    def prompts(self) -> PromptsPart:
        return self._encoder().prompts

    def tokenizer(self):
        return self._encoder().prompts.tokenizer

    async def vectors(self, request: Request, prompts: Tokenized) -> np.ndarray | None:
        """Raw vectors of tokenized prompts through the batcher (``None``: the client left first)."""
        batcher = self.require_batcher()
        try:
            items = list(zip(prompts.sentences, prompts.ids))
            answered, vectors = await _unless_disconnected(request, batcher.submit(items, prompts.lengths))
        except ShuttingDown as exc:
            raise ServeError(503, str(exc), type="server_error", code="shutting_down") from None
        except MemoryLimitError as exc:  # one input needs more memory than is free now (checked before any forward)
            message = re.sub(r"^texts\[\d+\]", "an input", str(exc))  # its index in the merged group, not in 'input'
            raise ServeError(503, message, type="server_error", param="input", code="insufficient_memory") from None
        if not answered or vectors is None:
            self.metrics.cancelled.inc()
            return None
        self.metrics.sentences.inc(len(prompts))
        self.metrics.prompt_tokens.inc(sum(prompts.lengths))
        return vectors


async def _until_disconnect(request: Request) -> None:
    """Returns when the client closes the connection (the body has already been read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _unless_disconnected(request: Request, work: Awaitable[T]) -> tuple[bool, T | None]:
    """``(True, result)``, or ``(False, None)`` if the client left first (``work`` is then cancelled)."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_until_disconnect(request))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()
    if not task.done() or task.cancelled():
        return False, None
    return True, task.result()
