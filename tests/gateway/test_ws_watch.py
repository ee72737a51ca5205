"""Watches over the WebSocket: a view's snapshot, then changes stacked per key while the
client is slow; expiry unless wanted; scopes; every message of the watch part."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect as ws_connect

from tests.gateway.conftest import Client, connect, token
from tests.gateway.harness import Server
from tests.served import Served

SECRET = "a-shared-secret-of-enough-length-for-hs256-tests"


@pytest.fixture(scope="module")
def view_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A server folding ``profiles`` (category ``profile``, evt's new/mod/del) and
    ``secrets`` (category ``secret``), with watches that live 1.5 s unless wanted."""
    path: Path = tmp_path_factory.mktemp("views") / "views.db"
    views = [
        {"name": "profiles", "category": "profile"},
        {"name": "secrets", "category": "secret"},
    ]
    server = Server(
        f"sqlite:///{path}",
        {
            "TIDINGS_VIEWS": json.dumps(views),
            "TIDINGS_WS__WATCH_TTL": "1.5",
            "TIDINGS_WS__QUEUE_BYTES": "65536",  # a slow watcher's outbox fills soon
            "TIDINGS_AUTH__JWT_SECRET": SECRET,
        },
    )
    yield server
    server.stop(signal.SIGTERM)


def served(server: Server) -> Served:
    assert server.process is not None
    return server.process


def bearer(scope: list[str], sub: str = "w") -> dict[str, str]:
    return {"Authorization": f"Bearer {token(sub, scope)}"}


async def put(server: Server, key: str, type_: str, data: Any = None) -> int:
    """Append an evt event (new / mod / del) to ``profile-<key>``; its position."""
    async with httpx.AsyncClient(base_url=server.http, headers=bearer(["admin"])) as http:
        body = {"events": [{"type": type_, "data": data}]}
        r = await http.post(f"/streams/profile-{key}/events", json=body)
        assert r.status_code == 201, r.text
        position: int = r.json()["position"]
        return position


async def folded(server: Server, position: int) -> None:
    """Wait until the view has folded ``position``."""
    async with httpx.AsyncClient(base_url=server.http, headers=bearer(["admin"])) as http:
        r = await http.get("/views/profiles", params={"at_least": position, "keys": "x"})
        assert r.status_code == 200, r.text


async def ask(client: Client, message: dict[str, Any]) -> dict[str, Any]:
    await client.send(message)
    return await client.recv()


async def changes(client: Client, until: int) -> AsyncIterator[dict[str, Any]]:
    """Each change of ``changes`` messages up to position ``until``."""
    while True:
        message = await client.expect("changes")
        for change in message["changes"]:
            yield change
            if change["position"] >= until:
                return


async def test_a_watch_gets_its_snapshot_then_every_change_of_its_keys(
    view_server: Server,
) -> None:
    a, b, c = (uuid.uuid4().hex[:8] for _ in range(3))
    await put(view_server, a, "new", {"name": "Ann"})
    at = await put(view_server, b, "new", {"name": "Bob"})
    await folded(view_server, at)
    async with connect(served(view_server), headers=bearer(["read:profile"])) as client:
        await client.ready()
        reply = await ask(client, {"type": "watch", "id": 1, "watch": "w", "view": "profiles",
                                   "keys": [a, b, c]})  # fmt: skip
        assert reply == {"type": "watching", "id": 1, "watch": "w", "view": "profiles"}
        snapshot = await client.expect("snapshot")
        assert snapshot["watch"] == "w" and snapshot["position"] >= at
        assert snapshot["values"] == {a: {"name": "Ann"}, b: {"name": "Bob"}}
        await put(view_server, a, "mod", {"age": 30})
        await put(view_server, c, "new", {"name": "Cy"})
        await put(view_server, "other" + a, "new", {"name": "not watched"})
        last = await put(view_server, b, "del")
        got = [change async for change in changes(client, last)]
        assert [(g["key"], g.get("value"), g.get("deleted")) for g in got] == [
            (a, {"name": "Ann", "age": 30}, None),
            (c, {"name": "Cy"}, None),
            (b, None, True),
        ]
        assert [g["position"] for g in got] == sorted(g["position"] for g in got)


