"""The store's identity over HTTP: every answer names it (``tidings-store``), and a
request naming another store is refused (409 ``store_changed``) before it reads a thing."""

from __future__ import annotations

import uuid

import httpx
import pytest

import tidings
from tests.server.api import append, error_of


async def test_every_answer_names_the_store(
    client: httpx.AsyncClient, store: tidings.EventStore
) -> None:
    assert store.identity is not None
    created = await client.post(
        "/streams/order-1/events", json={"events": [{"type": "Placed", "data": {}}]}
    )
    assert created.status_code == 201
    for answer in (
        created,
        await client.get("/head"),
        await client.get("/events"),
        await client.get("/streams/order-1/events"),
        await client.get("/streams/no-such/events"),
        await client.get("/healthz"),
    ):
        assert answer.headers["tidings-store"] == store.identity, answer.request.url
    assert (await client.get("/head")).json() == {"head": 1, "identity": store.identity}


async def test_a_request_naming_another_store_is_refused_before_it_acts(
    client: httpx.AsyncClient, store: tidings.EventStore
) -> None:
    await append(client, "order-1")
    other = str(uuid.uuid4())
    for method, path in (("GET", "/events"), ("POST", "/streams/order-1/events")):
        answer = await client.request(
            method,
            path,
            headers={"tidings-store": other},
            json={"events": [{"type": "Placed", "data": {}}]} if method == "POST" else None,
        )
        body = error_of(answer, 409, "store_changed")
        assert (body["identity"], body["current"]) == (other, store.identity)
        assert answer.headers["tidings-store"] == store.identity
    assert await store.head() == 1  # the refused append wrote nothing
    # a browser's EventSource names the store in its URL: ?store=
    live = await client.get("/events/live", params={"store": other})
    assert error_of(live, 409, "store_changed")["current"] == store.identity
    same = await client.get("/events", headers={"tidings-store": str(store.identity)})
    assert same.status_code == 200


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_remote_store_is_told_when_its_server_serves_another_store(
    backend: str, tmp_path: object
) -> None:
    """The server restarted on another store (a restore, say): positions the remote
    store holds belong to the old one, so its next call, and a live read, say so."""
    from tests.served import start_server

    first = start_server(f"sqlite:///{tmp_path}/a.db")
    port = int(first.url.rsplit(":", 1)[1])
    try:
        remote = await tidings.connect(first.url)
        await remote.append("order-1", [tidings.NewEvent("Placed", {})])
        known = remote.identity
        assert known is not None
    finally:
        first.stop()
    second = start_server(f"sqlite:///{tmp_path}/b.db", port=port)
    try:
        with pytest.raises(tidings.StoreChanged) as info:
            await remote.head()
        assert info.value.expected == known and info.value.current != known
        with pytest.raises(tidings.StoreChanged):
            async for _ in remote.read_all(follow=True):
                pass
        await remote.close()
    finally:
        second.stop()
