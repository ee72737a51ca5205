"""Metrics: the server's /metrics, and the same library metrics in a user's own registry."""

from __future__ import annotations

import asyncio

import httpx
from prometheus_client import CollectorRegistry, generate_latest

import tidings
from tidings.metrics import Metrics
from tidings.server import Settings, create_app
from tidings.server.auth import ApiKey, AuthSettings, hash_key


async def test_metrics_count_requests_appends_head_and_live_clients(sqlite_url: str) -> None:
    store = await tidings.connect(sqlite_url)
    app = create_app(store)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            body = {"events": [{"type": "A"}, {"type": "B"}, {"type": "C"}]}
            assert (await c.post("/streams/order-1/events", json=body)).status_code == 201
            assert (await c.post("/streams/order-1/events", content=b"{")).status_code == 400
            text = (await c.get("/metrics")).text
    await store.close()
    assert 'tidings_events_appended_total{store="server"} 3.0' in text
    assert 'tidings_append_size_events_count{store="server"} 1.0' in text
    assert 'tidings_head_position{store="server"} 3.0' in text
    route = 'route="/streams/{stream:stream}/events"'
    assert f'tidings_http_requests_total{{method="POST",{route},status="201"}} 1.0' in text
    assert f'tidings_http_requests_total{{method="POST",{route},status="400"}} 1.0' in text
    assert "tidings_http_request_seconds_bucket" in text
    assert "tidings_sse_clients 0.0" in text


async def test_metrics_need_admin_when_auth_is_on() -> None:
    keys = [
        ApiKey(name="ops", hash=hash_key("ops-key-123"), scopes=["admin"]),
        ApiKey(name="app", hash=hash_key("app-key-123"), scopes=["read:*"]),
    ]
    app = create_app("memory://", Settings(auth=AuthSettings(api_keys=keys)))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            assert (await c.get("/metrics")).status_code == 401
            app_key = {"Authorization": "Bearer app-key-123"}
            assert (await c.get("/metrics", headers=app_key)).status_code == 403
            ops = await c.get("/metrics", headers={"Authorization": "Bearer ops-key-123"})
            assert ops.status_code == 200 and "tidings_http_requests_total" in ops.text


async def test_an_embedded_user_gets_the_library_metrics_in_their_own_registry(
    store_url: str,
) -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    async with await tidings.connect(store_url) as store:
        metrics.watch_store(store, "mine")
        await store.append("order-1", [tidings.NewEvent("A")])
        handled = asyncio.Event()

        async def handler(events: list[tidings.RecordedEvent]) -> None:
            if events[-1].position >= 1:
                handled.set()

        async with store.subscribe("billing", handler):
            await asyncio.wait_for(handled.wait(), 10)
        async with store.transaction() as tx:  # two events the stopped subscription lags by
            tx.append("order-2", [tidings.NewEvent("B"), tidings.NewEvent("C")])
        await metrics.refresh(store)
        text = generate_latest(registry).decode()
    assert 'tidings_events_appended_total{store="mine"} 3.0' in text
    assert 'tidings_append_size_events_count{store="mine"} 2.0' in text
    assert 'tidings_head_position{store="mine"} 3.0' in text
    assert 'tidings_subscription_lag_events{subscription="billing"} 2.0' in text
