"""The FastAPI app: ``create_app(settings, encoder=None)``.

Routes: ``POST /v1/embeddings``, ``GET /v1/models``, ``GET /v1/models/{id}``, ``GET /health``,
``GET /metrics``, and text-embeddings-inference's ``POST /embed`` (also ``POST /``), ``POST /tokenize``
and ``GET /info`` (:mod:`prompteol.serve.tei`). The encoder is loaded in the lifespan hook (unless one
is given, as tests do) and warmed up once. Each request is tokenized once, in the one tokenizer thread (off the
event loop; the tokenizer is never used from two threads), and the model thread receives the
token ids (:class:`~prompteol.encoder.prompts.builder.Tokenized`), so it never tokenizes.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import re
import time
from collections.abc import Awaitable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, Protocol, TypeVar

import numpy as np
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..encoder.batching import MemoryLimitError
from ..encoder.prompts.builder import ContextLengthError, Tokenized
from ..errors import InputError
from .batcher import MicroBatcher, ShuttingDown
from .errors import APIError, error_response, install_error_handlers, too_large
from .metrics import ROUTES, ServeMetrics
from .schemas import Embedding, EmbeddingRequest, EmbeddingResponse, ErrorResponse, ModelCard, ModelList, Usage
from .settings import ServeSettings
from .tei import TEI_PATHS, decode_token_ids, from_api_error, install_tei, tei_response

__all__ = ["create_app", "EmbeddingModel", "ServerState", "load_encoder"]

log = logging.getLogger(__name__)
T = TypeVar("T")

#: paths answered without an API key: probes, scraping and the API description
OPEN_PATHS = frozenset({"/health", "/metrics", "/docs", "/docs/oauth2-redirect", "/openapi.json"})
#: paths with their own metrics label (anything else is "other")
LABELLED = frozenset(ROUTES) | TEI_PATHS
#: POST routes whose body is JSON, checked (content type, empty, UTF-8) before FastAPI parses it
JSON_PATHS = frozenset({"/v1/embeddings"}) | (TEI_PATHS - {"/info"})
#: response header of /v1/embeddings when token ids were sent: what was done with them
TOKEN_IDS_HEADER = "x-prompteol-token-ids"


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

    def encode(
        self,
        texts: Sequence[str] | Tokenized,
        batch_size: int = ...,
        normalize: bool = ...,
        show_progress: bool | None = ...,
        max_batch_tokens: int | None = ...,
        use_embedding_cache: bool = ...,
    ) -> np.ndarray: ...


def load_encoder(settings: ServeSettings) -> EmbeddingModel:
    from ..encoder.encoder import Encoder

    return Encoder.from_config(
        settings.encoder, embedding_cache=settings.embedding_cache, cache_dir=settings.cache_dir, progress=False
    )


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
        # vectors come back (each route normalises them as its API says: /v1 per --normalize, /embed per request)
        return self._encoder().encode(
            prompts, batch_size=s.max_batch_size, normalize=False, show_progress=False,
            use_embedding_cache=s.embedding_cache if use_cache is None else use_cache,
        )  # fmt: skip

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


class _Gatekeeper:
    """Pure ASGI middleware, outside all routing: request metrics, body-size limit, API key.

    The key is checked before the body is read or parsed, in constant time.
    """

    def __init__(self, app, state: ServerState):
        self.app = app
        self.state = state
        key = state.settings.api_key
        self._key = key.get_secret_value().encode() if key is not None else None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        label = path if path in LABELLED else "/v1/models" if path.startswith("/v1/models/") else "other"
        status = 500  # an exception escaping the app is answered 500 by the outer error middleware
        start = time.perf_counter()

        async def send_and_note(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        limit, received = self.state.settings.max_request_bytes, 0

        async def receive_bounded():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:  # a body sent without Content-Length (chunked) grew over the limit
                raise StarletteHTTPException(413)
            return message

        try:
            rejection = self._check(scope, path)
            app_receive = receive_bounded
            if rejection is None and scope.get("method") == "POST" and path in JSON_PATHS:
                rejection, app_receive = await self._json_body(scope, receive)
            if rejection is not None:
                if path in TEI_PATHS:  # TEI's error shape on TEI's routes
                    tei = from_api_error(rejection)
                    response = tei_response(rejection.status, tei.message, tei.error_type, headers=rejection.headers)
                else:
                    response = rejection.response()
                await response(scope, receive, send_and_note)
            else:
                await self.app(scope, app_receive, send_and_note)
        finally:
            m = self.state.metrics
            m.requests.labels(label, str(status)).inc()
            m.latency.labels(label).observe(time.perf_counter() - start)

    async def _json_body(self, scope, receive):
        """Read the body of a JSON route and say exactly what is wrong with it, if anything, before
        FastAPI parses it: ``(rejection or None, the receive the app reads the body from)``.

        A Content-Type other than JSON, or none (a body FastAPI would not parse: "should be a JSON object"), an
        empty body (FastAPI: "missing required parameter 'None'") and a body that is not UTF-8 (a
        generic parse error) each get their own message; a leading UTF-8 byte-order mark is removed,
        as from an input file (JSON parsers may ignore one, RFC 8259)."""
        headers = dict(scope.get("headers") or ())
        kind = headers.get(b"content-type", b"").decode("latin-1").partition(";")[0].strip().lower()
        if not (kind == "application/json" or kind.endswith("+json")):
            given = f"is {kind!r}" if kind else "is missing"
            return APIError(415, f"the request's Content-Type {given}; send the JSON body with 'Content-Type: "
                            "application/json'", code="unsupported_content_type"), receive  # fmt: skip
        limit, parts, size = self.state.settings.max_request_bytes, [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left while sending
                return None, _replay([message], receive)
            parts.append(message.get("body", b""))
            size += len(parts[-1])
            if size > limit:
                return too_large(limit), receive
            if not message.get("more_body", False):
                break
        body = b"".join(parts)
        if body.startswith(b"\xef\xbb\xbf"):
            body = body[3:]
        if not body.strip():
            return APIError(400, "the request body is empty; send a JSON object, e.g. "
                            f"{{\"model\": \"{self.state.settings.model_name}\", \"input\": \"some text\"}} "
                            "(text-embeddings-inference routes: {\"inputs\": \"some text\"})",
                            code="empty_body"), receive  # fmt: skip
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            return APIError(400, f"the request body is not UTF-8 (byte 0x{body[exc.start]:02x} at offset "
                            f"{exc.start}); send JSON text encoded as UTF-8", code="invalid_encoding"), receive  # fmt: skip
        return None, _replay([{"type": "http.request", "body": body, "more_body": False}], receive)

    def _check(self, scope, path: str) -> APIError | None:
        headers = dict(scope.get("headers") or ())
        if self._key is not None and path not in OPEN_PATHS:
            auth = headers.get(b"authorization", b"")
            scheme, _, given = auth.partition(b" ")
            if not auth or scheme.lower() != b"bearer" or not given.strip():
                return APIError(
                    401, "missing API key: send it as 'Authorization: Bearer <key>' (the openai client's api_key); "
                    "the server's key is set with --api-key or PROMPTEOL_API_KEY",
                    code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"},
                )  # fmt: skip
            if not hmac.compare_digest(given.strip(), self._key):
                return APIError(401, "invalid API key: the key sent in 'Authorization: Bearer <key>' is not this "
                                "server's key", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
        length = headers.get(b"content-length")
        if length is not None:
            limit = self.state.settings.max_request_bytes
            if not length.isdigit():
                return APIError(400, f"invalid Content-Length header {length.decode('latin-1')!r}", code="invalid_body")
            if int(length) > limit:
                return too_large(limit, int(length))
        return None


def _replay(messages: list, receive):
    """A receive that gives ``messages`` first, then what the client sends next (a disconnect)."""
    queue = list(messages)

    async def replayed():
        return queue.pop(0) if queue else await receive()

    return replayed


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


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)


def _b64(vector: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(vector, dtype="<f4").tobytes()).decode("ascii")


_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 500, 503)}


def create_app(settings: ServeSettings | None = None, encoder: EmbeddingModel | None = None) -> FastAPI:
    """The server app; ``settings`` default to :meth:`ServeSettings.from_env`, ``encoder`` to loading
    ``settings.model`` in the lifespan hook."""
    settings = settings if settings is not None else ServeSettings.from_env()
    state = ServerState(settings, encoder)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        try:
            await state.start()
        except BaseException:
            await state.stop()  # no thread left behind by a failed start
            raise
        try:
            yield
        finally:
            await state.stop()

    app = FastAPI(
        title="prompteol embeddings", version=__version__, lifespan=lifespan, redoc_url=None,
        description="OpenAI-compatible sentence embeddings from a decoder-only LLM with a PromptEOL prompt.",
    )  # fmt: skip
    app.state.prompteol = state
    install_error_handlers(app)
    app.add_middleware(_Gatekeeper, state=state)
    name = settings.model_name

    def _batcher() -> MicroBatcher:
        if state.batcher is None:
            raise APIError(503, "the model is not loaded (the server is starting or stopping)", type="server_error")
        return state.batcher

    async def run(request: Request, prompts: Tokenized) -> np.ndarray | None:
        """Raw vectors of tokenized prompts through the batcher (``None``: the client left first)."""
        batcher = _batcher()
        try:
            items = list(zip(prompts.sentences, prompts.ids))
            answered, vectors = await _unless_disconnected(request, batcher.submit(items, prompts.lengths))
        except ShuttingDown as exc:
            raise APIError(503, str(exc), type="server_error", code="shutting_down") from None
        except MemoryLimitError as exc:  # one input needs more memory than is free now (checked before any forward)
            message = re.sub(r"^texts\[\d+\]", "an input", str(exc))  # its index in the merged group, not in 'input'
            raise APIError(503, message, type="server_error", param="input", code="insufficient_memory") from None
        if not answered or vectors is None:
            state.metrics.cancelled.inc()
            return None
        state.metrics.sentences.inc(len(prompts))
        state.metrics.prompt_tokens.inc(sum(prompts.lengths))
        return vectors

    @app.post("/v1/embeddings", response_model=EmbeddingResponse, responses=_ERRORS)
    async def create_embeddings(body: EmbeddingRequest, request: Request) -> Response:
        s = settings
        if body.model != name:
            raise APIError(404, f"the model {body.model!r} does not exist on this server; it serves {name!r} "
                           f"(see GET /v1/models)", param="model", code="model_not_found")  # fmt: skip
        ids = body.token_ids()
        n = len(ids) if ids is not None else len(body.texts())
        if not n:
            raise APIError(400, "'input' is an empty list; send at least one text", param="input", code="empty_input")
        if n > s.max_inputs:
            raise APIError(400, f"'input' has {n} inputs, more than this server's limit of {s.max_inputs} "
                           f"per request (--max-inputs / PROMPTEOL_MAX_INPUTS); split it into several requests",
                           param="input", code="too_many_inputs")  # fmt: skip
        d = body.dimensions
        if d is not None and d > state.dim:
            raise APIError(400, f"'dimensions' is {d}, but {name!r} gives {state.dim}-dimensional vectors; "
                           f"use 1..{state.dim} or leave it out", param="dimensions", code="invalid_value")  # fmt: skip
        _batcher()
        names = ["'input'"] if body.single else [f"input[{i}]" for i in range(n)]
        if ids is not None:  # decoded to text (special tokens dropped), then embedded like any text
            try:
                texts = await state.in_tokenizer_thread(decode_token_ids, state.tokenizer(), ids, names)
            except InputError as exc:
                raise APIError(400, str(exc), param="input", code="invalid_value") from None
        else:
            texts = body.texts()
        # an empty string is embedded like any text (the template is still there), as by the library,
        # `prompteol encode` (a blank line) and the TEI routes: one rule on every path
        try:
            prompts = await state.tokenize(texts)
        except InputError as exc:  # a lone surrogate, a prompt over the model's positions, ...
            if body.single:  # a single input: no index to name
                message = str(exc).replace("texts[0]", "'input'")
            else:
                message = str(exc).replace("texts[", "input[")
            code = "context_length_exceeded" if isinstance(exc, ContextLengthError) else "invalid_input"
            raise APIError(400, message, param="input", code=code) from None
        counts = prompts.lengths
        too_long = [i for i, c in enumerate(counts) if c > s.max_input_tokens]
        if too_long:
            i = too_long[0]
            others = f" ({len(too_long)} inputs are too long)" if len(too_long) > 1 else ""
            raise APIError(400, f"input[{i}] is {counts[i]} tokens once rendered in the prompt template, more "
                           f"than this server's limit of {s.max_input_tokens} (--max-input-tokens / "
                           f"PROMPTEOL_MAX_INPUT_TOKENS){others}; shorten it",
                           param="input", code="context_length_exceeded")  # fmt: skip
        vectors = await run(request, prompts)
        if vectors is None:
            return Response(status_code=499)  # client closed the request (nginx's code); nobody reads it
        if s.normalize:
            vectors = _unit(vectors)
        if d is not None:
            vectors = vectors[:, :d]  # (N, d)
            if s.normalize:
                vectors = _unit(vectors)
        as_b64 = body.encoding_format == "base64"
        data = [Embedding(embedding=_b64(v) if as_b64 else v.tolist(), index=i) for i, v in enumerate(vectors)]
        usage = Usage(prompt_tokens=sum(counts), total_tokens=sum(counts))
        out = EmbeddingResponse(data=data, model=name, usage=usage)
        headers = {TOKEN_IDS_HEADER: "decoded to text, embedded through the prompt template"} if ids else None
        return Response(out.model_dump_json(), media_type="application/json", headers=headers)

    @app.get("/v1/models", response_model=ModelList, responses=_ERRORS)
    async def list_models() -> ModelList:
        return ModelList(data=[ModelCard(id=name, created=state.created)])

    @app.get("/v1/models/{model_id:path}", response_model=ModelCard, responses=_ERRORS)
    async def get_model(model_id: str) -> ModelCard:
        if model_id != name:
            raise APIError(404, f"the model {model_id!r} does not exist on this server; it serves {name!r}",
                           param="model", code="model_not_found")  # fmt: skip
        return ModelCard(id=name, created=state.created)

    @app.get("/health")
    async def health() -> Response:
        batcher = state.batcher
        if batcher is None:
            return error_response(503, "the model is not loaded", type="server_error")
        return JSONResponse({"status": "ok", "model": name, "dimensions": state.dim, "queue_depth": batcher.queued})

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    install_tei(app, state, run)
    return app
