"""Where pull consumers keep their definitions and what they handed out: the store's database.

Beside each checkpoint row (``checkpoints``) a pull consumer has a row with its
definition (JSON) and ``handed``, the highest position handed out: every event of the
consumer at or below it has been in a batch, so an ack may move the checkpoint that far
and no further. The ack is one compare-and-set statement on both rows. A consumer group
keeps, per partition, the highest position handed out and to which member.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any, Protocol

from tidings.sql import load_queries
from tidings.store.base import StoreFront
from tidings.subscriptions.checkpoints import MemoryCheckpoints, open_checkpoints
from tidings.subscriptions.groupstore import GroupStore, open_groups, supports_groups
from tidings.subscriptions.pulldefs import PullRow
from tidings.subscriptions.pullmemory import MemoryPull


class PullStore(Protocol):
    """Pull consumer storage of one store."""

    async def create(self, name: str, definition: str, start: int) -> bool:
        """Store the definition and a checkpoint at ``start`` unless ``name`` has a
        definition; True when this call created it."""
        ...

    async def load(self, name: str) -> PullRow | None:
        """The stored consumer, or None."""
        ...

    async def rows(self) -> list[tuple[str, PullRow]]:
        """Every pull consumer, by name."""
        ...

    async def hand_out(self, name: str, position: int) -> None:
        """Raise the highest position handed out to ``position`` (never lower it)."""
        ...

    async def ack(self, name: str, position: int) -> bool:
        """Move the checkpoint to ``position`` if that is forward and not past what was
        handed out; False (nothing written) otherwise."""
        ...

    async def mark_grouped(self, name: str) -> None:
        """Record that members share ``name`` as a consumer group."""
        ...

    async def handed_to(self, name: str, member: str) -> dict[int, int]:
        """Per partition last handed out to ``member``: the highest position."""
        ...

    async def hand_out_partitions(
        self, name: str, member: str, partitions: list[int], position: int
    ) -> None:
        """Record that ``member`` was handed ``partitions`` up to ``position``."""
        ...

    async def group_state(self, name: str) -> tuple[int | None, int]:
        """The group's lowest partition checkpoint (None: no partitions) and how many
        members it has."""
        ...

    async def reset(self, name: str, position: int) -> None:
        """Move the checkpoint, every partition checkpoint and what counts as handed
        out to ``position``, in one transaction."""
        ...

    async def delete(self, name: str) -> bool:
        """Remove the definition, checkpoint, parked events and group rows of ``name``;
        False when it had no definition."""
        ...


def open_pull(store: StoreFront) -> PullStore:
    """Pull consumer storage on ``store``'s database (nothing to close: it uses the
    store's connections)."""
    store = store.home
    kind = type(store).__name__
    if kind == "PostgresStore":
        return PostgresPull(store)
    if kind == "SQLiteStore":
        return SQLitePull(store)
    return _memory(store)


def open_pull_groups(store: StoreFront) -> GroupStore:
    """The group storage pull consumers share on ``store``: the database's, or on the
    memory store, groups held beside it (for pull consumers only: a library
    ``Subscription`` still wants a database for ``member=``)."""
    if supports_groups(store):
        return open_groups(store)
    return _memory(store).groups


def _memory(store: StoreFront) -> MemoryPull:
    shared: MemoryPull | None = getattr(store, "_tidings_pull", None)
    if shared is None:  # memory: the definitions live as long as the store object
        checkpoints = open_checkpoints(store)
        assert isinstance(checkpoints, MemoryCheckpoints)
        shared = MemoryPull(checkpoints)
        store._tidings_pull = shared  # type: ignore[attr-defined]
    return shared


def _ms() -> int:
    return time.time_ns() // 1_000_000


