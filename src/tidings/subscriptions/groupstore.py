"""Where consumer groups keep their partition checkpoints, leases and members.

A group's partitions are rows of the store's database, each with its checkpoint and
its lease (owner, lease end); members are rows refreshed by heartbeats. A checkpoint
moves only by a fenced compare-and-set: the owner, within its lease, from the position
it read. PostgreSQL leases run on the database clock; SQLite's on the process clock in
milliseconds (every process of a SQLite store shares the machine).
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Callable
from typing import Any, Protocol

from tidings.errors import InvalidInput
from tidings.sql import load_queries
from tidings.store.base import StoreFront
from tidings.subscriptions.checkpoints import Work

Rebalance = Callable[[dict[int, int], int], list[int]]
"""Called inside a heartbeat with the partitions the member holds (partition ->
checkpoint) and its fair share; returns the partitions to give up (idle ones only)."""


class GroupStore(Protocol):
    """Partition and member storage of one store, for one member."""

    async def ensure(self, name: str, partitions: int, start: int) -> None:
        """Create ``partitions`` partitions at ``start`` unless the group exists; raise
        ``InvalidInput`` when it exists with another count."""
        ...

    async def partitions(self, name: str) -> int:
        """How many partitions the group ``name`` has (0: it is not a group)."""
        ...

    async def beat(
        self, name: str, member: str, ttl: float, partitions: int, rebalance: Rebalance
    ) -> dict[int, int]:
        """One heartbeat, in one transaction: see the member, forget members silent for
        ``ttl``, renew the member's leases, give up what ``rebalance`` picks and take free
        or expired partitions up to the fair share. Returns the partitions taken."""
        ...

    async def move(
        self, name: str, partition: int, old: int, new: int, member: str, work: Work | None
    ) -> bool:
        """Run ``work`` and move a partition checkpoint from ``old`` to ``new`` in one
        transaction; False (nothing written) unless ``member`` holds a live lease on it
        and it still stands at ``old``."""
        ...

    async def leave(self, name: str, member: str) -> None:
        """Forget the member and release its partitions (others take them at once)."""
        ...

    async def reset(self, name: str, position: int) -> None:
        """Move every partition checkpoint of ``name`` to ``position``."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def supports_groups(store: StoreFront) -> bool:
    """Whether ``store`` can hold consumer groups (its database can: SQLite, PostgreSQL)."""
    return type(store.home).__name__ in ("PostgresStore", "SQLiteStore")


def open_groups(store: StoreFront) -> GroupStore:
    """Group storage on ``store``'s database; the caller closes it."""
    store = store.home
    if type(store).__name__ == "PostgresStore":
        return PostgresGroups(store)
    if type(store).__name__ == "SQLiteStore":
        return SQLiteGroups(store)
    raise InvalidInput("consumer groups need a SQLite or PostgreSQL store")


def share(partitions: int, members: int) -> int:
    """A member's fair share of ``partitions`` among ``members`` (rounded up)."""
    return math.ceil(partitions / max(1, members))


def _check_count(name: str, found: int, partitions: int) -> None:
    if found != partitions:
        raise InvalidInput(
            f"consumer group {name!r} has {found} partitions, not {partitions}: "
            "the partition count is fixed when the group is created"
        )


class PostgresGroups:
    """Partitions and members in the store's schema, on the store's pool."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self._pool = store.calls
        self._q = load_queries("postgres", store.schema, "groups.sql")

    async def ensure(self, name: str, partitions: int, start: int) -> None:  # noqa: D102
        async with self._pool.acquire() as conn, conn.transaction():
            # The subscription row (made by the caller) serializes the group's creation.
            await conn.execute(self._q["lock_subscription"], name)
            found = int(await conn.fetchval(self._q["count_partitions"], name))
            if found == 0:
                await conn.execute(self._q["create_partitions"], name, partitions, start)
                found = partitions
        _check_count(name, found, partitions)

    async def partitions(self, name: str) -> int:  # noqa: D102
        return int(await self._pool.fetchval(self._q["count_partitions"], name))

    async def beat(  # noqa: D102
        self, name: str, member: str, ttl: float, partitions: int, rebalance: Rebalance
    ) -> dict[int, int]:
        q = self._q
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(q["see_member"], name, member)
            await conn.execute(q["forget_gone_members"], name, ttl)
            target = share(partitions, int(await conn.fetchval(q["count_members"], name)))
            held = {r[0]: int(r[1]) for r in await conn.fetch(q["renew"], name, member, ttl)}
            gone = rebalance(held, target)
            if gone:
                await conn.execute(q["release"], name, member, gone)
            wanted = target - (len(held) - len(gone))
            if wanted <= 0:
                return {}
            rows = await conn.fetch(q["take"], name, member, ttl, wanted)
            return {r[0]: int(r[1]) for r in rows}

    async def move(  # noqa: D102
        self, name: str, partition: int, old: int, new: int, member: str, work: Work | None
    ) -> bool:
        if work is None:
            args = (name, partition, old, new, member)
            return bool(await self._pool.execute(self._q["move_lazy"], *args) == "UPDATE 1")
        try:
            async with self._store.lend() as conn, conn.transaction():
                # The handler first, the fence last: the partition row stays locked
                # only for the commit, so this member's heartbeat never waits on it.
                await work(conn)
                status = await conn.execute(self._q["move"], name, partition, old, new, member)
                if status != "UPDATE 1":
                    raise _Fenced
        except _Fenced:
            return False
        return True

    async def leave(self, name: str, member: str) -> None:  # noqa: D102
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(self._q["leave"], name, member)
            await conn.execute(self._q["release_all"], name, member)

    async def reset(self, name: str, position: int) -> None:  # noqa: D102
        await self._pool.execute(self._q["reset"], name, position)

    async def close(self) -> None:  # noqa: D102
        return None  # the pool is the store's


class _Fenced(Exception):
    """Rolls back a handler's transaction whose checkpoint move was refused."""


