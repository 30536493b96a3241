"""One error type for every answer that is not a success, rendered in the shape of the route's API.

:class:`ServeError` holds what went wrong (status, message, parameter, code, headers); it leaves the server
as OpenAI's body ``{"error": {"message", "type", "param", "code"}}`` on the OpenAI routes and as
text-embeddings-inference's ``{"error": "...", "error_type": "Validation"}`` on the TEI routes
(:data:`TEI_PATHS`; TEI's ``ErrorType`` names and status codes: Validation 413, Tokenizer 422, Empty 400,
Overloaded 429, Backend 424, Unhealthy 503). Client mistakes are 4xx; only a fault of the server itself is
a 500 (``server_error``), and it is logged with its traceback. Every exception a request can raise is
turned into a ``ServeError`` once (:func:`install_error_handlers`) and rendered once.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import InputError

__all__ = ["ServeError", "TEI_PATHS", "TEI_STATUS", "install_error_handlers", "too_large"]

log = logging.getLogger(__name__)

#: the routes answered in TEI's shapes (errors included)
TEI_PATHS = frozenset({"/", "/embed", "/tokenize", "/info"})
#: TEI's ErrorType -> HTTP status (text-embeddings-inference router/src/http/server.rs)
TEI_STATUS = {"Validation": 413, "Tokenizer": 422, "Empty": 400, "Overloaded": 429, "Backend": 424, "Unhealthy": 503}


class ServeError(Exception):
    """An error answered to the client: ``status`` and the message, in the shape of the route's API.

    ``type``, ``param`` and ``code`` are OpenAI's fields; ``tei_type`` (and ``tei_status``, default TEI's
    status of that type) say how TEI names it, when that is not what :meth:`tei_view` derives.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        tei_type: str | None = None,
        tei_status: int | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers
        self.tei_type = tei_type
        self.tei_status = tei_status

    @classmethod
    def tei(cls, message: str, error_type: str = "Validation", status: int | None = None) -> ServeError:
        """An error raised by a TEI route, in TEI's terms (its status defaults to TEI's status of the type)."""
        status = status if status is not None else TEI_STATUS[error_type]
        kind = "server_error" if status >= 500 else "invalid_request_error"
        return cls(status, message, type=kind, tei_type=error_type, tei_status=status)

    def tei_view(self) -> tuple[int, str]:
        """``(status, error_type)`` on a TEI route: the type given, else TEI's name for this error."""
        if self.tei_type is not None:
            return (self.tei_status if self.tei_status is not None else TEI_STATUS[self.tei_type]), self.tei_type
        if self.status == 503:
            return (424, "Backend") if self.code == "insufficient_memory" else (503, "Unhealthy")
        if self.code == "context_length_exceeded":
            return 413, "Validation"
        return self.status, "Backend" if self.status >= 500 else "Validation"

    def openai_response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)

    def tei_response(self) -> JSONResponse:
        status, error_type = self.tei_view()
        headers = {k: v for k, v in (self.headers or {}).items() if k.lower() == "www-authenticate"} or None
        return JSONResponse({"error": self.message, "error_type": error_type}, status_code=status, headers=headers)

    def response(self, path: str) -> JSONResponse:
        """The answer on ``path``: TEI's shape on :data:`TEI_PATHS`, OpenAI's elsewhere."""
        return self.tei_response() if path in TEI_PATHS else self.openai_response()


def too_large(limit: int, size: int | None = None) -> ServeError:
    given = f"is {size} bytes" if size is not None else "is larger than that"
    return ServeError(413, f"the request body {given}, over this server's limit of {limit} bytes "
                      f"(--max-request-bytes / PROMPTEOL_MAX_REQUEST_BYTES); send fewer inputs per request",
                      code="request_too_large")  # fmt: skip


def _validation_error(exc: RequestValidationError) -> ServeError:
    """A body that does not parse or validate: 400 (OpenAI answers every malformed request so); on the TEI
    routes 422 Validation, as TEI's JSON extractor answers a body of the wrong shape (bad JSON: 400)."""
    errors = exc.errors()
    for err in errors:
        if err.get("type") == "json_invalid":
            reason = (err.get("ctx") or {}).get("error", "invalid JSON")
            return ServeError(400, f"could not parse the request body as JSON ({reason}); send a JSON object",
                              code="invalid_json")  # fmt: skip
    err = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    loc = [str(p) for p in err.get("loc", ()) if p != "body"]
    param = loc[0] if loc else None  # the top-level field, as OpenAI names it
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    code = "invalid_value" if loc else "invalid_body"
    if err.get("type") == "missing":
        text = f"missing required parameter '{param}'"
        code = "missing_parameter"
    elif err.get("type") == "extra_forbidden":
        text = f"unrecognized request argument '{param}'; valid: input, model, encoding_format, dimensions, user"
    elif not loc:
        text = f"the request body should be a JSON object ({msg})"
    else:
        text = f"invalid value for '{param}': {msg}"
    more = len(errors) - 1
    if more > 0:
        text += f" (and {more} more problem{'s' if more > 1 else ''})"
    return ServeError(400, text, param=param, code=code, tei_type="Validation", tei_status=422)


def _http_error(request: Request, exc: StarletteHTTPException) -> ServeError:
    if exc.status_code == 404:
        message = f"no route {request.method} {request.url.path}; see GET /docs for the API"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    elif exc.status_code == 413:
        return too_large(request.app.state.prompteol.settings.max_request_bytes)
    else:
        message = str(exc.detail)
    kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
    return ServeError(exc.status_code, message, type=kind, headers=getattr(exc, "headers", None))


def install_error_handlers(app: FastAPI) -> None:
    """Every exception a request can raise, as a :class:`ServeError` rendered for its route."""

    @app.exception_handler(ServeError)
    async def _serve_error(request: Request, exc: ServeError) -> JSONResponse:
        return exc.response(request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_error(exc).response(request.url.path)

    @app.exception_handler(InputError)
    async def _input(request: Request, exc: InputError) -> JSONResponse:
        return ServeError(400, str(exc), param="input", code="invalid_input").response(request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _http_error(request, exc).response(request.url.path)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error while answering %s %s", request.method, request.url.path)
        error = ServeError(500, "internal server error; the details are in the server log", type="server_error")
        return error.response(request.url.path)
