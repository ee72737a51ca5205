"""``create_app``: the tidings server as one ASGI app, to run or to mount."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from prometheus_client import CollectorRegistry

from tidings.server import errors, metrics, openapi
from tidings.server.auth import Authenticator
from tidings.server.declared import load_types
from tidings.server.fast import FastApp
from tidings.server.guard import Front
from tidings.server.limits import RateLimiter
from tidings.server.live import LiveLog
from tidings.server.metrics import ServerMetrics
from tidings.server.node import Node
from tidings.server.routes import (
    eventstreams,
    gateway,
    health,
    live,
    store,
    subscriptions,
    sync,
    views,
    ws,
)
from tidings.server.settings import Settings
from tidings.store import EventStore

DESCRIPTION = """A durable event store over HTTP: append to streams with optimistic
concurrency, read streams and the global log, follow it live over Server-Sent Events.
Every error is `{"error": code, "message": ..., details}`."""


def create_app(
    store_or_url: EventStore | str | None = None,
    settings: Settings | None = None,
    registry: CollectorRegistry | None = None,
) -> FastAPI:
    """The tidings server for ``store_or_url`` (an open store, or a URL to open).

    A store given open is left open when the app stops; a URL is opened when the app
    starts (its lifespan) and closed when it stops. Mount it in your own app with
    ``app.mount("/events", create_app(store))``: given an open store it serves at once;
    run its lifespan from yours (``async with events.router.lifespan_context(events)``)
    for declared views and a clean stop of live streams. Metrics go to ``registry`` (a
    ``prometheus_client.CollectorRegistry``; by default one of the app's own).
    """
    settings = settings or Settings()
    target = settings.store if store_or_url is None else store_or_url
    if settings.types is not None:
        load_types(settings.types)  # a bad import path fails here, not at the first read

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if isinstance(target, str):
            node = await _open(target, settings)
            app.state.tidings = node
            app.state.metrics.attach(node)
        else:
            node = app.state.tidings
        try:
            await node.start_views()
        except BaseException:
            await node.close()
            raise
        try:
            yield
        finally:
            await node.close()

    from tidings import __version__

    app = FastApp(
        title="tidings",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
        fast_routes=store.FAST_ROUTES,  # the hot paths, past FastAPI's layers
    )
    app.state.authenticator = Authenticator(settings.auth)
    limited = settings.rate_limit > 0
    app.state.rate_limiter = (
        RateLimiter(settings.rate_limit, settings.rate_burst) if limited else None
    )
    app.state.metrics = ServerMetrics(registry)
    if not isinstance(target, str):
        # An open store needs no start-up: the app serves at once, even mounted in a host
        # app whose lifespan never runs this one's (views then wait for that lifespan).
        node = Node(target, settings, False, LiveLog(target, settings.max_page))
        app.state.tidings = node
        app.state.metrics.attach(node)
    errors.install(app)
    openapi.install(app)
    routers = (live.router, store.router, views.router, health.router, metrics.router)
    for router in (
        *routers,
        subscriptions.router,
        eventstreams.router,
        ws.router,
        gateway.router,
        sync.router,
    ):  # live first: its paths end in /live
        app.include_router(router)
    app.add_middleware(Front, metrics=app.state.metrics)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "Last-Event-ID",
                "X-API-Key",
                "Tidings-Store",
            ],
            expose_headers=["Retry-After", "Tidings-Store"],
        )
    return app


async def _open(url: str, settings: Settings) -> Node:
    from tidings.wiring import connect

    notify = None if settings.notify in (None, "", "none") else settings.notify
    opened = await connect(url, notify=notify)
    return Node(opened, settings, True, LiveLog(opened, settings.max_page))
