"""The tidings app mounted inside a user's own FastAPI app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

import tidings
from tidings.server import Settings, create_app
from tidings.server.declared import ViewSettings


async def test_a_mounted_app_on_an_open_store_serves_without_its_own_lifespan() -> None:
    async with await tidings.connect("memory://") as store:
        host = FastAPI()

        @host.get("/hello")
        async def hello() -> dict[str, str]:
            return {"hello": "world"}

        host.mount("/events", create_app(store))
        transport = httpx.ASGITransport(app=host)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            body = {"events": [{"type": "Placed", "data": {"total": 3}}]}
            made = await c.post("/events/streams/order-1/events", json=body)
            assert made.status_code == 201, made.text
            read = await c.get("/events/streams/order-1/events")
            assert [e["data"] for e in read.json()["events"]] == [{"total": 3}]
            assert (await c.get("/events/head")).json()["head"] == 1
            assert (await c.get("/hello")).json() == {"hello": "world"}
        assert await store.head() == 1  # the user's store, left open


async def test_a_mounted_app_folds_its_views_when_the_host_runs_its_lifespan() -> None:
    async with await tidings.connect("memory://") as store:
        events = create_app(store, Settings(views=[ViewSettings(name="users", category="user")]))

        @asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[None]:
            async with events.router.lifespan_context(events):
                yield

        host = FastAPI(lifespan=lifespan)
        host.mount("/events", events)
        async with host.router.lifespan_context(host):
            transport = httpx.ASGITransport(app=host)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                body = {"events": [{"type": "new", "data": {"name": "Ada"}}]}
                made = (await c.post("/events/streams/user-1/events", json=body)).json()
                view = await c.get(f"/events/views/users?at_least={made['position']}")
                assert view.json()["values"] == {"1": {"name": "Ada"}}
        assert await store.head() == 1
