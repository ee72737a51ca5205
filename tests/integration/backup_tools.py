"""Helpers for the backup tests: stores filled with every kind of row, and their contents."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import asyncpg

import tidings
from tidings import Audit, NewEvent, Retry
from tidings.backup.sources import snapshot_of
from tidings.backup.tables import TABLES
from tidings.subscriptions import parked, subscriptions

POISON = 7  # the event a subscription parks
BASE_MS = 1_750_000_000_123

# One row in each table an application's features fill (ids and times fixed), with the
# leases a backup must not carry.
SQLITE_ROWS = [
    "INSERT INTO tidings_partitions VALUES ('grouped', 0, 3, 'member-a', {ms})",
    "INSERT INTO tidings_partitions VALUES ('grouped', 1, 5, NULL, NULL)",
    "INSERT INTO tidings_members VALUES ('grouped', 'member-a', {ms})",
    "INSERT INTO tidings_snapshots VALUES ('order-1', 'totals', 2, 4, '{{\"n\": 4}}', {ms})",
    "INSERT INTO tidings_views VALUES ('orders', 'k1', '{{\"v\": 1}}', 3)",
    "INSERT INTO tidings_views VALUES ('orders', 'k2', NULL, 4)",
    "INSERT INTO tidings_pull VALUES ('puller', '{{\"filter\": null}}', 6, 1, {ms})",
    "INSERT INTO tidings_pull_handed VALUES ('puller', 0, 'member-b', 6)",
    "INSERT INTO tidings_eventstreams (id, name, type, status, definition, checkpoint, owner,"
    " lease_until_ms, created_ms, updated_ms, inflight_number, inflight_last)"
    " VALUES ('es-1', 'hooks', 'webhook', 'started', '{{\"url\": \"http://x\"}}', 5, 'node-1',"
    " {ms}, {ms}, {ms}, 3, 8)",
    "INSERT INTO tidings_eventstream_attempts (stream_id, at_ms, batch_id, batch_number,"
    " first_position, last_position, events, outcome, status_code, duration_ms, redelivery)"
    " VALUES ('es-1', {ms}, 'b-1', 1, 1, 5, 5, 'ok', 200, 12.5, 1)",
    "INSERT INTO tidings_eventstream_parked VALUES ('es-1', 4, 'b-1', 'bad', {ms})",
    "INSERT INTO tidings_eventstream_redeliveries (stream_id, from_position, to_position,"
    " parked, created_ms) VALUES ('es-1', 1, 3, 1, {ms})",
]
POSTGRES_ROWS = [
    "INSERT INTO {s}.partitions VALUES ('grouped', 0, 3, 'member-a', {t})",
    "INSERT INTO {s}.partitions VALUES ('grouped', 1, 5, NULL, NULL)",
    "INSERT INTO {s}.members VALUES ('grouped', 'member-a', {t})",
    "INSERT INTO {s}.snapshots VALUES ('order-1', 'totals', 2, 4, '{{\"n\": 4}}', {t})",
    "INSERT INTO {s}.views VALUES ('orders', 'k1', '{{\"v\": 1}}', 3)",
    "INSERT INTO {s}.views VALUES ('orders', 'k2', NULL, 4)",
    "INSERT INTO {s}.pull VALUES ('puller', '{{\"filter\": null}}', 6, true, {t})",
    "INSERT INTO {s}.pull_handed VALUES ('puller', 0, 'member-b', 6)",
    "INSERT INTO {s}.eventstreams (id, name, type, status, definition, checkpoint, owner,"
    " lease_until_ms, created_ms, updated_ms, inflight_number, inflight_last)"
    " VALUES ('es-1', 'hooks', 'webhook', 'started', '{{\"url\": \"http://x\"}}', 5, 'node-1',"
    " {ms}, {ms}, {ms}, 3, 8)",
    "INSERT INTO {s}.eventstream_attempts (stream_id, at_ms, batch_id, batch_number,"
    " first_position, last_position, events, outcome, status_code, duration_ms, redelivery)"
    " VALUES ('es-1', {ms}, 'b-1', 1, 1, 5, 5, 'ok', 200, 12.5, true)",
    "INSERT INTO {s}.eventstream_parked VALUES ('es-1', 4, 'b-1', 'bad', {ms})",
    "INSERT INTO {s}.eventstream_redeliveries (stream_id, from_position, to_position,"
    " parked, created_ms) VALUES ('es-1', 1, 3, true, {ms})",
]


def pg_schema(url: str) -> str:
    """The schema a test PostgreSQL URL names."""
    return dict(parse_qsl(urlsplit(url).query))["schema"]


def sqlite_path(url: str) -> str:
    """The file a ``sqlite:///`` URL names."""
    return urlsplit(url).path[1:]


