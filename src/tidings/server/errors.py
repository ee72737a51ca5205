"""The one place where exceptions become responses, all with the same error body."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.routing import Match

from tidings.errors import TidingsError
from tidings.wire import ErrorBody, VersionConflictBody, encoder, error_body, error_kind

log = logging.getLogger("tidings.server")

_HTTP_CODES = {
    400: "invalid_input",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    503: "unavailable",
}


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


class ApiError(Exception):
    """An error response the server means to send: a status, a code and details."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        **details: Any,
    ) -> None:
        self.status = status
        self.body = ErrorBody(code, message, **details)
        self.headers = headers
        super().__init__(message)


def error_response(
    status: int, body: ErrorBody | VersionConflictBody, headers: Mapping[str, str] | None = None
) -> Response:
    """A JSON error response in the one shape every error has."""
    return Response(encoder.encode(body), status, headers, media_type="application/json")


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.body, exc.headers)


async def _tidings_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TidingsError)
    kind = error_kind(exc)
    if kind is None:
        log.exception("unexpected tidings error on %s %s", request.method, request.url.path)
        return error_response(500, ErrorBody("internal_error", "the server failed"))
    headers = {"Retry-After": "1"} if kind.status == 503 else None
    if kind.status == 503:
        log.warning("store unavailable on %s %s: %s", request.method, request.url.path, exc)
    return error_response(kind.status, error_body(exc, kind.code), headers)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = exc.errors()
    first = problems[0] if problems else {}
    where = ".".join(str(part) for part in first.get("loc", ()))
    message = f"{where}: {first.get('msg', 'invalid')}" if where else "invalid request"
    return error_response(422, ErrorBody("validation_error", message, field=where or None))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    headers = exc.headers
    if exc.status_code == 405:
        headers = {**(headers or {}), "Allow": _allowed(request)}
    return error_response(exc.status_code, ErrorBody(code, message), headers)


def _allowed(request: Request) -> str:
    """Every method served at the request's path (Starlette names only the first route's:
    ``POST`` alone for ``/streams/{stream}/events``, which is read with ``GET`` too)."""
    routes = request.app.router.routes  # FastAPI wraps included routers: ask each route
    return ", ".join(
        method
        for method in _METHODS
        if any(r.matches({**request.scope, "method": method})[0] is Match.FULL for r in routes)
    )


async def _unexpected(request: Request, exc: Exception) -> Response:
    if isinstance(exc, ClientDisconnect):  # the client left mid-body: nobody to answer
        log.debug("client left during %s %s", request.method, request.url.path)
        return error_response(400, ErrorBody("client_disconnected", "the client went away"))
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return error_response(500, ErrorBody("internal_error", "the server failed"))


def install(app: FastAPI) -> None:
    """Route every exception through the one error body."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(TidingsError, _tidings_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
