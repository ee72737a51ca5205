"""The store's identity: a UUID made with its schema, the same every time it is opened,
different for every other store; over HTTP it names the store in every answer."""

from __future__ import annotations

import uuid

import pytest

import tidings

pytestmark = pytest.mark.remote


async def test_a_store_has_an_identity_of_its_own(store: tidings.EventStore) -> None:
    await store.head()  # a remote store learns it from the server's first answer
    assert store.identity is not None
    assert str(uuid.UUID(store.identity)) == store.identity
    async with await tidings.connect("memory://") as other:
        assert other.identity is not None and other.identity != store.identity


@pytest.mark.durable
async def test_reopening_a_store_keeps_its_identity(store_url: str) -> None:
    async with await tidings.connect(store_url) as store:
        await store.append("order-1", [tidings.NewEvent("Placed", {})])
        first = store.identity
    async with await tidings.connect(store_url) as store:
        await store.head()
        assert store.identity == first
