"""Reads asked with ``upcast=true`` answer with events renamed and upcast by the server's
type registry (its ``types`` setting); without it, and in the store, events stay as stored."""

from __future__ import annotations

import httpx
import pytest

import tidings
from tests.server.api import error_of
from tidings.errors import ConfigurationError
from tidings.server import Settings, create_app


@pytest.fixture
def server_settings() -> Settings:
    return Settings(types="tests.server.typed_registry:types")


async def stored(store: tidings.EventStore) -> None:
    await store.append(
        "order-1",
        [
            tidings.NewEvent("OrderCreated", {"total": 5}),  # the old name, version 1
            tidings.NewEvent("Placed", {"total": 7, "currency": "SEK"}, {"tidings.version": 2}),
        ],
    )


async def test_an_upcast_read_answers_with_the_current_versions(
    client: httpx.AsyncClient, store: tidings.EventStore
) -> None:
    await stored(store)
    for path in ("/streams/order-1/events", "/events"):
        upcast = (await client.get(path, params={"upcast": "true"})).json()["events"]
        assert [(e["type"], e["data"]) for e in upcast] == [
            ("Placed", {"total": 5, "currency": "EUR"}),
            ("Placed", {"total": 7, "currency": "SEK"}),
        ], path
        plain = (await client.get(path)).json()["events"]
        assert [(e["type"], e["data"]) for e in plain] == [
            ("OrderCreated", {"total": 5}),
            ("Placed", {"total": 7, "currency": "SEK"}),
        ], path
    # a type filter finds the type's old names when upcasting
    found = await client.get("/events", params={"upcast": "true", "type": "Placed"})
    assert len(found.json()["events"]) == 2
    assert len((await client.get("/events", params={"type": "Placed"})).json()["events"]) == 1


@pytest.mark.parametrize("server_settings", [Settings()])
async def test_an_upcast_read_on_a_server_without_a_registry_is_refused(
    client: httpx.AsyncClient,
) -> None:
    error_of(await client.get("/events", params={"upcast": "true"}), 400, "invalid_input")


@pytest.mark.parametrize(
    "path", ["tests.server.typed_registry:not_a_registry", "tests.server.nowhere:types"]
)
def test_a_types_setting_that_names_no_registry_is_refused(path: str) -> None:
    with pytest.raises(ConfigurationError, match="types"):
        create_app("memory://", Settings(types=path))
