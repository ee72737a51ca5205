"""Event streams over HTTP, in process: the lifecycle verbs and their statuses, bad input
refused with nothing stored, admins only, and a stream delivering to a real receiver."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import standardwebhooks

import tidings
from tests.receiver import receiving
from tidings.server import Settings, create_app
from tidings.server.auth import ApiKey, AuthSettings, hash_key
from tidings.server.settings import EventStreamSettings

FAST = EventStreamSettings(
    batch_timeout=0.02, retry_timeout=0.5, lease_ttl=1.0, allow=["127.0.0.0/8"]
)


@asynccontextmanager
async def serving(
    store: tidings.EventStore, settings: Settings | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(store, settings or Settings(eventstreams=FAST))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield client


@pytest.fixture
async def client(store: tidings.EventStore) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(store) as c:
        yield c


def body(name: str = "orders", url: str = "http://127.0.0.1:9/hook", **more: object) -> dict:
    return {"name": name, "type": "webhook", "webhook": {"url": url}, **more}


async def test_the_lifecycle_over_http(client: httpx.AsyncClient) -> None:
    made = await client.post("/eventstreams", json=body())
    assert made.status_code == 201, made.text
    stream = made.json()
    assert stream["secret"].startswith("whsec_") and stream["status"] == "started"
    assert "secret" not in stream["definition"]["webhook"]
    again = await client.post("/eventstreams", json=body())
    assert again.status_code == 409 and again.json()["error"] == "already_exists"
    assert (await client.get("/eventstreams/orders")).json()["id"] == stream["id"]
    assert (await client.get(f"/eventstreams/{stream['id']}")).json()["name"] == "orders"
    assert (await client.get("/eventstreams/nope")).status_code == 404

    stopped = await client.post("/eventstreams/orders/stop")
    assert stopped.json()["status"] == "stopped"
    started = await client.post(f"/eventstreams/{stream['id']}/start")
    assert started.json()["status"] == "started"
    reset = await client.post("/eventstreams/orders/reset", json={"position": 0})
    assert reset.status_code == 200 and reset.json()["stats"]["checkpoint"] == 0
    assert (await client.post("/eventstreams/orders/reset")).status_code == 200

    patched = await client.patch(
        "/eventstreams/orders",
        json={"batch_size": 9},
        headers={"content-type": "application/merge-patch+json"},
    )
    assert patched.status_code == 200 and patched.json()["definition"]["batch_size"] == 9
    put = await client.put("/eventstreams/orders", json=body(batch_size=3))
    assert put.status_code == 200 and put.json()["definition"]["batch_size"] == 3
    created = await client.put("/eventstreams/audit", json=body("audit"))
    assert created.status_code == 201 and created.json()["secret"].startswith("whsec_")
    mismatch = await client.put("/eventstreams/audit", json=body("other"))
    assert mismatch.status_code == 400

    page = await client.get("/eventstreams", params={"limit": 1})
    assert [s["name"] for s in page.json()["items"]] == ["audit"]
    rest = await client.get("/eventstreams", params={"after": page.json()["next"]})
    assert [s["name"] for s in rest.json()["items"]] == ["orders"]
    assert rest.json()["next"] is None
    assert (await client.get("/eventstreams/orders/attempts")).json() == {
        "items": [], "next": None
    }  # fmt: skip
    assert (await client.get("/eventstreams/orders/parked")).json()["items"] == []
    late = await client.post(
        "/eventstreams/orders/redeliver", json={"from_position": 1, "to_position": 5}
    )
    assert late.status_code == 400 and "past the checkpoint" in late.json()["message"]
    backwards = {"from_position": 3, "to_position": 1, "parked": True}
    assert (await client.post("/eventstreams/orders/redeliver", json=backwards)).status_code == 400
    parked = {"from_position": 1, "to_position": 5, "parked": True}
    assert (await client.post("/eventstreams/orders/redeliver", json=parked)).status_code == 202
    assert (await client.post("/eventstreams/orders/redeliver", json={})).status_code == 422

    assert (await client.delete("/eventstreams/orders")).status_code == 204
    assert (await client.get("/eventstreams/orders")).status_code == 404
    assert (await client.delete("/eventstreams/orders")).status_code == 404


@pytest.mark.parametrize(
    ("sent", "status"),
    [
        (body(filter={"stream_pattern": "("}), 400),
        (body(url="ftp://example.com/"), 400),
        (body(url="http://169.254.169.254/latest/meta-data"), 400),
        (body(webhook={"url": "http://example.com/", "tls": "unknown"}), 400),
        (body(webhook={"url": "http://example.com/", "method": "DELETE"}), 400),
        (body(batch_size=0), 422),
        (body(batch_size=10_001), 422),
        (body(type="carrier-pigeon"), 422),
        ({"name": "a b", "type": "webhook", "webhook": {"url": "http://example.com"}}, 422),
        (body(extra=1), 422),
    ],
)
async def test_bad_definitions_are_refused_and_nothing_is_stored(
    client: httpx.AsyncClient, sent: dict, status: int
) -> None:
    answer = await client.post("/eventstreams", json=sent)
    assert answer.status_code == status, answer.text
    assert answer.json()["message"]
    assert (await client.get("/eventstreams")).json()["items"] == []


async def test_only_admins_manage_event_streams(store: tidings.EventStore) -> None:
    keys = [
        ApiKey(name="admin", hash=hash_key("admin-key-0123456789abcdef"), scopes=["admin"]),
        ApiKey(name="reader", hash=hash_key("reader-key-0123456789abcdef"), scopes=["read:*"]),
    ]
    settings = Settings(auth=AuthSettings(api_keys=keys), eventstreams=FAST)
    async with serving(store, settings) as client:
        reader = {"X-API-Key": "reader-key-0123456789abcdef"}
        admin = {"X-API-Key": "admin-key-0123456789abcdef"}
        assert (await client.post("/eventstreams", json=body(), headers=reader)).status_code == 403
        assert (await client.get("/eventstreams", headers=reader)).status_code == 403
        assert (await client.get("/eventstreams")).status_code == 401
        assert (await client.post("/eventstreams", json=body(), headers=admin)).status_code == 201


async def test_a_stream_made_over_http_delivers_signed_batches(
    store: tidings.EventStore,
) -> None:
    await store.append("order-1", [tidings.NewEvent("Placed", {"n": n}) for n in range(7)])
    async with receiving() as receiver, serving(store) as client:
        made = await client.post("/eventstreams", json=body(url=receiver.url, batch_size=5))
        secret = made.json()["secret"]
        await receiver.wait_for(7)
        assert receiver.positions() == list(range(1, 8))
        for request in receiver.requests:
            standardwebhooks.Webhook(secret).verify(request.body, request.headers)
        for _ in range(500):  # recorded once the receiver's answer is back
            if (await client.get("/eventstreams/orders")).json()["stats"]["checkpoint"] == 7:
                break
            await asyncio.sleep(0.02)
        attempts = (await client.get("/eventstreams/orders/attempts")).json()["items"]
        assert [a["outcome"] for a in attempts] == ["delivered", "delivered"]
        assert attempts[0]["status_code"] == 200


async def test_metrics_show_each_event_stream(store: tidings.EventStore) -> None:
    await store.append("order-1", [tidings.NewEvent("Placed", {"n": n}) for n in range(4)])
    async with receiving() as receiver, serving(store) as client:
        await client.post("/eventstreams", json=body(url=receiver.url))
        await receiver.wait_for(4)
        for _ in range(500):
            if (await client.get("/eventstreams/orders")).json()["stats"]["checkpoint"] == 4:
                break
            await asyncio.sleep(0.02)
        text = (await client.get("/metrics")).text
        assert 'tidings_eventstream_delivered_events_total{stream="orders"} 4.0' in text
        assert 'tidings_eventstream_lag_events{stream="orders"} 0.0' in text
        assert (
            'tidings_eventstream_up{status="dispatching",stream="orders",type="webhook"} 1.0'
            in (text)
            or 'tidings_eventstream_up{status="complete",stream="orders",type="webhook"} 1.0'
            in text
        )
