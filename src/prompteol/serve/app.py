"""The FastAPI app: ``create_app(settings, encoder=None)``.

Routes: OpenAI's ``POST /v1/embeddings``, ``GET /v1/models``, ``GET /v1/models/{id}``
(:mod:`prompteol.serve.openai`); text-embeddings-inference's ``POST /embed`` (also ``POST /``),
``POST /tokenize`` and ``GET /info`` (:mod:`prompteol.serve.tei`); ``GET /health`` and ``GET /metrics``
here. The encoder is loaded in the lifespan hook (unless one is given, as tests do) and warmed up once
(:class:`~prompteol.serve.state.ServerState`). Before any route, the gatekeeper middleware counts the
request, checks the API key and the body's size, type and encoding; every error leaves in the shape of its
route's API (:mod:`prompteol.serve.errors`).
"""

from __future__ import annotations

import hmac
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from .errors import TEI_PATHS, ServeError, install_error_handlers, too_large
from .metrics import ROUTES
from .openai import install_openai
from .settings import ServeSettings
from .state import EmbeddingModel, ServerState, load_encoder
from .tei import install_tei

__all__ = ["create_app", "EmbeddingModel", "ServerState", "load_encoder"]

#: paths answered without an API key: probes, scraping and the API description
OPEN_PATHS = frozenset({"/health", "/metrics", "/docs", "/docs/oauth2-redirect", "/openapi.json"})
#: paths with their own metrics label (anything else is "other")
LABELLED = frozenset(ROUTES) | TEI_PATHS
#: POST routes whose body is JSON, checked (content type, empty, UTF-8) before FastAPI parses it
JSON_PATHS = frozenset({"/v1/embeddings"}) | (TEI_PATHS - {"/info"})


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
                await rejection.response(path)(scope, receive, send_and_note)  # in the shape of the route's API
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
            return ServeError(415, f"the request's Content-Type {given}; send the JSON body with 'Content-Type: "
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
            return ServeError(400, "the request body is empty; send a JSON object, e.g. "
                            f"{{\"model\": \"{self.state.settings.model_name}\", \"input\": \"some text\"}} "
                            "(text-embeddings-inference routes: {\"inputs\": \"some text\"})",
                            code="empty_body"), receive  # fmt: skip
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            return ServeError(400, f"the request body is not UTF-8 (byte 0x{body[exc.start]:02x} at offset "
                            f"{exc.start}); send JSON text encoded as UTF-8", code="invalid_encoding"), receive  # fmt: skip
        return None, _replay([{"type": "http.request", "body": body, "more_body": False}], receive)

    def _check(self, scope, path: str) -> ServeError | None:
        headers = dict(scope.get("headers") or ())
        if self._key is not None and path not in OPEN_PATHS:
            auth = headers.get(b"authorization", b"")
            scheme, _, given = auth.partition(b" ")
            if not auth or scheme.lower() != b"bearer" or not given.strip():
                return ServeError(
                    401, "missing API key: send it as 'Authorization: Bearer <key>' (the openai client's api_key); "
                    "the server's key is set with --api-key or PROMPTEOL_API_KEY",
                    code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"},
                )  # fmt: skip
            if not hmac.compare_digest(given.strip(), self._key):
                return ServeError(401, "invalid API key: the key sent in 'Authorization: Bearer <key>' is not this "
                                "server's key", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
        length = headers.get(b"content-length")
        if length is not None:
            limit = self.state.settings.max_request_bytes
            if not length.isdigit():
                return ServeError(400, f"invalid Content-Length header {length.decode('latin-1')!r}", code="invalid_body")
            if int(length) > limit:
                return too_large(limit, int(length))
        return None


def _replay(messages: list, receive):
    """A receive that gives ``messages`` first, then what the client sends next (a disconnect)."""
    queue = list(messages)

    async def replayed():
        return queue.pop(0) if queue else await receive()

    return replayed


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
    install_openai(app, state)
    install_tei(app, state)

    @app.get("/health")
    async def health() -> Response:
        batcher = state.batcher
        if batcher is None:
            return ServeError(503, "the model is not loaded", type="server_error").openai_response()
        return JSONResponse({"status": "ok", "model": settings.model_name, "dimensions": state.dim,
                             "queue_depth": batcher.queued})  # fmt: skip

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