async def raw_sql(url: str, statements: list[str]) -> list[Any]:
    """Run statements on a store's database directly; the last one's rows."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(sqlite_path(url), isolation_level=None)
        try:
            rows: list[Any] = []
            for statement in statements:
                rows = conn.execute(statement).fetchall()
            return rows
        finally:
            conn.close()
    pg = await asyncpg.connect(url.split("?")[0])
    try:
        found: list[Any] = []
        for statement in statements:
            found = [tuple(r) for r in await pg.fetch(statement)]
        return found
    finally:
        await pg.close()


async def fill(url: str, events: int = 40) -> None:
    """Events with audited transactions and a named checkpoint, a subscription that
    parks one event, and one row in every other table."""
    async with await tidings.connect(url) as store:
        for n in range(1, events + 1):
            data = {"n": n, "text": f"é-{n}", "nested": {"z": 1, "a": [n, None]}}
            if n % 10 == 0:
                async with store.transaction(Audit("alice", {"reason": n})) as tx:
                    tx.append(f"order-{n % 4}", [NewEvent("Placed", data, {"m": n})])
                    tx.append(f"invoice-{n}", [NewEvent("Billed", [n, "x"])])
            else:
                await store.append(f"order-{n % 4}", [NewEvent("Placed", data)])
        async with store.transaction() as tx:
            tx.move_checkpoint("other-log", 1234)

        async def handler(batch: list[tidings.RecordedEvent]) -> None:
            if any(e.position == POISON for e in batch):
                raise ValueError("cannot take it")

        head = await store.head()
        policy = Retry(attempts=1, backoff=0, then="park")
        async with store.subscribe("audit-log", handler, on_error=policy, batch_size=5) as sub:
            async with asyncio.timeout(20):
                while (sub.position or 0) < head:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
    if url.startswith("sqlite"):
        await raw_sql(url, [s.format(ms=BASE_MS) for s in SQLITE_ROWS])
    else:
        t = f"'epoch'::timestamptz + {BASE_MS} * interval '1 millisecond'"
        await raw_sql(url, [s.format(s=pg_schema(url), ms=BASE_MS, t=t) for s in POSTGRES_ROWS])


async def contents(url: str) -> dict[str, Any]:
    """What a store holds, as its users see it and as rows in the backup file's form."""
    async with await tidings.connect(url) as store:
        events = await _raw_events(store)
        audits = [await store.audit(p) for p in range(1, await store.head() + 1)]
        found: dict[str, Any] = {
            "head": await store.head(),
            "events": events,
            "audit": audits,
            "subscriptions": [
                (s.name, s.checkpoint, s.parked, s.last_error) for s in await subscriptions(store)
            ],
            "parked": [
                (p.position, p.event_id, p.stream, p.error, p.attempts)
                for p in await parked(store, "audit-log")
            ],
            "checkpoint": await store.checkpoint("other-log"),
        }
        async with snapshot_of(store) as snap:
            for table in TABLES:
                rows = [r async for page in snap.pages(table, 1000) for r in page]
                found["table " + table.name] = sorted(rows, key=repr)
        return found


async def _raw_events(store: tidings.EventStore) -> list[tuple[Any, ...]]:
    return [
        (e.id, e.stream, e.type, bytes(e.data), bytes(e.metadata), e.version, e.position, e.time)
        async for page in store.read_all_pages(raw=True)
        for e in page
    ]
