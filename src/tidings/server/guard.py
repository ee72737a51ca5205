"""Requests refused before routing: a URL that holds a NUL character."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from tidings.server.errors import error_response
from tidings.wire import ErrorBody


class RefuseNul:
    """ASGI middleware: 400 ``invalid_input`` for a path or query string holding NUL.

    No stream name, event type or category can hold one, so nothing is lost; and
    PostgreSQL cannot even compare text with one: its error would read as the store
    being unavailable (503), when the request is what is wrong.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer 400 for a URL with a NUL, else pass the request on."""
        if scope["type"] == "http":
            query: bytes = scope.get("query_string", b"")
            if "\x00" in scope["path"] or b"%00" in query or b"\x00" in query:
                body = ErrorBody("invalid_input", "the URL holds a NUL character (%00)")
                await error_response(400, body)(scope, receive, send)
                return
        await self.app(scope, receive, send)
