"""Channels (listen / unlisten / publish, pghub's topic, key and value) and sends to a
connection or a user (``POST /gateway/send``, ``tidings.server.ws.gateway.send``), on one
node and across nodes on PostgreSQL + NATS."""

from __future__ import annotations

import asyncio
import signal
import uuid
from typing import Any

import httpx
import pytest

from tests.gateway.conftest import (
    ADMIN_KEY,
    Client,
    connect,
    http_client,
    token,
)
from tests.gateway.harness import Server
from tests.served import Served


def channel() -> str:
    return "ch" + uuid.uuid4().hex[:10]


async def ask(client: Client, message: dict[str, Any]) -> dict[str, Any]:
    """Send ``message``; its reply (the notifier's notices may come first: skipped)."""
    await client.send(message)
    while True:
        reply = await client.recv()
        if reply["type"] != "notice":
            return reply


async def listen(client: Client, name: str) -> None:
    reply = await ask(client, {"type": "listen", "id": "l", "channel": name})
    assert reply == {"type": "listening", "id": "l", "channel": name}


async def notification(client: Client) -> dict[str, Any]:
    """The next notification (skipping the notifier's notices)."""
    while True:
        message = await client.recv()
        if message["type"] != "notice":
            assert message["type"] == "notification", message
            return message


async def test_a_publish_reaches_every_listener_of_its_channel_and_no_other(
    main_server: Served,
) -> None:
    name, other = channel(), channel()
    async with connect(main_server) as a, connect(main_server) as b, connect(main_server) as c:
        for client in (a, b, c):
            await client.ready()
        await listen(a, name)
        await listen(b, name)
        await listen(c, other)
        reply = await ask(
            c, {"type": "publish", "id": 9, "channel": name, "key": [4, 2], "value": {"total": 10}}
        )
        assert reply == {"type": "published", "id": 9, "channel": name}
        for client in (a, b):
            assert await notification(client) == {
                "type": "notification",
                "channel": name,
                "key": [4, 2],
                "value": {"total": 10},
            }
        with pytest.raises(TimeoutError):  # c listens to another channel only
            await notification_within(c, 0.4)
        # unlisten: nothing more for b; a still gets them
        reply = await ask(b, {"type": "unlisten", "id": "u", "channel": name})
        assert reply == {"type": "unlistened", "id": "u", "channel": name}
        await ask(c, {"type": "publish", "channel": name, "value": "again"})
        assert (await notification(a))["value"] == "again"
        with pytest.raises(TimeoutError):
            await notification_within(b, 0.4)


async def notification_within(client: Client, seconds: float) -> dict[str, Any]:
    async with asyncio.timeout(seconds):
        return await notification(client)


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ({"type": "listen", "channel": "bad name!"}, "invalid_message"),
        ({"type": "listen", "channel": "x" * 49}, "invalid_message"),
        ({"type": "publish", "channel": "ok", "key": ["a"]}, "invalid_message"),
        ({"type": "publish", "channel": "ok", "key": [2**63]}, "invalid_message"),
        ({"type": "listen"}, "invalid_message"),
    ],
    ids=["bad-name", "long-name", "key-not-ints", "key-too-big", "no-channel"],
)
async def test_bad_channel_messages_get_an_error_and_the_socket_stays_open(
    main_server: Served, message: dict[str, Any], code: str
) -> None:
    async with connect(main_server) as client:
        await client.ready()
        reply = await client.error(message, code)
        assert "c." not in reply["message"]  # the hub's own topic names stay inside


async def test_channels_need_listen_and_publish_scopes(auth_server: Served) -> None:
    name = channel()
    listener = token("lee", [f"listen:{name}"])
    publisher = token("pat", [f"publish:{name}"])
    async with (
        connect(auth_server, headers={"Authorization": f"Bearer {listener}"}) as lee,
        connect(auth_server, headers={"Authorization": f"Bearer {publisher}"}) as pat,
    ):
        await lee.ready()
        await pat.ready()
        await lee.error({"type": "publish", "channel": name, "value": 1}, "forbidden")
        await lee.error({"type": "listen", "channel": channel()}, "forbidden")
        await pat.error({"type": "listen", "channel": name}, "forbidden")
        await listen(lee, name)
        await ask(pat, {"type": "publish", "channel": name, "value": 1})
        assert (await notification(lee))["value"] == 1


