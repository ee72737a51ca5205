"""The first layer every request passes: refuse a URL with NUL, count and time the request,
and name the store in every answer (the ``tidings-store`` header: its identity). A
request that names another store in that header (positions of a store since restored,
or of another one) is refused with 409 ``store_changed``: the reader starts over."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tidings.server.errors import error_response
from tidings.server.metrics import ServerMetrics
from tidings.wire import ErrorBody

STORE_HEADER = b"tidings-store"
"""The response header naming the store the positions of an answer belong to."""


def _identity_of(scope: Scope) -> bytes | None:
    node = getattr(getattr(scope.get("app"), "state", None), "tidings", None)
    identity = getattr(getattr(node, "store", None), "identity", None)
    return identity.encode() if isinstance(identity, str) else None


def _asked_identity(scope: Scope) -> bytes | None:
    """The store a request's positions belong to, if it says: its ``tidings-store``
    header, or a ``store`` query parameter (for a browser's ``EventSource``, which sends
    no headers of its own: its URL carries it, and a reconnection to another store then
    fails for good instead of resuming)."""
    for name, value in scope.get("headers", ()):
        if name == STORE_HEADER:
            return bytes(value).strip()
    query: bytes = scope.get("query_string", b"")
    if b"store=" in query:
        for key, value in parse_qsl(query.decode("latin-1")):
            if key == "store":
                return value.strip().encode()
    return None


class Front:
    """ASGI middleware: 400 ``invalid_input`` for a URL holding NUL; metrics for every request.

    No stream name, event type or category can hold a NUL, so nothing is lost by refusing
    one; and PostgreSQL cannot even compare text with one: its error would read as the
    store being unavailable (503), when the request is what is wrong. Each request is
    counted by route template and status, and timed to its first byte (the start of the
    body, for live streams). One layer for both: each layer costs every request.
    """

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer 400 for a URL with a NUL, else pass the request on and record it."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        query: bytes = scope.get("query_string", b"")
        if "\x00" in scope["path"] or b"%00" in query or b"\x00" in query:
            body = ErrorBody("invalid_input", "the URL holds a NUL character (%00)")
            await error_response(400, body)(scope, receive, send)
            self._record(scope, 400, started)
            return
        identity = _identity_of(scope)
        if identity is not None:
            asked = _asked_identity(scope)
            if asked is not None and asked != identity:
                body = ErrorBody(
                    "store_changed",
                    f"the store is {identity.decode()}, not {asked.decode(errors='replace')}"
                    " whose positions were given: start over",
                    identity=asked.decode(errors="replace"),
                    current=identity.decode(),
                )
                await error_response(409, body, {"tidings-store": identity.decode()})(
                    scope, receive, send
                )
                self._record(scope, 409, started)
                return
        answered = False

        async def sending(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start":
                answered = True
                self._record(scope, message["status"], started)
                if identity is not None:
                    message["headers"] = [*message.get("headers", ()), (STORE_HEADER, identity)]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            if not answered:  # failed before answering
                self._record(scope, 500, None)

    def _record(self, scope: Scope, status: int, started: float | None) -> None:
        key = (scope["method"], getattr(scope.get("route"), "path", "unmatched"), status)
        children = self._children.get(key)
        if children is None:  # ``labels()`` takes a lock and builds a key: once per series
            method, route, _ = key
            children = self._children[key] = (
                self.metrics.latency.labels(method, route),
                self.metrics.requests.labels(method, route, str(status)),
            )
        if started is not None:
            children[0].observe(time.perf_counter() - started)
        children[1].inc()
