"""Real ``tidings serve`` processes for the WebSocket gateway's protocol tests, and a
small ``tidings.v1`` client over the ``websockets`` library.

Each settings combination the tests need is one server for the whole session, all of
them started at once (each takes about a second). Tests share them, so each one works
in categories of its own (``category()``) or from the log's end.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import jwt
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Origin, Subprotocol

from tests.served import Served, start_server
from tidings.server.auth import hash_key

RECV_TIMEOUT = 5.0  # every receive is bounded: a bug fails, it does not hang
QUIET = 0.3  # how long "nothing more arrives" is watched for

SECRET = "a-shared-secret-of-enough-length-for-hs256-tests"
ADMIN_KEY = "gateway-admin-key-0123456789abcdef"
NARROW_CATEGORY = "k" + uuid.uuid4().hex[:8]
NARROW_KEY = "gateway-narrow-key-0123456789abcdef"
KEYS = [
    {"name": "ci", "hash": hash_key(ADMIN_KEY), "scopes": ["admin"]},
    {"name": "narrow", "hash": hash_key(NARROW_KEY), "scopes": [f"subscribe:{NARROW_CATEGORY}"]},
]
ALLOWED_ORIGIN = "https://ok.example"

# The settings of each session server (TIDINGS_* variables).
SERVERS: dict[str, dict[str, str]] = {
    # the protocol tests: small batches and windows, a small message and subscription cap
    "main": {
        "TIDINGS_WS__MAX_IN_FLIGHT": "2",
        "TIDINGS_WS__BATCH_EVENTS": "10",
        "TIDINGS_WS__MAX_SUBSCRIPTIONS": "3",
        "TIDINGS_WS__MAX_MESSAGE_BYTES": "4096",
    },
    # rate limits are per caller, and without auth every connection is the same caller
    "rate": {"TIDINGS_WS__MESSAGES_PER_SECOND": "5"},
    # two connections at most; a live queue small enough to overflow while paused
    "tight": {
        "TIDINGS_WS__MAX_CONNECTIONS": "2",
        "TIDINGS_WS__MAX_IN_FLIGHT": "1",
        "TIDINGS_WS__BATCH_EVENTS": "3",
        "TIDINGS_WS__LIVE_QUEUE_EVENTS": "5",
    },
    "auth": {
        "TIDINGS_AUTH__API_KEYS": json.dumps(KEYS),
        "TIDINGS_AUTH__JWT_SECRET": SECRET,
        "TIDINGS_WS__AUTH_TIMEOUT": "1",
        "TIDINGS_WS__BATCH_EVENTS": "10",
        "TIDINGS_CORS_ORIGINS": json.dumps([ALLOWED_ORIGIN]),
    },
}


def _stop(server: Served) -> None:
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.stop(signal.SIGTERM, timeout=15)
        return
    server.process.kill()
    server.process.wait()
    server.release()


@pytest.fixture(scope="session")
def gateway_servers(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, concurrent.futures.Future[Served]]]:
    """Every session server, started together on a SQLite store of its own."""
    pool = concurrent.futures.ThreadPoolExecutor(len(SERVERS), thread_name_prefix="ws-server")
    started = {
        name: pool.submit(
            start_server,
            f"sqlite:///{tmp_path_factory.mktemp('ws-' + name) / 'x.db'}",
            env=env,
        )
        for name, env in SERVERS.items()
    }
    try:
        yield started
    finally:
        running = []
        for future in started.values():
            with contextlib.suppress(Exception):
                running.append(future.result(60))
        list(pool.map(_stop, running))
        pool.shutdown()


@pytest.fixture(scope="session")
def main_server(gateway_servers: dict[str, concurrent.futures.Future[Served]]) -> Served:
    return gateway_servers["main"].result(60)


@pytest.fixture(scope="session")
def rate_server(gateway_servers: dict[str, concurrent.futures.Future[Served]]) -> Served:
    return gateway_servers["rate"].result(60)


@pytest.fixture(scope="session")
def tight_server(gateway_servers: dict[str, concurrent.futures.Future[Served]]) -> Served:
    return gateway_servers["tight"].result(60)


@pytest.fixture(scope="session")
def auth_server(gateway_servers: dict[str, concurrent.futures.Future[Served]]) -> Served:
    return gateway_servers["auth"].result(60)


def category() -> str:
    """A category no other test uses (the part of a stream name before the first ``-``)."""
    return "c" + uuid.uuid4().hex[:8]


def token(
    sub: str = "alice", scope: str | list[str] = "subscribe:*", expires_in: float = 60
) -> str:
    """An HS256 JWT the auth server accepts (``exp`` ``expires_in`` seconds from now)."""
    claims = {"sub": sub, "scope": scope, "exp": time.time() + expires_in}
    return jwt.encode(claims, SECRET, "HS256")


def ws_url(server: Served, query: str = "") -> str:
    return server.url.replace("http://", "ws://", 1) + "/ws" + query


# -- HTTP: appending and reading the log ---------------------------------------------


@asynccontextmanager
async def http_client(server: Served, key: str | None = None) -> AsyncIterator[httpx.AsyncClient]:
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=10) as client:
        yield client


async def append(
    http: httpx.AsyncClient,
    stream: str,
    count: int = 1,
    type_: str = "T",
    **data: Any,
) -> int:
    """Append ``count`` events to ``stream`` in one request; the last one's position."""
    body = {"events": [{"type": type_, "data": {"i": i, **data}} for i in range(count)]}
    response = await http.post(f"/streams/{stream}/events", json=body)
    assert response.status_code == 201, response.text
    position: int = response.json()["position"]
    return position