def _ms() -> int:
    return time.time_ns() // 1_000_000


class SQLiteGroups:
    """Partitions and members in the store's file, written through the store's side
    writes (``tidings.store.sqlite_side``)."""

    def __init__(self, store: Any) -> None:
        self._side = store.side
        self._read = store.read
        self._q = load_queries("sqlite", None, "groups.sql")

    async def ensure(self, name: str, partitions: int, start: int) -> None:  # noqa: D102
        def create(conn: sqlite3.Connection) -> int:
            found = int(conn.execute(self._q["count_partitions"], (name,)).fetchone()[0])
            if found == 0:
                rows = [(name, p, start) for p in range(partitions)]
                conn.executemany(self._q["create_partition"], rows)
                found = partitions
            return found

        _check_count(name, await self._side.write(create), partitions)

    async def partitions(self, name: str) -> int:  # noqa: D102
        sql = self._q["count_partitions"]
        return int(await self._read(lambda conn: conn.execute(sql, (name,)).fetchone()[0]))

    async def beat(  # noqa: D102
        self, name: str, member: str, ttl: float, partitions: int, rebalance: Rebalance
    ) -> dict[int, int]:
        q = self._q

        def beat(conn: sqlite3.Connection) -> dict[int, int]:
            now = _ms()
            until = now + int(ttl * 1000)
            conn.execute(q["see_member"], (name, member, now))
            conn.execute(q["forget_gone_members"], (name, now - int(ttl * 1000)))
            members = int(conn.execute(q["count_members"], (name,)).fetchone()[0])
            target = share(partitions, members)
            renewed = conn.execute(q["renew"], (until, name, member)).fetchall()
            held = {int(p): int(pos) for p, pos in renewed}
            gone = rebalance(held, target)
            conn.executemany(q["release"], [(name, member, p) for p in gone])
            wanted = target - (len(held) - len(gone))
            taken: dict[int, int] = {}
            if wanted > 0:
                free = [p for (p,) in conn.execute(q["free"], (name, now, wanted))]
                for p in free:
                    for part, pos in conn.execute(q["take"], (member, until, name, p)):
                        taken[int(part)] = int(pos)
            return taken

        taken: dict[int, int] = await self._side.write(beat)
        return taken

    async def move(  # noqa: D102
        self, name: str, partition: int, old: int, new: int, member: str, work: Work | None
    ) -> bool:
        args = (new, name, partition, old, member)
        if work is None:
            moved = await self._side.write(
                lambda conn: conn.execute(self._q["move"], (*args, _ms())).rowcount
            )
            return bool(moved == 1)
        try:
            async with self._side.transaction() as conn:
                await work(conn)  # the handler writes inside this transaction
                if conn.execute(self._q["move"], (*args, _ms())).rowcount != 1:
                    raise _Fenced
        except _Fenced:
            return False
        return True

    async def leave(self, name: str, member: str) -> None:  # noqa: D102
        def leave(conn: sqlite3.Connection) -> None:
            conn.execute(self._q["leave"], (name, member))
            conn.execute(self._q["release_all"], (name, member))

        await self._side.write(leave)

    async def reset(self, name: str, position: int) -> None:  # noqa: D102
        await self._side.write(lambda conn: conn.execute(self._q["reset"], (position, name)))

    async def close(self) -> None:  # noqa: D102
        return None  # the connections are the store's
