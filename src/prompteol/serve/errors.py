"""Every error leaves the server in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.

Client mistakes are 4xx with ``type="invalid_request_error"``; only a fault of the server
itself is a 500 (``type="server_error"``), and it is logged with its traceback.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import InputError

__all__ = ["APIError", "error_response", "install_error_handlers", "too_large"]

log = logging.getLogger(__name__)


class APIError(Exception):
    """An error answered to the client with ``status`` and the OpenAI error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, type=self.type, param=self.param, code=self.code,
                              headers=self.headers)  # fmt: skip


def error_response(
    status: int,
    message: str,
    *,
    type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"message": message, "type": type, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def too_large(limit: int, size: int | None = None) -> APIError:
    given = f"is {size} bytes" if size is not None else "is larger than that"
    return APIError(413, f"the request body {given}, over this server's limit of {limit} bytes "
                    f"(--max-request-bytes / PROMPTEOL_MAX_REQUEST_BYTES); send fewer inputs per request",
                    code="request_too_large")  # fmt: skip


def _validation_message(exc: RequestValidationError) -> APIError:
    errors = exc.errors()
    for err in errors:
        if err.get("type") == "json_invalid":
            reason = (err.get("ctx") or {}).get("error", "invalid JSON")
            return APIError(400, f"could not parse the request body as JSON ({reason}); send a JSON object",
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
    return APIError(400, text, param=param, code=code)


def install_error_handlers(app: FastAPI) -> None:
    """Map every exception a request can raise to the OpenAI error shape."""

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # 400, as OpenAI answers every malformed request (FastAPI's default would be 422)
        return _validation_message(exc).response()

    @app.exception_handler(InputError)
    async def _input(request: Request, exc: InputError) -> JSONResponse:
        return error_response(400, str(exc), param="input", code="invalid_input")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}; see GET /docs for the API"
        elif exc.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path}"
        elif exc.status_code == 413:
            return too_large(request.app.state.prompteol.settings.max_request_bytes).response()
        else:
            message = str(exc.detail)
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return error_response(exc.status_code, message, type=kind, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error while answering %s %s", request.method, request.url.path)
        return error_response(500, "internal server error; the details are in the server log", type="server_error")