class PostgresPull:
    """Pull consumers in the store's schema, on the store's pool."""

    def __init__(self, store: Any) -> None:
        self._pool = store.calls
        self._q = load_queries("postgres", store.schema, "pull.sql")

    async def create(self, name: str, definition: str, start: int) -> bool:  # noqa: D102
        async with self._pool.acquire() as conn, conn.transaction():
            status = await conn.execute(self._q["create"], name, definition, start)
            if status != "INSERT 0 1":
                return False
            await conn.execute(self._q["create_checkpoint"], name, start)
            return True

    async def load(self, name: str) -> PullRow | None:  # noqa: D102
        row = await self._pool.fetchrow(self._q["load"], name)
        return None if row is None else PullRow(row[0], int(row[1]), bool(row[2]))

    async def rows(self) -> list[tuple[str, PullRow]]:  # noqa: D102
        found = await self._pool.fetch(self._q["list"])
        return [(r[0], PullRow(r[1], int(r[2]), bool(r[3]))) for r in found]

    async def hand_out(self, name: str, position: int) -> None:  # noqa: D102
        await self._pool.execute(self._q["hand_out"], name, position)

    async def ack(self, name: str, position: int) -> bool:  # noqa: D102
        return bool(await self._pool.execute(self._q["ack"], name, position) == "UPDATE 1")

    async def mark_grouped(self, name: str) -> None:  # noqa: D102
        await self._pool.execute(self._q["mark_grouped"], name)

    async def handed_to(self, name: str, member: str) -> dict[int, int]:  # noqa: D102
        rows = await self._pool.fetch(self._q["handed_to"], name, member)
        return {int(r[0]): int(r[1]) for r in rows}

    async def hand_out_partitions(  # noqa: D102
        self, name: str, member: str, partitions: list[int], position: int
    ) -> None:
        await self._pool.execute(self._q["hand_out_partitions"], name, member, position, partitions)

    async def group_state(self, name: str) -> tuple[int | None, int]:  # noqa: D102
        low, members = await self._pool.fetchrow(self._q["group_state"], name)
        return None if low is None else int(low), int(members)

    async def reset(self, name: str, position: int) -> None:  # noqa: D102
        q = self._q
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(q["lock_definition"], name)
            await conn.execute(q["reset_checkpoint"], name, position)
            await conn.execute(q["reset_partitions"], name, position)
            await conn.execute(q["reset_handed"], name, position)
            await conn.execute(q["delete_handed"], name)

    async def delete(self, name: str) -> bool:  # noqa: D102
        q = self._q
        async with self._pool.acquire() as conn, conn.transaction():
            for part in ("handed", "members", "partitions", "parked", "checkpoint"):
                await conn.execute(q[f"delete_{part}"], name)
            return bool(await conn.execute(q["delete_definition"], name) == "DELETE 1")


class SQLitePull:
    """Pull consumers in the store's file, written through the store's side writes
    (``tidings.store.sqlite_side``), read on its read connection."""

    def __init__(self, store: Any) -> None:
        self._side = store.side
        self._read = store.read
        self._q = load_queries("sqlite", None, "pull.sql")

    async def _run(self, sql: str, *args: Any) -> int:
        count: int = await self._side.write(lambda conn: conn.execute(sql, args).rowcount)
        return count

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        rows: list[Any] = await self._read(lambda conn: conn.execute(sql, args).fetchall())
        return rows

    async def create(self, name: str, definition: str, start: int) -> bool:  # noqa: D102
        def create(conn: sqlite3.Connection) -> bool:
            now = _ms()
            if conn.execute(self._q["create"], (name, definition, start, now)).rowcount != 1:
                return False
            conn.execute(self._q["create_checkpoint"], (name, start, now))
            return True

        created: bool = await self._side.write(create)
        return created

    async def load(self, name: str) -> PullRow | None:  # noqa: D102
        rows = await self._fetch(self._q["load"], name)
        return PullRow(rows[0][0], int(rows[0][1]), bool(rows[0][2])) if rows else None

    async def rows(self) -> list[tuple[str, PullRow]]:  # noqa: D102
        found = await self._fetch(self._q["list"])
        return [(n, PullRow(d, int(h), bool(g))) for n, d, h, g in found]

    async def hand_out(self, name: str, position: int) -> None:  # noqa: D102
        await self._run(self._q["hand_out"], position, name)

    async def ack(self, name: str, position: int) -> bool:  # noqa: D102
        return await self._run(self._q["ack"], position, _ms(), name) == 1

    async def mark_grouped(self, name: str) -> None:  # noqa: D102
        await self._run(self._q["mark_grouped"], name)

    async def handed_to(self, name: str, member: str) -> dict[int, int]:  # noqa: D102
        rows = await self._fetch(self._q["handed_to"], name, member)
        return {int(p): int(pos) for p, pos in rows}

    async def hand_out_partitions(  # noqa: D102
        self, name: str, member: str, partitions: list[int], position: int
    ) -> None:
        rows = [(name, p, member, position) for p in partitions]
        sql = self._q["hand_out_partition"]
        await self._side.write(lambda conn: conn.executemany(sql, rows))

    async def group_state(self, name: str) -> tuple[int | None, int]:  # noqa: D102
        [(low, members)] = await self._fetch(self._q["group_state"], name)
        return None if low is None else int(low), int(members)

    async def reset(self, name: str, position: int) -> None:  # noqa: D102
        q = self._q

        def reset(conn: sqlite3.Connection) -> None:
            conn.execute(q["reset_checkpoint"], (position, _ms(), name))
            conn.execute(q["reset_partitions"], (position, name))
            conn.execute(q["reset_handed"], (position, name))
            conn.execute(q["delete_handed"], (name,))

        await self._side.write(reset)

    async def delete(self, name: str) -> bool:  # noqa: D102
        q = self._q

        def delete(conn: sqlite3.Connection) -> bool:
            for part in ("handed", "members", "partitions", "parked", "checkpoint"):
                conn.execute(q[f"delete_{part}"], (name,))
            return bool(conn.execute(q["delete_definition"], (name,)).rowcount == 1)

        deleted: bool = await self._side.write(delete)
        return deleted