async def test_a_slow_watcher_gets_one_stacked_change_per_key(view_server: Server) -> None:
    key = uuid.uuid4().hex[:8]
    tiny = socket.socket()  # a receive buffer with no room to hide a backlog in
    tiny.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    tiny.connect(("127.0.0.1", view_server.port))
    async with ws_connect(
        view_server.ws, sock=tiny, additional_headers=bearer(["read:profile"]), max_queue=1
    ) as ws:
        client = Client(ws)
        await client.ready()
        await ask(client, {"type": "watch", "watch": "w", "view": "profiles", "keys": [key]})
        assert (await client.expect("snapshot"))["values"] == {}
        ws.transport.pause_reading()  # slow: reads nothing while 120 changes of 100 KB land
        pad = os.urandom(50_000).hex()
        last = 0
        wants = 0
        for i in range(120):  # 12 MB: past what the socket buffers (about 4 MB) can hold
            last = await put(view_server, key, "new" if i == 0 else "mod", {"n": i, "pad": pad})
            if i % 10 == 0:  # a slow client still wants its watch; the answers still come
                await client.send({"type": "want", "watch": "w"})
                wants += 1
        await folded(view_server, last)
        await asyncio.sleep(0.5)
        ws.transport.resume_reading()
        seen: list[dict[str, Any]] = []
        wanted = 0
        while not seen or seen[-1]["position"] < last:
            message = await client.recv()
            if message["type"] == "wanted":
                wanted += 1
                continue
            assert message["type"] == "changes", message
            seen += message["changes"]
        assert wanted <= wants
    # what the socket and the outbox held went out as it was; the rest was stacked into
    # one change per key, carrying the final value
    assert len(seen) < 60, [c["position"] for c in seen]
    assert seen[-1]["value"]["n"] == 119 and seen[-1]["position"] == last
    positions = [c["position"] for c in seen]
    assert positions == sorted(positions)


async def test_an_unwanted_watch_expires_and_a_wanted_one_does_not(view_server: Server) -> None:
    async with connect(served(view_server), headers=bearer(["read:profile"])) as client:
        await client.ready()
        for name in ("dropped", "kept"):
            await ask(client, {"type": "watch", "watch": name, "view": "profiles", "keys": ["k"]})
            await client.expect("snapshot")
        started = time.monotonic()
        expired: list[str] = []
        while time.monotonic() - started < 4.0:  # well past the 1.5-s TTL, twice over
            reply = await ask(client, {"type": "want", "id": "k", "watch": "kept"})
            if reply["type"] == "expired":
                expired.append(reply["watch"])
                reply = await client.recv()
            assert reply == {"type": "wanted", "id": "k", "watch": "kept", "expires_in": 1.5}
            await asyncio.sleep(0.5)
        assert expired == ["dropped"]
        await client.error({"type": "want", "watch": "dropped"}, "unknown_watch")
        reply = await ask(client, {"type": "unwatch", "id": 2, "watch": "kept"})
        assert reply == {"type": "unwatched", "id": 2, "watch": "kept"}
        await client.error({"type": "unwatch", "watch": "kept"}, "unknown_watch")


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ({"type": "watch", "watch": "w", "view": "nope"}, "unknown_view"),
        ({"type": "watch", "watch": "w", "view": "secrets"}, "forbidden"),
        ({"type": "watch", "watch": "w"}, "invalid_message"),
        ({"type": "watch", "watch": "w", "view": "profiles", "keys": "k"}, "invalid_message"),
        ({"type": "want", "watch": "none"}, "unknown_watch"),
    ],
    ids=["unknown-view", "no-scope", "no-view", "keys-not-a-list", "want-unknown"],
)
async def test_bad_watch_messages_get_an_error(
    view_server: Server, message: dict[str, Any], code: str
) -> None:
    async with connect(served(view_server), headers=bearer(["read:profile"])) as client:
        await client.ready()
        await client.error(message, code)


async def test_a_watch_name_in_use_is_refused(view_server: Server) -> None:
    async with connect(served(view_server), headers=bearer(["read:profile"])) as client:
        await client.ready()
        await ask(client, {"type": "watch", "watch": "w", "view": "profiles", "keys": ["k"]})
        await client.expect("snapshot")
        await client.error({"type": "watch", "watch": "w", "view": "profiles"}, "watch_exists")
