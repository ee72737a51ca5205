"""Pull subscriptions over HTTP, in process: define, long-poll, ack, reset, delete; bad
input; scopes; a consumer group of two members on SQLite."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest

import tidings
from tidings.server import Settings, create_app
from tidings.server.auth import ApiKey, AuthSettings, hash_key

Client = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


def ev(n: int) -> tidings.NewEvent:
    return tidings.NewEvent("Happened", {"n": n})


@asynccontextmanager
async def serving(
    store: tidings.EventStore, settings: Settings | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(store, settings or Settings())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield client


@pytest.fixture
async def store() -> AsyncIterator[tidings.EventStore]:
    async with await tidings.connect("memory://") as opened:
        yield opened


@pytest.fixture
async def client(store: tidings.EventStore) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(store) as c:
        yield c


async def test_define_idempotently_and_refuse_another_definition(
    client: httpx.AsyncClient,
) -> None:
    body = {"name": "billing", "filter": {"categories": ["order", "invoice"]}, "start": "end"}
    created = await client.post("/subscriptions", json=body)
    assert created.status_code == 201, created.text
    info = created.json()
    assert info["name"] == "billing"
    assert info["definition"]["filter"] == {"categories": ["invoice", "order"]}
    assert info["definition"]["start"] == "end"
    assert (info["checkpoint"], info["lag"], info["handed_out"], info["state"]) == (0, 0, 0, "idle")
    again = await client.post("/subscriptions", json=body)
    assert again.status_code == 200
    assert again.json() == info
    other = await client.post("/subscriptions", json={"name": "billing"})
    assert other.status_code == 409
    assert other.json()["error"] == "conflict"
    assert (await client.get("/subscriptions/billing")).json() == info
    assert (await client.get("/subscriptions")).json() == {"subscriptions": [info]}


async def test_next_hands_a_batch_out_again_until_acked(
    store: tidings.EventStore, client: httpx.AsyncClient
) -> None:
    for n in range(5):
        await store.append(f"order-{n}", [ev(n)])
    await client.post("/subscriptions", json={"name": "billing"})
    first = (await client.get("/subscriptions/billing/next?max=3")).json()
    assert [e["position"] for e in first["events"]] == [1, 2, 3]
    assert (first["last_position"], first["checkpoint"]) == (3, 0)
    again = (await client.get("/subscriptions/billing/next", params={"max": 3})).json()
    assert again == first
    beyond = await client.post("/subscriptions/billing/ack", json={"position": 4})
    assert beyond.status_code == 409
    assert beyond.json()["error"] == "ack_beyond_handed_out"
    assert beyond.json()["limit"] == 3
    acked = await client.post("/subscriptions/billing/ack", json={"position": 3})
    assert (acked.status_code, acked.json()) == (200, {"checkpoint": 3})
    older = await client.post("/subscriptions/billing/ack", json={"position": 1})
    assert (older.status_code, older.json()) == (200, {"checkpoint": 3})
    rest = (await client.get("/subscriptions/billing/next")).json()
    assert [e["position"] for e in rest["events"]] == [4, 5]
    info = (await client.get("/subscriptions/billing")).json()
    assert (info["checkpoint"], info["head"], info["lag"], info["handed_out"]) == (3, 5, 2, 5)


async def test_a_long_poll_is_woken_by_an_append_during_the_wait(
    store: tidings.EventStore, client: httpx.AsyncClient
) -> None:
    await client.post("/subscriptions", json={"name": "billing"})
    started = time.monotonic()
    polling = asyncio.create_task(client.get("/subscriptions/billing/next?wait=10"))
    await asyncio.sleep(0.3)
    assert not polling.done()
    await store.append("order-1", [ev(1)])
    answer = await asyncio.wait_for(polling, 5)
    assert answer.status_code == 200
    assert [e["stream"] for e in answer.json()["events"]] == ["order-1"]
    assert 0.3 <= time.monotonic() - started < 5
    started = time.monotonic()
    await client.post("/subscriptions/billing/ack", json={"position": 1})
    empty = (await client.get("/subscriptions/billing/next?wait=0.3")).json()
    assert (empty["events"], empty["last_position"], empty["checkpoint"]) == ([], None, 1)
    assert time.monotonic() - started >= 0.3


async def test_max_is_capped_at_the_servers_page(store: tidings.EventStore) -> None:
    for n in range(5):
        await store.append(f"order-{n}", [ev(n)])
    async with serving(store, Settings(max_page=2)) as client:
        await client.post("/subscriptions", json={"name": "billing"})
        batch = (await client.get("/subscriptions/billing/next?max=50")).json()
        assert len(batch["events"]) == 2


async def test_reset_and_delete(store: tidings.EventStore, client: httpx.AsyncClient) -> None:
    for n in range(3):
        await store.append(f"order-{n}", [ev(n)])
    await client.post("/subscriptions", json={"name": "billing"})
    await client.get("/subscriptions/billing/next")
    await client.post("/subscriptions/billing/ack", json={"position": 3})
    moved = await client.post("/subscriptions/billing/reset", json={"position": 2})
    assert (moved.status_code, moved.json()["checkpoint"]) == (200, 2)
    assert (await client.post("/subscriptions/billing/reset")).json()["checkpoint"] == 0
    refused = await client.post("/subscriptions/billing/ack", json={"position": 3})
    assert refused.status_code == 409  # handed out before the reset: not any more
    assert len((await client.get("/subscriptions/billing/next")).json()["events"]) == 3
    gone = await client.delete("/subscriptions/billing")
    assert gone.status_code == 204
    assert (await client.delete("/subscriptions/billing")).status_code == 404
    assert (await client.get("/subscriptions")).json() == {"subscriptions": []}
    assert await store.subscriptions() == []


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/subscriptions/nobody", None),
        ("GET", "/subscriptions/nobody/next", None),
        ("POST", "/subscriptions/nobody/ack", {"position": 1}),
        ("POST", "/subscriptions/nobody/reset", {"position": 0}),
        ("DELETE", "/subscriptions/nobody", None),
    ],
)
async def test_an_unknown_subscription_is_404(
    client: httpx.AsyncClient, method: str, path: str, body: Any
) -> None:
    answer = await client.request(method, path, json=body)
    assert answer.status_code == 404, answer.text
    assert answer.json()["error"] == "not_found"


@pytest.mark.parametrize(
    "query", ["max=0", "max=-1", "max=many", "wait=31", "wait=-1", "wait=soon", "member="]
)
async def test_bad_max_wait_or_member_is_422(client: httpx.AsyncClient, query: str) -> None:
    await client.post("/subscriptions", json={"name": "billing"})
    answer = await client.get(f"/subscriptions/billing/next?{query}")
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"] == "validation_error"


async def test_a_filter_that_does_not_compile_is_400(client: httpx.AsyncClient) -> None:
    body = {"name": "billing", "filter": {"stream_pattern": "order-(unclosed"}}
    answer = await client.post("/subscriptions", json=body)
    assert answer.status_code == 400, answer.text
    assert (answer.json()["error"], answer.json()["field"]) == ("invalid_filter", "filter")


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({}, 422),
        ({"name": ""}, 422),
        ({"name": "a/b"}, 422),
        ({"name": "x", "start": "middle"}, 422),
        ({"name": "x", "start": -1}, 422),
        ({"name": "x", "partitions": 0}, 422),
        ({"name": "x", "filter": {"category": ["order"]}}, 422),
        ({"name": "x", "filter": {"categories": []}}, 422),
        ({"name": "x", "filter": {"categories": [""]}}, 422),
        ({"name": "x", "filter": {"types": []}}, 422),
        ({"name": "x", "surprise": 1}, 422),
    ],
)
async def test_a_bad_definition_is_refused(
    client: httpx.AsyncClient, body: dict[str, Any], status: int
) -> None:
    answer = await client.post("/subscriptions", json=body)
    assert answer.status_code == status, answer.text


async def test_bad_ack_bodies(client: httpx.AsyncClient) -> None:
    await client.post("/subscriptions", json={"name": "billing"})
    path = "/subscriptions/billing/ack"
    assert (await client.post(path, json={"position": -1})).status_code == 422
    assert (await client.post(path, json={})).status_code == 422
    garbled = await client.post(path, content=b"{", headers={"content-type": "application/json"})
    assert garbled.status_code == 400
    assert (
        await client.post(path, content=b"1", headers={"content-type": "text/plain"})
    ).status_code == 415


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_two_members_share_a_group_over_http(backend: str, sqlite_url: str) -> None:
    url = "memory://" if backend == "memory" else sqlite_url
    async with await tidings.connect(url) as store, serving(store) as client:
        body = {"name": "crew", "partitions": 4, "lease_ttl": 0.5}
        assert (await client.post("/subscriptions", json=body)).status_code == 201
        for n in range(12):
            await store.append(f"order-{n}", [ev(n)])
        a = (await client.get("/subscriptions/crew/next?member=a")).json()
        assert len(a["events"]) == 12  # alone: every partition
        b = (await client.get("/subscriptions/crew/next?member=b")).json()
        assert b["events"] == []  # a's leases hold
        solo = await client.get("/subscriptions/crew/next")
        assert (solo.status_code, solo.json()["error"]) == (409, "conflict")
        await asyncio.sleep(0.8)  # a goes quiet past its lease: b takes over
        taken = (await client.get("/subscriptions/crew/next?member=b&wait=2")).json()
        assert [e["id"] for e in taken["events"]] == [e["id"] for e in a["events"]]
        late = await client.post("/subscriptions/crew/ack", json={"position": 12, "member": "a"})
        assert (late.status_code, late.json()["error"]) == (409, "lease_lost")
        ok = await client.post("/subscriptions/crew/ack", json={"position": 12, "member": "b"})
        assert ok.json() == {"checkpoint": 12}
        info = (await client.get("/subscriptions/crew")).json()
        assert (info["checkpoint"], info["grouped"]) == (12, True)


async def test_two_servers_on_one_database_and_a_restart(sqlite_url: str) -> None:
    async with (
        await tidings.connect(sqlite_url) as one,
        await tidings.connect(sqlite_url) as two,
        serving(one) as first,
        serving(two) as second,
    ):
        for n in range(4):
            await one.append(f"order-{n}", [ev(n)])
        assert (await first.post("/subscriptions", json={"name": "billing"})).status_code == 201
        assert (await second.post("/subscriptions", json={"name": "billing"})).status_code == 200
        batch = (await first.get("/subscriptions/billing/next?max=3")).json()
        assert batch["last_position"] == 3
        acked = await second.post("/subscriptions/billing/ack", json={"position": 2})
        assert acked.json() == {"checkpoint": 2}
        beyond = await second.post("/subscriptions/billing/ack", json={"position": 4})
        assert beyond.status_code == 409  # handed out up to 3, by the other server
    async with await tidings.connect(sqlite_url) as again, serving(again) as client:
        assert (await client.post("/subscriptions/billing/ack", json={"position": 3})).json() == {
            "checkpoint": 3
        }
        rest = (await client.get("/subscriptions/billing/next")).json()
        assert [e["position"] for e in rest["events"]] == [4]


KEYS = {
    "orders": ["subscribe:order"],
    "everything": ["subscribe:*"],
    "reader": ["read:*"],
}


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer key-for-{name}-0123456789"}


async def test_subscribe_scopes_cover_every_category_of_the_filter(
    store: tidings.EventStore,
) -> None:
    keys = [
        ApiKey(name=n, hash=hash_key(f"key-for-{n}-0123456789"), scopes=s) for n, s in KEYS.items()
    ]
    async with serving(store, Settings(auth=AuthSettings(api_keys=keys))) as client:
        orders = {"name": "orders", "filter": {"categories": ["order"]}}
        everything = {"name": "all"}
        assert (await client.post("/subscriptions", json=orders)).status_code == 401
        for body, who, status in [
            (orders, "reader", 403),
            (everything, "orders", 403),
            ({"name": "mixed", "filter": {"categories": ["order", "stock"]}}, "orders", 403),
            (orders, "orders", 201),
            (everything, "everything", 201),
        ]:
            answer = await client.post("/subscriptions", json=body, headers=bearer(who))
            assert answer.status_code == status, (body, who, answer.text)
        await store.append("order-1", [ev(1)])
        listed = await client.get("/subscriptions", headers=bearer("orders"))
        assert [s["name"] for s in listed.json()["subscriptions"]] == ["orders"]
        listed = await client.get("/subscriptions", headers=bearer("everything"))
        assert [s["name"] for s in listed.json()["subscriptions"]] == ["all", "orders"]
        for method, path, body in [
            ("GET", "/subscriptions/all", None),
            ("GET", "/subscriptions/all/next", None),
            ("POST", "/subscriptions/all/ack", {"position": 1}),
            ("POST", "/subscriptions/all/reset", {"position": 0}),
            ("DELETE", "/subscriptions/all", None),
        ]:
            answer = await client.request(method, path, json=body, headers=bearer("orders"))
            assert answer.status_code == 403, (method, path, answer.text)
        batch = await client.get("/subscriptions/orders/next", headers=bearer("orders"))
        assert [e["stream"] for e in batch.json()["events"]] == ["order-1"]
        acked = await client.post(
            "/subscriptions/orders/ack", json={"position": 1}, headers=bearer("orders")
        )
        assert acked.json() == {"checkpoint": 1}


async def test_the_openapi_document_describes_the_subscription_routes(
    client: httpx.AsyncClient,
) -> None:
    document = (await client.get("/openapi.json")).json()
    paths = document["paths"]
    assert set(paths["/subscriptions"]) == {"get", "post"}
    assert set(paths["/subscriptions/{name}"]) == {"get", "delete"}
    next_batch = paths["/subscriptions/{name}/next"]["get"]
    assert {p["name"] for p in next_batch["parameters"]} == {"name", "max", "wait", "member"}
    assert {"200", "404", "409", "422"} <= set(next_batch["responses"])
    post = paths["/subscriptions"]["post"]
    assert {"200", "201", "400", "409"} <= set(post["responses"])
    schemas = document["components"]["schemas"]
    assert {"SubscriptionBody", "SubscriptionOut", "PullPage", "AckBody"} <= set(schemas)
