"""``FastApp``: FastAPI, with the hot routes answered before its own stack is entered."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send


class FastApp(FastAPI):
    """FastAPI whose ``fast_routes`` skip its layers: the error middlewares, the body
    limit, the router and its dependency solving (each layer is paid by every request;
    for a 1-event append they were a third of the server's time).

    A fast route still passes the app's own middleware (the same classes, in the same
    order), and its exceptions still become responses through the app's exception
    handlers. Its endpoint is a plain ``async (Request) -> Response``; FastAPI's route for
    the same path stays, for the OpenAPI document.
    """

    def __init__(self, *args: Any, fast_routes: Sequence[Route] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fast_routes = tuple(fast_routes)
        self._fast: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a fast route's request here, anything else through FastAPI."""
        if scope["type"] == "http" and scope["method"] == "POST":
            for route in self.fast_routes:
                match, child = route.matches(scope)
                if match is Match.FULL:
                    scope.update(child)
                    scope["app"] = self
                    scope["route"] = route
                    if self._fast is None:
                        self._fast = self._layered()
                    await self._fast(scope, receive, send)
                    return
        await super().__call__(scope, receive, send)

    def _layered(self) -> ASGIApp:
        app: ASGIApp = self._answer
        for middleware in reversed(self.user_middleware):
            app = middleware.cls(app, *middleware.args, **middleware.kwargs)
        return app

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        try:
            response = await scope["endpoint"](request)
        except Exception as exc:
            handlers = self.exception_handlers
            handler = next((handlers[c] for c in type(exc).__mro__ if c in handlers), None)
            if handler is None:
                raise
            answer = handler(request, exc)  # the app's handlers are all async
            response = await answer if inspect.isawaitable(answer) else answer
        await response(scope, receive, send)