async def category_events(http: httpx.AsyncClient, name: str) -> list[dict[str, Any]]:
    """Every event of category ``name``, as the HTTP API reads them (position order)."""
    events: list[dict[str, Any]] = []
    after = 0
    while True:
        params: dict[str, str | int] = {"category": name, "limit": 1000, "from_position": after}
        response = await http.get("/events", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        events.extend(page["events"])
        if len(page["events"]) < 1000:
            return events
        after = page["next"]


async def head(http: httpx.AsyncClient) -> int:
    response = await http.get("/head")
    assert response.status_code == 200, response.text
    value: int = response.json()["head"]
    return value


# -- the WebSocket client ------------------------------------------------------------


class Client:
    """One ``tidings.v1`` connection: JSON messages in and out, every wait bounded."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self._pings = 0

    async def send(self, message: dict[str, Any] | str) -> None:
        await self.ws.send(message if isinstance(message, str) else json.dumps(message))

    async def recv(self, wait: float = RECV_TIMEOUT) -> dict[str, Any]:
        """The next message (ConnectionClosed when the server closed instead)."""
        async with asyncio.timeout(wait):
            raw = await self.ws.recv()
        assert isinstance(raw, str), f"a binary frame: {raw!r}"
        message = json.loads(raw)
        assert isinstance(message, dict), message
        return message

    async def expect(self, type_: str, wait: float = RECV_TIMEOUT) -> dict[str, Any]:
        """The next message, which must be of ``type_``."""
        message = await self.recv(wait)
        assert message["type"] == type_, message
        return message

    async def ready(self) -> dict[str, Any]:
        return await self.expect("ready")

    async def quiet(self, seconds: float = QUIET) -> None:
        """Nothing arrives for ``seconds``."""
        try:
            async with asyncio.timeout(seconds):
                raw = await self.ws.recv()
        except TimeoutError:
            return
        raise AssertionError(f"expected nothing, got {raw!r}")

    async def request(self, message: dict[str, Any], wait: float = RECV_TIMEOUT) -> dict[str, Any]:
        """Send ``message``; the first reply that is not a batch."""
        await self.send(message)
        async with asyncio.timeout(wait):
            while True:
                reply = await self.recv()
                if reply["type"] != "events":
                    return reply

    async def error(self, message: dict[str, Any] | str, code: str) -> dict[str, Any]:
        """Send ``message``, which must get an ``error`` ``code``; the socket stays open."""
        await self.send(message)
        reply = await self.recv()
        assert reply["type"] == "error", reply
        assert reply["error"] == code, reply
        assert isinstance(reply["message"], str) and reply["message"], reply
        await self.still_open()
        return reply

    async def still_open(self) -> None:
        """A ping still gets its pong (batches of running subscriptions may come first)."""
        self._pings += 1
        ping_id = f"alive-{self._pings}"
        reply = await self.request({"type": "ping", "id": ping_id})
        assert reply == {"type": "pong", "id": ping_id}

    async def subscribe(self, sub: str, **fields: Any) -> dict[str, Any]:
        """Subscribe; the ``subscribed`` reply, which must be the next message."""
        await self.send({"type": "subscribe", "id": f"sub-{sub}", "sub": sub, **fields})
        reply = await self.recv()  # before any batch
        assert reply["type"] == "subscribed", reply
        assert reply["id"] == f"sub-{sub}" and reply["sub"] == sub, reply
        return reply

    async def batch(self, sub: str | None = None, wait: float = RECV_TIMEOUT) -> dict[str, Any]:
        message = await self.expect("events", wait)
        if sub is not None:
            assert message["sub"] == sub, message
        return message

    async def events(
        self, sub: str, count: int, ack: bool = False, wait: float = RECV_TIMEOUT
    ) -> list[dict[str, Any]]:
        """``sub``'s batches until they hold ``count`` events (acking each if ``ack``)."""
        got: list[dict[str, Any]] = []
        async with asyncio.timeout(wait):
            while len(got) < count:
                batch = await self.batch(sub)
                got.extend(batch["events"])
                if ack:
                    await self.send({"type": "ack", "sub": sub, "batch": batch["batch"]})
        assert len(got) == count, [e["position"] for e in got]
        return got

    async def closed(
        self, wait: float = RECV_TIMEOUT, only: tuple[str, ...] | None = None
    ) -> list[dict[str, Any]]:
        """Every message until the server closes (its code: ``close_code``); with
        ``only``, a message of another type fails at once."""
        messages: list[dict[str, Any]] = []
        with contextlib.suppress(ConnectionClosed):
            async with asyncio.timeout(wait):
                while True:
                    messages.append(await self.recv(wait))
                    assert only is None or messages[-1]["type"] in only, messages
        return messages

    @property
    def close_code(self) -> int | None:
        return self.ws.close_code

    @property
    def close_reason(self) -> str | None:
        return self.ws.close_reason


@asynccontextmanager
async def connect(
    server: Served,
    *,
    subprotocols: list[str] | None = None,
    headers: dict[str, str] | None = None,
    origin: str | None = None,
    query: str = "",
) -> AsyncIterator[Client]:
    """A connection to ``server``'s ``/ws`` offering ``subprotocols`` (default ``tidings.v1``)."""
    offered = ["tidings.v1"] if subprotocols is None else subprotocols
    async with ws_connect(
        ws_url(server, query),
        subprotocols=[Subprotocol(p) for p in offered] or None,
        additional_headers=headers,
        origin=None if origin is None else Origin(origin),
        open_timeout=RECV_TIMEOUT,
        close_timeout=2,
    ) as ws:
        yield Client(ws)
