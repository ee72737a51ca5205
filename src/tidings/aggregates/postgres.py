"""Snapshots on PostgreSQL: the table ``<schema>.snapshots``, through the store's pool."""

from __future__ import annotations

import asyncio

import asyncpg

from tidings.aggregates.snapshots import Snapshot
from tidings.errors import StoreUnavailable
from tidings.sql import load_queries
from tidings.store import redact
from tidings.store.postgres import PostgresStore

_DRIVER_ERRORS = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.PostgresError,
)


class PostgresSnapshots:
    """Snapshots in the table ``<schema>.snapshots``, through the store's pool."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store
        self._q = load_queries("postgres", store.schema, "snapshots.sql")

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        return StoreUnavailable(redact(self._store.url), f"{type(exc).__name__}: {exc}")

    async def _ensure_table(self) -> None:
        self._store._check_open()  # the table comes with the store's migrations

    async def load(self, stream: str, name: str, projection_version: int) -> Snapshot | None:
        """The snapshot of ``stream`` by ``name`` at ``projection_version``, if kept."""
        await self._ensure_table()
        try:
            row = await self._store.calls.fetchrow(
                self._q["load"], stream, name, projection_version
            )
        except _DRIVER_ERRORS as exc:
            raise self._unavailable(exc) from exc
        return None if row is None else Snapshot(int(row[0]), row[1])

    async def save(
        self, stream: str, name: str, projection_version: int, version: int, state: str
    ) -> None:
        """Upsert the snapshot (a newer stored one of the same projection version stays)."""
        await self._ensure_table()
        try:
            await self._store.calls.execute(
                self._q["save"], stream, name, projection_version, version, state
            )
        except _DRIVER_ERRORS as exc:
            raise self._unavailable(exc) from exc
