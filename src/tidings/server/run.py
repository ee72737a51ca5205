"""Run the server with uvicorn: bind, say where, and stop cleanly on SIGTERM or SIGINT.

On a stop signal the server stops accepting connections, lets requests in flight
(appends included) finish, ends every live stream with a last ``retry:``, then closes
the store; all within ``shutdown_timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import logging
import socket
from collections.abc import Callable, Iterator

import uvicorn
from fastapi import FastAPI

from tidings.errors import ConfigurationError
from tidings.server.app import create_app
from tidings.server.node import Node
from tidings.server.settings import Settings


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(settings: Settings) -> None:
    """Refuse to serve without auth on an address other machines can reach."""
    if not is_loopback(settings.host) and not settings.insecure and not settings.auth.enabled:
        raise ConfigurationError(
            f"refusing to serve on {settings.host} without authentication: bind a loopback "
            "address, configure auth, or pass --insecure"
        )


def tune_gc() -> None:
    """Fewer cyclic collections for a long-running server: freeze what start-up made
    (modules, app, store) out of the collector's sight and collect the young generation
    less often. Measured: the collector took ~13% of a busy server's time (bench/http.py)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 50)


_CLOSE_HANDSHAKE = 0.3  # seconds for WebSocket clients to answer the server's close


class _Server(uvicorn.Server):
    """uvicorn's server, which tells live streams to end before it waits for them."""

    def __init__(
        self, config: uvicorn.Config, app: FastAPI, on_listen: Callable[[str], None]
    ) -> None:
        super().__init__(config)
        self._app = app
        self._on_listen = on_listen

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.should_exit or not self.servers:
            return
        host, port = self.servers[0].sockets[0].getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        tune_gc()
        self._on_listen(f"http://{shown}:{port}")

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        node: Node | None = getattr(self._app.state, "tidings", None)
        if node is not None:
            had_sockets = bool(node.ws_connections)
            node.begin_stop()
            await node.ws_closed(min(2.0, node.settings.shutdown_timeout))
            if had_sockets:  # let clients answer the close frames before the transports go
                await asyncio.sleep(_CLOSE_HANDSHAKE)
        await super().shutdown(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """uvicorn's, less its raising the stop signal again once stopped: a stop that
        ran its course exits 0 (uvicorn would die of the SIGTERM it handled, -15)."""
        with super().capture_signals():
            try:
                yield
            finally:
                self._captured_signals.clear()


class HideQueries(logging.Filter):
    """Drop the query string from uvicorn's WebSocket lines (``"WebSocket /ws?..."``
    [accepted]): a browser's token can travel there, and must never reach a log."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep the record, with any ``?query`` of its string arguments cut off."""
        if isinstance(record.args, tuple) and "WebSocket" in str(record.msg):
            record.args = tuple(
                a.split("?", 1)[0] if isinstance(a, str) else a for a in record.args
            )
        return True


def serve(settings: Settings, on_listen: Callable[[str], None] | None = None) -> None:
    """Serve ``settings.store`` until a stop signal; ``on_listen(base_url)`` once bound."""
    check_exposure(settings)
    logging.getLogger("uvicorn.error").addFilter(HideQueries())
    app = create_app(settings.store, settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        lifespan="on",
        access_log=False,  # query strings can carry tokens: never log them
        ws_max_size=settings.ws.max_message_bytes,  # uvicorn closes with 1009 past it
        ws_per_message_deflate=settings.ws.compression,
        timeout_graceful_shutdown=int(max(1, settings.shutdown_timeout)),
        log_level="info",
    )
    _Server(config, app, on_listen or (lambda url: None)).run()
