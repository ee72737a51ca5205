"""The server in-process: ``create_app`` on the parametrized store (memory, SQLite,
PostgreSQL), driven through httpx's ASGI transport inside the app's lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

import tidings
from tidings.server import Settings, create_app


@pytest.fixture
def server_settings() -> Settings:
    """The server's settings (a test may override this fixture)."""
    return Settings()


@pytest.fixture
async def app(store: tidings.EventStore, server_settings: Settings) -> AsyncIterator[FastAPI]:
    """The server on the parametrized store, started (its lifespan entered)."""
    served = create_app(store, server_settings)
    async with served.router.lifespan_context(served):
        yield served


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of ``app``, in-process."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tidings.test") as c:
        yield c
