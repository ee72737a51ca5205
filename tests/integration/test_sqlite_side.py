"""SQLite side writes (checkpoints, leases, snapshots, view rows) beside the writer thread.

They must commit or roll back whole, never hang the writer, wait for another
process's lock without blocking the event loop, and refuse an append that would wait
for the transaction it is made in.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

import tidings
from tidings.errors import InvalidInput, StoreClosed
from tidings.store.sqlite import SQLiteStore
from tidings.store.sqlite_side import begin_immediate


async def _open(tmp_path: Path) -> SQLiteStore:
    store = await tidings.connect(f"sqlite:///{tmp_path / 'side.db'}")
    assert isinstance(store, SQLiteStore)
    await store.side.write(lambda c: c.execute("CREATE TABLE IF NOT EXISTS side (x INTEGER)"))
    return store


async def _rows(store: SQLiteStore) -> list[int]:
    return [x for (x,) in await store.read(lambda c: c.execute("SELECT x FROM side ORDER BY x"))]


def _hold_lock(path: Path, seconds: float, held: threading.Event) -> None:
    """Another connection (as another process would) holds the write lock for a while."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    held.set()
    threading.Event().wait(seconds)
    conn.execute("ROLLBACK")
    conn.close()


async def test_a_write_commits_whole_or_not_at_all(tmp_path: Path) -> None:
    async with await _open(tmp_path) as store:
        assert await store.side.write(lambda c: c.execute("INSERT INTO side VALUES (1)").rowcount)

        def half(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO side VALUES (2)")
            raise ValueError("changed my mind")

        with pytest.raises(ValueError, match="changed my mind"):
            await store.side.write(half)
        assert await _rows(store) == [1]


async def test_a_transaction_commits_on_success_and_rolls_back_on_error(tmp_path: Path) -> None:
    async with await _open(tmp_path) as store:
        async with store.side.transaction() as conn:
            conn.execute("INSERT INTO side VALUES (1)")
            await asyncio.sleep(0.01)  # the block may await: the writer waits for it
            conn.execute("INSERT INTO side VALUES (2)")
        with pytest.raises(RuntimeError):
            async with store.side.transaction() as conn:
                conn.execute("INSERT INTO side VALUES (3)")
                raise RuntimeError
        assert await _rows(store) == [1, 2]
        await store.append("after-1", [tidings.NewEvent("E", {})])  # the writer goes on


async def test_appends_wait_for_a_transaction_and_then_land(tmp_path: Path) -> None:
    async with await _open(tmp_path) as store:
        lent = asyncio.Event()

        async def append(i: int) -> tidings.AppendResult:
            await lent.wait()
            return await store.append(f"s-{i}", [tidings.NewEvent("E", {"i": i})])

        # Other tasks (started outside the block) append while the connection is lent.
        others = asyncio.gather(*(append(i) for i in range(20)))
        async with store.side.transaction() as conn:
            conn.execute("INSERT INTO side VALUES (1)")
            lent.set()
            await asyncio.sleep(0.05)
            assert not others.done()  # the lock is lent: appends queue behind it
        results = await others
        assert sorted(r.position for r in results) == list(range(1, 21))


async def test_an_append_inside_a_transaction_is_refused_not_hung(tmp_path: Path) -> None:
    async with await _open(tmp_path) as store:
        with pytest.raises(InvalidInput, match="cannot append inside"):
            async with store.side.transaction() as conn:
                conn.execute("INSERT INTO side VALUES (1)")
                await store.append("inside-1", [tidings.NewEvent("E", {})])
        assert await _rows(store) == []
        assert await store.head() == 0
        with pytest.raises(InvalidInput, match="nested"):
            async with store.side.transaction(), store.side.transaction():
                pass


async def test_a_borrower_cancelled_while_waiting_does_not_wedge_the_writer(
    tmp_path: Path,
) -> None:
    async with await _open(tmp_path) as store:
        held = threading.Event()
        holder = threading.Thread(target=_hold_lock, args=(tmp_path / "side.db", 0.3, held))
        holder.start()
        await asyncio.to_thread(held.wait)

        async def borrow() -> None:
            async with store.side.transaction() as conn:
                conn.execute("INSERT INTO side VALUES (1)")

        task = asyncio.create_task(borrow())
        await asyncio.sleep(0.05)  # the writer waits for the other connection's lock
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.to_thread(holder.join)
        result = await asyncio.wait_for(store.append("later-1", [tidings.NewEvent("E", {})]), 5)
        assert result.position == 1
        assert await _rows(store) == []  # the lease was handed straight back, rolled back


async def test_a_write_waits_for_another_process_without_blocking_the_loop(
    tmp_path: Path,
) -> None:
    async with await _open(tmp_path) as store:
        held = threading.Event()
        holder = threading.Thread(target=_hold_lock, args=(tmp_path / "side.db", 0.3, held))
        holder.start()
        await asyncio.to_thread(held.wait)
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        await store.side.write(lambda c: c.execute("INSERT INTO side VALUES (7)"))
        ticker.cancel()
        await asyncio.to_thread(holder.join)
        assert await _rows(store) == [7]
        assert ticks >= 10  # the loop ran on while the write waited (about 30 ticks)


async def test_begin_immediate_retries_until_the_lock_is_free(tmp_path: Path) -> None:
    path = tmp_path / "lock.db"
    sqlite3.connect(path).execute("PRAGMA journal_mode = WAL").fetchone()
    held = threading.Event()
    holder = threading.Thread(target=_hold_lock, args=(path, 0.1, held))
    holder.start()
    held.wait()
    conn = sqlite3.connect(path, isolation_level=None, timeout=0)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        begin_immediate(conn, 0.01)  # gives up at its timeout
    begin_immediate(conn, 5.0)  # and gets it once the holder lets go
    conn.execute("ROLLBACK")
    holder.join()
    conn.close()


async def test_side_writes_and_appends_from_many_tasks_all_land(tmp_path: Path) -> None:
    async with await _open(tmp_path) as store:

        async def writer(i: int) -> Any:
            if i % 3 == 0:
                async with store.side.transaction() as conn:
                    conn.execute("INSERT INTO side VALUES (?)", (i,))
                    await asyncio.sleep(0)
            elif i % 3 == 1:
                await store.side.write(lambda c: c.execute("INSERT INTO side VALUES (?)", (i,)))
            else:
                await store.append(f"s-{i}", [tidings.NewEvent("E", {"i": i})])

        await asyncio.wait_for(asyncio.gather(*(writer(i) for i in range(300))), 30)
        assert await _rows(store) == [i for i in range(300) if i % 3 != 2]
        assert await store.head() == 100


async def test_side_writes_after_close_raise_store_closed(tmp_path: Path) -> None:
    store = await _open(tmp_path)
    await store.close()
    with pytest.raises(StoreClosed):
        await store.side.write(lambda c: None)
    with pytest.raises(StoreClosed):
        async with store.side.transaction():
            pass
