"""State views declared in the server's settings, read over HTTP with read-your-writes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

import tidings
from tidings.server import Settings, create_app
from tidings.server.declared import ViewSettings


def total(current: Any, event: tidings.RecordedEvent) -> Any:
    """A reducer: the running sum of each account's amounts."""
    return (current or 0) + event.data["amount"]


VIEWS = [
    ViewSettings(name="users", category="user"),
    ViewSettings(name="balances", category="account", reducer=f"{__name__}:total"),
]


@pytest.fixture
async def client(store_url: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(store_url, Settings(views=VIEWS))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            yield c


async def append(c: httpx.AsyncClient, stream: str, type_: str, data: Any) -> int:
    r = await c.post(f"/streams/{stream}/events", json={"events": [{"type": type_, "data": data}]})
    assert r.status_code == 201, r.text
    position: int = r.json()["position"]
    return position


async def test_a_view_reads_its_own_writes_with_at_least(client: httpx.AsyncClient) -> None:
    await append(client, "user-1", "new", {"name": "Ada", "role": "dev"})
    await append(client, "user-2", "new", {"name": "Bob"})
    last = await append(client, "user-1", "mod", {"role": "lead"})
    r = await client.get(f"/views/users?at_least={last}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["position"] >= last
    assert body["values"] == {"1": {"name": "Ada", "role": "lead"}, "2": {"name": "Bob"}}
    deleted = await append(client, "user-2", "del", None)
    some = await client.get(f"/views/users?at_least={deleted}&keys=1,2&keys=3")
    assert some.json()["values"] == {"1": {"name": "Ada", "role": "lead"}}


async def test_a_view_with_a_reducer_given_by_import_path(client: httpx.AsyncClient) -> None:
    await append(client, "account-a", "Deposited", {"amount": 5})
    last = await append(client, "account-a", "Deposited", {"amount": 7})
    r = await client.get(f"/views/balances?at_least={last}&keys=a")
    assert r.json()["values"] == {"a": 12}
    listed = (await client.get("/views")).json()["views"]
    assert [(v["name"], v["category"], v["reducer"]) for v in listed] == [
        ("users", "user", None),
        ("balances", "account", f"{__name__}:total"),
    ]


async def test_unknown_views_and_unreachable_positions(client: httpx.AsyncClient) -> None:
    missing = await client.get("/views/nope")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    behind = await client.get("/views/users?at_least=1000&wait=0.2")
    assert behind.status_code == 503 and behind.json()["error"] == "view_behind"
    assert behind.headers["retry-after"] == "1"
    bad = await client.get("/views/users?at_least=-1")
    assert bad.status_code == 422


async def test_a_reducer_that_cannot_be_imported_stops_the_start() -> None:
    app = create_app(
        "memory://", Settings(views=[ViewSettings(name="x", category="x", reducer="no.such:f")])
    )
    with pytest.raises(tidings.ConfigurationError, match="cannot be imported"):
        async with app.router.lifespan_context(app):
            pass