async def test_a_send_reaches_one_connection_or_every_connection_of_a_user(
    auth_server: Served,
) -> None:
    alice = {"Authorization": f"Bearer {token('alice')}"}
    bob = {"Authorization": f"Bearer {token('bob')}"}
    async with (
        connect(auth_server, headers=alice) as a1,
        connect(auth_server, headers=alice) as a2,
        connect(auth_server, headers=bob) as b,
        http_client(auth_server, ADMIN_KEY) as admin,
        http_client(auth_server, token("carol", "subscribe:*")) as nobody,
    ):
        ready = [await c.ready() for c in (a1, a2, b)]
        assert ready[0]["user"] == "alice"
        r = await admin.post("/gateway/send", json={"connection": ready[2]["address"], "data": 1})
        assert r.status_code == 202 and r.json() == {"sent": True}
        assert await b.expect("message") == {"type": "message", "from": "key ci", "data": 1}
        r = await admin.post("/gateway/send", json={"user": "alice", "data": {"hi": True}})
        assert r.status_code == 202
        for client in (a1, a2):
            message = await client.expect("message")
            assert message["data"] == {"hi": True}
        await b.quiet()
        assert (
            await nobody.post("/gateway/send", json={"user": "x", "data": 1})
        ).status_code == 403
        bad = await admin.post("/gateway/send", json={"user": "x", "connection": None})
        assert bad.status_code == 422  # no data
        both = {"user": "x", "connection": ready[0]["address"], "data": 1}
        assert (await admin.post("/gateway/send", json=both)).status_code == 400


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_channels_and_sends_cross_nodes(pg_url: str, nats_url: str) -> None:
    from tidings.notify import connect as connect_notifier
    from tidings.server.ws.gateway import send

    env = {"TIDINGS_WS__MAX_MESSAGE_BYTES": str(4 * 1024 * 1024)}
    nodes = [Server(pg_url, env, "--notify", nats_url) for _ in range(2)]
    name = channel()
    try:
        a_node, b_node = nodes[0].process, nodes[1].process
        assert a_node is not None and b_node is not None
        async with connect(a_node) as a, connect(b_node) as b:
            await a.ready()
            ready_b = await b.ready()
            await listen(b, name)
            await ask(a, {"type": "publish", "channel": name, "key": [7], "value": "x"})
            assert (await notification(b))["value"] == "x"
            async with httpx.AsyncClient(base_url=nodes[0].http) as http:
                r = await http.post(
                    "/gateway/send", json={"connection": ready_b["address"], "data": "via A"}
                )
                assert r.status_code == 202
            assert (await b.expect("message"))["data"] == "via A"
            # ...and from a process that is no server at all, on the same notifier
            notifier = await connect_notifier(nats_url)
            try:
                await send(notifier, [1, 2], connection=ready_b["address"], sender="worker")
            finally:
                await notifier.close()
            assert await b.expect("message") == {
                "type": "message",
                "from": "worker",
                "data": [1, 2],
            }
            # a notifier caps payloads (NATS: 1 MB): too big is refused, and said so
            big = {"type": "publish", "id": 5, "channel": name, "value": "x" * 1_500_000}
            too_big = await ask(a, big)
            assert too_big["error"] == "payload_too_large" and too_big["id"] == 5, too_big
            async with httpx.AsyncClient(base_url=nodes[0].http) as http:
                r = await http.post("/gateway/send", json={"user": "u", "data": "x" * 1_500_000})
                assert r.status_code == 413 and r.json()["error"] == "payload_too_large"
    finally:
        for node in nodes:
            node.stop(signal.SIGTERM)
