"""Read models: a user's table kept by a durable subscription, and rebuilt from zero."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import pytest

import tidings
from tests.conftest import POSTGRES_URL

pytestmark = pytest.mark.durable


class Totals:
    """SQL for a `totals(stream, total)` table in the store's own database."""

    def __init__(self, url: str) -> None:
        self.sqlite = url.startswith("sqlite")
        if self.sqlite:
            self.path = urlsplit(url).path
            self.table = "totals"
        else:
            schema = parse_qs(urlsplit(url).query)["schema"][0]
            self.table = f'"{schema}".totals'

    async def create(self) -> None:
        ddl = f"CREATE TABLE {self.table} (stream TEXT PRIMARY KEY, total INTEGER NOT NULL)"
        await self._run(ddl)

    async def rows(self) -> dict[str, int]:
        if self.sqlite:
            conn = sqlite3.connect(self.path)
            try:
                return dict(conn.execute(f"SELECT stream, total FROM {self.table}").fetchall())
            finally:
                conn.close()
        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            return {r[0]: r[1] for r in await conn.fetch(f"SELECT stream, total FROM {self.table}")}
        finally:
            await conn.close()

    async def _run(self, sql: str) -> None:
        if self.sqlite:
            conn = sqlite3.connect(self.path)
            try:
                conn.execute(sql)
                conn.commit()
            finally:
                conn.close()
            return
        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def apply(self, events: list[tidings.RecordedEvent], tx: Any) -> None:
        rows = [(e.stream, e.data["n"]) for e in events]  # type: ignore[index]
        if self.sqlite:
            tx.executemany(
                f"INSERT INTO {self.table} VALUES (?, ?) "
                "ON CONFLICT (stream) DO UPDATE SET total = total + excluded.total",
                rows,
            )
        else:
            await tx.executemany(
                f"INSERT INTO {self.table} AS t VALUES ($1, $2) "
                "ON CONFLICT (stream) DO UPDATE SET total = t.total + excluded.total",
                rows,
            )

    async def clear(self, tx: Any) -> None:
        if self.sqlite:
            tx.execute(f"DELETE FROM {self.table}")
        else:
            await tx.execute(f"DELETE FROM {self.table}")


async def test_a_read_model_follows_the_log_and_rebuilds_to_the_same_rows(
    store_url: str,
) -> None:
    totals = Totals(store_url)
    store = await tidings.connect(store_url)  # creates the schema
    await totals.create()
    async with store:
        for n in range(1, 41):
            await store.append(f"order-{n % 4}", [tidings.NewEvent("Paid", {"n": n})])
        expected = {f"order-{k}": sum(n for n in range(1, 41) if n % 4 == k) for k in range(4)}
        model = tidings.ReadModel(store, "totals", totals.apply, reset=totals.clear)
        async with model:
            async with asyncio.timeout(10):
                while (model.position or 0) < 40:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
        assert await totals.rows() == expected  # applied exactly once, with the checkpoint

        seen: list[tuple[int, int]] = []
        assert await model.rebuild(progress=lambda p, h: seen.append((p, h))) == 40
        assert await totals.rows() == expected  # emptied and folded again, not doubled
        assert seen[-1] == (40, 40)
        [info] = [i for i in await store.subscriptions() if i.name == "readmodel:totals"]
        assert info.checkpoint == 40


async def test_a_read_model_without_reset_cannot_rebuild(store_url: str) -> None:
    store = await tidings.connect(store_url)
    async with store:

        async def apply(events: list[tidings.RecordedEvent], tx: Any) -> None:
            return None

        with pytest.raises(tidings.InvalidInput):
            await tidings.ReadModel(store, "nothing", apply).rebuild(progress=False)
