"""One error hierarchy, one status mapping, one OpenAI error envelope.

Services raise `APIError` subclasses; handlers registered once on the base class turn them into
`{"error": {"message", "type", "param", "code"}}`. Anything else becomes a clean 500 whose text
never reaches the client.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

log = logging.getLogger(__name__)

QUOTE_LIMIT = 64  # characters of a caller's value an error message may quote


def quoted(value: object, limit: int = QUOTE_LIMIT) -> str:
    """A caller-supplied value as an error message may quote it: in quotes, cut to `limit`
    characters. An error must not echo a 200 KB model name (or any other input) back: the
    response, every log line and every proxy buffer would carry it."""
    return f"'{clipped(str(value), limit)}'"


def clipped(value: str, limit: int = QUOTE_LIMIT) -> str:
    """Cut to `limit` characters, marked with "…" when cut (an error's `param` may name input)."""
    return value[:limit] + "…" if len(value) > limit else value


class APIError(Exception):
    status: int = 500
    type: str = "server_error"
    code: str = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers = headers
        if code is not None:
            self.code = code

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.code, self.param)


class InvalidRequest(APIError):
    status, type, code = 400, "invalid_request_error", "invalid_request"


class AuthenticationFailed(APIError):
    status, type, code = 401, "authentication_error", "invalid_api_key"


class NotFound(APIError):
    status, type, code = 404, "invalid_request_error", "not_found"


class PayloadTooLarge(APIError):
    status, type, code = 413, "invalid_request_error", "payload_too_large"


class UnsupportedMediaType(APIError):
    status, type, code = 415, "invalid_request_error", "unsupported_media_type"


class Unprocessable(APIError):
    status, type, code = 422, "invalid_request_error", "unprocessable"


class Overloaded(APIError):
    status, type, code = 429, "rate_limit_error", "overloaded"


class InternalError(APIError):
    status, type, code = 500, "server_error", "internal_error"


class BadModelAnswer(APIError):
    status, type, code = 502, "server_error", "invalid_model_answer"


class Unavailable(APIError):
    status, type, code = 503, "server_error", "unavailable"


class Timeout(APIError):
    status, type, code = 504, "server_error", "timeout"


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


_DESCRIPTIONS = {
    400: "Invalid request (validation, limits, unsupported parameter).",
    401: "Missing or wrong API key.",
    404: "Unknown model.",
    408: "The request body did not arrive in time.",
    413: "Body or image too large.",
    415: "Image format not supported.",
    422: "Well-formed but unprocessable (e.g. no face detected).",
    429: "Overloaded: retry after the Retry-After header.",
    500: "Internal error.",
    502: "The model's answer failed server-side validation.",
    503: "Not ready, draining, or engine unavailable.",
    504: "Deadline exceeded.",
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text} for status, text in _DESCRIPTIONS.items()
}

_HTTP_CODES = {
    400: "invalid_request",  # e.g. a body FastAPI cannot parse (nested past the recursion limit)
    404: "not_found",
    405: "method_not_allowed",
    408: "body_timeout",  # the body stalled or took too long to arrive (middleware.py)
    413: "body_too_large",  # the body cap, tripped while FastAPI reads a chunked body
}


def error_body(message: str, type_: str, code: str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    return validation_message(exc.errors())


def validation_message(errors: Sequence[Any]) -> tuple[str, str | None]:
    """First pydantic error as a short sentence and a dotted param path (no input values echoed)."""
    if not errors:
        return "Invalid request.", None
    first = errors[0]
    # Locations can be the caller's own keys (an unknown field, a metadata key): clipped.
    loc = [clipped(str(p)) for p in first.get("loc", ()) if p != "body"]
    param = clipped(".".join(loc), 2 * QUOTE_LIMIT) or None
    where = f" at {quoted(param, 2 * QUOTE_LIMIT)}" if param else ""
    # pydantic's own words, clipped too: a few of them quote the input (e.g. a union's tag).
    reason = clipped(str(first.get("msg", "invalid value")), 4 * QUOTE_LIMIT)
    return f"Invalid request{where}: {reason}.", param


def _allowed(request: Request) -> str:
    """Every method the path takes. Starlette's own `Allow` names only the first route of the
    path, where one path has a route per method (GET and POST /v1/files)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches({**request.scope, "method": "__none__"})
        if match != Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return ", ".join(sorted(methods))


def register_error_handlers(app: FastAPI) -> None:
    async def api_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, APIError)
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    async def validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        message, param = _validation_message(exc)
        return JSONResponse(error_body(message, InvalidRequest.type, "invalid_request", param), 400)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        headers = exc.headers
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": _allowed(request)}
        return JSONResponse(error_body(str(exc.detail), kind, code), exc.status_code, headers)

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            error_body("Internal server error.", "server_error", "internal_error"), 500
        )

    app.add_exception_handler(APIError, api_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
