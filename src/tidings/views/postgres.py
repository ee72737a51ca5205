"""View rows on PostgreSQL: the table ``<schema>.views``, through the store's pool."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from tidings.errors import StoreUnavailable
from tidings.sql import load_queries
from tidings.store import redact
from tidings.store.postgres import PostgresStore
from tidings.views.fold import Stored
from tidings.views.storage import Row, split_rows

_DRIVER_ERRORS = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.PostgresError,
)


class PostgresViewRows:
    """Rows in ``<schema>.views``: written on the folding transaction's connection, read
    through the store's pool with one statement (one snapshot) per read."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store
        self._q = load_queries("postgres", store.schema, "views.sql")

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        return StoreUnavailable(redact(self._store.url), f"{type(exc).__name__}: {exc}")

    async def prepare(self) -> None:  # noqa: D102
        self._store._check_open()  # the table comes with the store's migrations

    async def current(self, tx: Any, view: str, keys: list[str]) -> dict[str, Stored]:  # noqa: D102
        found = await tx.fetch(self._q["current"], view, keys)
        return {key: (text, int(at)) for key, text, at in found}

    async def write(self, tx: Any, view: str, changes: dict[str, Stored]) -> None:  # noqa: D102
        keys = list(changes)
        await tx.execute(
            self._q["write"],
            view,
            keys,
            [changes[k][0] for k in keys],
            [changes[k][1] for k in keys],
        )

    def committed(self, view: str, changes: dict[str, Stored]) -> None:  # noqa: D102
        return None

    async def read(  # noqa: D102
        self, view: str, subscription: str, after: int, keys: list[str] | None
    ) -> tuple[list[Row], int]:
        self._store._check_open()
        try:
            if keys is None:
                found = await self._store.calls.fetch(
                    self._q["read_every"], view, subscription, after
                )
            else:
                found = await self._store.calls.fetch(
                    self._q["read_keys"], view, subscription, after, keys
                )
        except _DRIVER_ERRORS as exc:
            raise self._unavailable(exc) from exc
        return split_rows(found)

    async def close(self) -> None:  # noqa: D102
        return None  # the pool is the store's
