"""The transactional outbox: saves in the application's transactions, relays that publish
them in order per key, at least once, and nothing of what rolled back.

The application here keeps a table ``orders(key, version)``; each transaction bumps the
versions of the keys it touches (which serializes the transactions of a key, as an
application's own row update does) and saves one or two messages per key saying so. So
each key's messages have one right order, ``(version, part)``, and subscribers must
receive exactly that, whatever the writers, drivers and relays do concurrently.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sqlite3
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import asyncpg
import psycopg
import pytest

import tidings.notify
from tests.conftest import POSTGRES_URL, require_service
from tidings.errors import InvalidChannel, InvalidInput, PayloadTooLarge, StoreClosed
from tidings.notify import Subscription
from tidings.outbox import RELAY_TASK, Outbox

KEYS = [f"order-{i}" for i in range(10)]
WRITERS = 8
TXNS_PER_WRITER = 50
RELAY_SUBPROCESS = Path(__file__).with_name("outbox_relay.py")

Saved = list[bytes]


class Rollback(Exception):
    """Raised inside an application transaction to roll it back."""


def plan(writer: int, seed: int) -> list[tuple[list[str], int, bool]]:
    """A writer's transactions: the keys each touches, its parts per key, whether it rolls back."""
    rng = random.Random(seed * 1000 + writer)
    txns = []
    for _ in range(TXNS_PER_WRITER):
        keys = sorted(set(rng.sample(KEYS, 2 if rng.random() < 0.2 else 1)))
        txns.append((keys, 2 if rng.random() < 0.2 else 1, rng.random() < 0.1))
    return txns


def message(key: str, version: int, part: int, writer: int, rolled_back: bool) -> bytes:
    return f"{key}|{version}|{part}|{writer}{'|rb' if rolled_back else ''}".encode()


def order_of(payload: bytes) -> tuple[str, tuple[int, int]]:
    key, version, part, *_ = payload.decode().split("|")
    return key, (int(version), int(part))


async def write_async(
    writer: int,
    seed: int,
    txn: Callable[[], Any],
    bump: Callable[[Any, str], Awaitable[int]],
    save: Callable[[Any, str, bytes], Awaitable[None]],
    committed: Saved,
) -> None:
    """Run a writer's transactions through an async driver; record what committed."""
    for keys, parts, rolled_back in plan(writer, seed):
        saved: Saved = []
        try:
            async with txn() as conn:
                for key in keys:  # sorted: two writers never deadlock
                    version = await bump(conn, key)
                    for part in range(parts):
                        payload = message(key, version, part, writer, rolled_back)
                        await save(conn, key, payload)
                        saved.append(payload)
                if rolled_back:
                    raise Rollback
        except Rollback:
            continue
        committed.extend(saved)


def write_sync(
    writer: int,
    seed: int,
    conn: Any,
    begin: Callable[[], Any],
    bump: Callable[[str], int],
    outbox: Outbox,
    committed: Saved,
) -> None:
    """Run a writer's transactions through a synchronous driver, in a thread of its own."""
    for keys, parts, rolled_back in plan(writer, seed):
        saved: Saved = []
        try:
            with begin():
                for key in keys:
                    version = bump(key)
                    for part in range(parts):
                        payload = message(key, version, part, writer, rolled_back)
                        outbox.save_sync(conn, key, payload)
                        saved.append(payload)
                if rolled_back:
                    raise Rollback
        except Rollback:
            continue
        committed.extend(saved)


async def receive(sub: Subscription, wanted: set[bytes], within: float = 25.0) -> list[bytes]:
    """Payloads from ``sub`` until every wanted one came, then a short quiet while for extras."""
    got: list[bytes] = []
    missing = set(wanted)
    deadline = time.monotonic() + within
    while missing and time.monotonic() < deadline:
        msg = await sub.get(deadline - time.monotonic())
        if msg is None:
            break
        got.append(msg.payload)
        missing.discard(msg.payload)
    while (msg := await sub.get(0.3)) is not None:
        got.append(msg.payload)
    return got


def check_delivery(got: list[bytes], committed: Saved, *, duplicates_allowed: bool = False) -> None:
    """Everything committed arrived, nothing else did, and each key's messages in order."""
    assert not [p for p in got if p.endswith(b"|rb")], "a rolled-back message was published"
    missing = set(committed) - set(got)
    assert not missing, f"{len(missing)} committed messages never published, e.g. {min(missing)!r}"
    assert set(got) == set(committed)
    if not duplicates_allowed:
        assert len(got) == len(committed), "a message was published twice in normal operation"
    first: dict[str, list[tuple[int, int]]] = defaultdict(list)
    seen: set[bytes] = set()
    for payload in got:
        if payload not in seen:
            seen.add(payload)
            key, place = order_of(payload)
            first[key].append(place)
    expected: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for payload in committed:
        key, place = order_of(payload)
        expected[key].append(place)
    for key, places in expected.items():
        assert first[key] == sorted(places), f"key {key} published out of order"


def schema_of(url: str) -> str:
    return dict(parse_qsl(urlsplit(url).query))["schema"]


async def wait_until(condition: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.01)


# -- PostgreSQL: asyncpg, psycopg async and psycopg sync writers, two relays ---------------


@pytest.mark.postgres
async def test_postgres_writers_of_every_driver_and_two_relays_deliver_each_key_in_order(
    pg_url: str, channel: str
) -> None:
    schema = schema_of(pg_url)
    table = f'"{schema}".orders'
    outbox_a = await Outbox.open(pg_url, channel=channel)
    outbox_b = await Outbox.open(pg_url, channel=channel)  # as a second process would
    pool = await asyncpg.create_pool(POSTGRES_URL, min_size=3, max_size=3)
    await pool.execute(f"CREATE TABLE {table} (key text PRIMARY KEY, version int NOT NULL)")
    await pool.executemany(f"INSERT INTO {table} VALUES ($1, 0)", [(k,) for k in KEYS])
    bump_sql = f"UPDATE {table} SET version = version + 1 WHERE key = $1 RETURNING version"
    bump_ps = bump_sql.replace("$1", "%s")
    notifier = await tidings.notify.connect(f"memory://{uuid.uuid4().hex}")
    committed: Saved = []
    ps_async = [await psycopg.AsyncConnection.connect(POSTGRES_URL) for _ in range(2)]
    ps_sync = [psycopg.Connection.connect(POSTGRES_URL) for _ in range(2)]

    async def ps_bump(conn: Any, key: str) -> int:
        row = await (await conn.execute(bump_ps, (key,))).fetchone()
        return int(row[0])

    async def asyncpg_writer(writer: int) -> None:
        @contextlib.asynccontextmanager
        async def txn() -> Any:
            async with pool.acquire() as conn, conn.transaction():
                yield conn

        async def bump(conn: Any, key: str) -> int:
            return int(await conn.fetchval(bump_sql, key))

        await write_async(writer, 1, txn, bump, outbox_a.save, committed)

    async def psycopg_writer(writer: int, conn: Any) -> None:
        @contextlib.asynccontextmanager
        async def txn() -> Any:
            async with conn.transaction():
                yield conn

        await write_async(writer, 1, txn, ps_bump, outbox_b.save, committed)

    def psycopg_sync_writer(writer: int, conn: Any) -> None:
        def bump(key: str) -> int:
            return int(conn.execute(bump_ps, (key,)).fetchone()[0])

        write_sync(writer, 1, conn, conn.transaction, bump, outbox_a, committed)

    try:
        async with notifier.subscribe(channel, maxsize=100_000) as sub:
            relay_a = outbox_a.relay(notifier, batch_size=25, poll_interval=0.05)
            relay_b = outbox_b.relay(notifier, batch_size=25, poll_interval=0.05)
            async with relay_a, relay_b:
                assert any(t.get_name() == RELAY_TASK for t in asyncio.all_tasks())
                await asyncio.gather(
                    *(asyncpg_writer(w) for w in range(4)),
                    psycopg_writer(4, ps_async[0]),
                    psycopg_writer(5, ps_async[1]),
                    asyncio.to_thread(psycopg_sync_writer, 6, ps_sync[0]),
                    asyncio.to_thread(psycopg_sync_writer, 7, ps_sync[1]),
                )
                got = await receive(sub, set(committed))
                stats_a, stats_b = relay_a.stats(), relay_b.stats()
        check_delivery(got, committed)
        assert stats_a.published + stats_b.published == len(committed)
        assert stats_a.failed == stats_b.failed == 0
        assert await outbox_a.pending() == 0
        assert len(committed) > 300
    finally:
        for c in ps_async:
            await c.close()
        for s in ps_sync:
            s.close()
        await pool.close()
        await notifier.close()
        await outbox_a.close()
        await outbox_b.close()


# -- SQLite: writer threads and event-loop writers, two relays ------------------------------


async def test_sqlite_writers_and_two_relays_deliver_each_key_in_order(
    sqlite_url: str, channel: str
) -> None:
    path = urlsplit(sqlite_url).path
    setup = sqlite3.connect(path)
    setup.execute("PRAGMA journal_mode = WAL")
    setup.execute("CREATE TABLE orders (key TEXT PRIMARY KEY, version INTEGER NOT NULL)")
    setup.executemany("INSERT INTO orders VALUES (?, 0)", [(k,) for k in KEYS])
    setup.commit()
    setup.close()
    outbox_a = await Outbox.open(sqlite_url, channel=channel)
    outbox_b = await Outbox.open(sqlite_url, channel=channel)
    notifier = await tidings.notify.connect(f"memory://{uuid.uuid4().hex}")
    committed: Saved = []
    bump_sql = "UPDATE orders SET version = version + 1 WHERE key = ? RETURNING version"

    def app_connection() -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None, timeout=10, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 10000")
        return conn

    @contextlib.contextmanager
    def begin(conn: sqlite3.Connection) -> Any:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def thread_writer(writer: int) -> None:
        conn = app_connection()
        try:
            write_sync(
                writer,
                2,
                conn,
                lambda: begin(conn),
                lambda key: int(conn.execute(bump_sql, (key,)).fetchone()[0]),
                outbox_a if writer % 2 else outbox_b,
                committed,
            )
        finally:
            conn.close()

    async def loop_writer(writer: int) -> None:
        conn = app_connection()

        @contextlib.asynccontextmanager
        async def txn() -> Any:
            with begin(conn):
                yield conn

        async def bump(conn: Any, key: str) -> int:
            return int(conn.execute(bump_sql, (key,)).fetchone()[0])

        try:
            await write_async(writer, 2, txn, bump, outbox_a.save, committed)
        finally:
            conn.close()

    try:
        async with notifier.subscribe(channel, maxsize=100_000) as sub:
            relay_a = outbox_a.relay(notifier, batch_size=20, poll_interval=0.05)
            relay_b = outbox_b.relay(notifier, batch_size=20, poll_interval=0.05)
            async with relay_a, relay_b:
                await asyncio.gather(
                    *(asyncio.to_thread(thread_writer, w) for w in range(6)),
                    loop_writer(6),
                    loop_writer(7),
                )
                got = await receive(sub, set(committed))
                stats = [relay_a.stats(), relay_b.stats()]
        check_delivery(got, committed)
        assert sum(s.published for s in stats) == len(committed)
        assert await outbox_a.pending() == 0
        assert len(committed) > 300
    finally:
        await notifier.close()
        await outbox_a.close()
        await outbox_b.close()


# -- a notifier that rejects one key for a while ---------------------------------------------


class FlakyNotifier:
    """Publishes through a real notifier, but raises for payloads of ``bad_key`` while failing."""

    def __init__(self, inner: Any, bad_key: str) -> None:
        self.inner = inner
        self.bad_key = bad_key
        self.failing = True
        self.failed_at: list[float] = []

    async def publish(self, channel: str, payload: bytes) -> None:
        if self.failing and payload.startswith(self.bad_key.encode() + b"|"):
            self.failed_at.append(time.monotonic())
            raise ConnectionError("the broker refused it")
        await self.inner.publish(channel, payload)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def outbox_url(request: pytest.FixtureRequest) -> str:
    """An outbox URL on each durable backend."""
    fixture = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(fixture))


async def app_save(outbox: Outbox, outbox_url: str, messages: list[tuple[str, bytes]]) -> None:
    """Save messages in one committed transaction of the application's own connection."""
    if outbox.dialect == "sqlite":
        conn = sqlite3.connect(urlsplit(outbox_url).path, timeout=10)
        try:
            with conn:
                for key, payload in messages:
                    await outbox.save(conn, key, payload)
        finally:
            conn.close()
    else:
        pg = await asyncpg.connect(POSTGRES_URL)
        try:
            async with pg.transaction():
                for key, payload in messages:
                    await outbox.save(pg, key, payload)
        finally:
            await pg.close()


async def test_a_rejected_key_is_retried_with_backoff_while_other_keys_flow(
    outbox_url: str, channel: str
) -> None:
    outbox = await Outbox.open(outbox_url, channel=channel)
    inner = await tidings.notify.connect(f"memory://{uuid.uuid4().hex}")
    flaky = FlakyNotifier(inner, "bad")
    bad = [message("bad", v, 0, 0, False) for v in range(1, 21)]
    good = [message(f"good-{v % 3}", v, 0, 0, False) for v in range(1, 61)]
    try:
        async with inner.subscribe(channel, maxsize=10_000) as sub:
            await app_save(outbox, outbox_url, [(order_of(p)[0], p) for p in bad[:10] + good])
            relay = outbox.relay(
                flaky, batch_size=15, poll_interval=0.02, backoff=0.05, backoff_max=0.2
            )
            async with relay:
                got = await receive(sub, set(good), within=10)
                assert set(got) == set(good), "the failing key held the others up"
                await wait_until(lambda: len(flaky.failed_at) >= 5)
                await app_save(outbox, outbox_url, [("bad", p) for p in bad[10:]])
                stats = relay.stats()
                assert stats.failed >= 5
                assert stats.retried >= 4
                assert stats.last_error is not None and "refused" in stats.last_error
                assert await outbox.pending() == 20
                gaps = [b - a for a, b in zip(flaky.failed_at, flaky.failed_at[1:], strict=False)]
                # 0.05, 0.1, 0.2, then capped at 0.2 (less a little for clock rounding)
                for gap, delay in zip(gaps, [0.05, 0.1, 0.2, 0.2], strict=False):
                    assert gap >= delay * 0.9, f"retried after {gap:.3f}s, not {delay}s"
                flaky.failing = False
                got += await receive(sub, set(bad), within=10)
        check_delivery(got, bad + good)
        assert relay.stats().published == len(bad) + len(good)
        assert await outbox.pending() == 0
    finally:
        await inner.close()
        await outbox.close()


# -- real notifiers -----------------------------------------------------------------------


async def test_messages_reach_subscribers_of_a_real_notifier_in_order(
    sqlite_url: str, notifier_url: str, channel: str
) -> None:
    outbox = await Outbox.open(sqlite_url, channel=channel)
    notifier = await tidings.notify.connect(notifier_url)
    sent = [message(f"k{v % 4}", v, 0, 0, False) for v in range(1, 101)]
    try:
        async with (
            notifier.subscribe(channel, maxsize=10_000) as sub,
            outbox.relay(notifier, poll_interval=0.02) as relay,
        ):
            for chunk in range(0, len(sent), 10):
                part = sent[chunk : chunk + 10]
                await app_save(outbox, sqlite_url, [(order_of(p)[0], p) for p in part])
                relay.wake()
            got = await receive(sub, set(sent), within=15)
        check_delivery(got, sent)
    finally:
        await notifier.close()
        await outbox.close()


# -- a relay in another process -------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.redis
async def test_a_relay_in_another_process_shares_the_keys_without_reordering(
    pg_url: str, channel: str
) -> None:
    redis_url = require_service("redis")
    outbox = await Outbox.open(pg_url, channel=channel)
    notifier = await tidings.notify.connect(redis_url)
    sent = [message(f"k{v % 7}", v, 0, 0, False) for v in range(1, 401)]
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        str(RELAY_SUBPROCESS),
        pg_url,
        redis_url,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        assert json.loads(await asyncio.wait_for(child.stdout.readline(), 20)) == {"ready": True}
        async with notifier.subscribe(channel, maxsize=10_000) as sub:
            async with outbox.relay(notifier, batch_size=10, poll_interval=0.02) as relay:
                for chunk in range(0, len(sent), 20):
                    part = sent[chunk : chunk + 20]
                    await app_save(outbox, pg_url, [(order_of(p)[0], p) for p in part])
                got = await receive(sub, set(sent), within=20)
                ours = relay.stats().published
            child.stdin.close()
            theirs = json.loads(await asyncio.wait_for(child.stdout.readline(), 20))["published"]
        check_delivery(got, sent)
        assert ours + theirs == len(sent)
        assert ours > 0 and theirs > 0, f"one relay did everything ({ours} here, {theirs} there)"
        assert await outbox.pending() == 0
    finally:
        if child.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                child.kill()
        await child.wait()
        await notifier.close()
        await outbox.close()


# -- bad input, rollback, lifecycle ------------------------------------------------------


async def test_bad_input_raises_typed_errors_and_writes_nothing(
    outbox_url: str, channel: str
) -> None:
    outbox = await Outbox.open(outbox_url, max_payload=100)
    sqlite_conn = sqlite3.connect(urlsplit(outbox_url).path) if "sqlite" in outbox_url else None
    pg = None if sqlite_conn else await asyncpg.connect(POSTGRES_URL)
    conn: Any = sqlite_conn or pg
    cases: list[tuple[type[Exception], dict[str, Any]]] = [
        (InvalidInput, {"key": "", "payload": b"x", "channel": channel}),
        (InvalidInput, {"key": 42, "payload": b"x", "channel": channel}),
        (InvalidInput, {"key": "a\x00b", "payload": b"x", "channel": channel}),
        (InvalidInput, {"key": "k", "payload": "text", "channel": channel}),
        (InvalidInput, {"key": "k", "payload": None, "channel": channel}),
        (PayloadTooLarge, {"key": "k", "payload": b"x" * 101, "channel": channel}),
        (InvalidChannel, {"key": "k", "payload": b"x", "channel": "no spaces allowed"}),
        (InvalidChannel, {"key": "k", "payload": b"x", "channel": 7}),
        (InvalidChannel, {"key": "k", "payload": b"x"}),  # no default channel
    ]
    try:
        for error, kwargs in cases:
            with pytest.raises(error):
                await outbox.save(conn, **kwargs)
        with pytest.raises(InvalidInput, match="connection"):
            await outbox.save(object(), "k", b"x", channel=channel)
        if pg is not None:
            with (
                pytest.raises(InvalidInput, match="database"),
                contextlib.closing(sqlite3.connect(":memory:")) as other_db,
            ):
                await outbox.save(other_db, "k", b"x", channel=channel)
        else:
            other = await asyncpg.connect(POSTGRES_URL)
            with pytest.raises(InvalidInput, match="database"):
                await outbox.save(other, "k", b"x", channel=channel)
            await other.close()
        if pg is not None:
            with pytest.raises(InvalidInput, match="synchronous"):
                outbox.save_sync(pg, "k", b"x", channel=channel)
        if sqlite_conn is not None:
            sqlite_conn.commit()
        assert await outbox.pending() == 0
    finally:
        if sqlite_conn is not None:
            sqlite_conn.close()
        if pg is not None:
            await pg.close()
        await outbox.close()


async def test_rolled_back_saves_are_never_published(outbox_url: str, channel: str) -> None:
    outbox = await Outbox.open(outbox_url, channel=channel)
    notifier = await tidings.notify.connect(f"memory://{uuid.uuid4().hex}")
    try:
        if outbox.dialect == "sqlite":
            conn = sqlite3.connect(urlsplit(outbox_url).path)
            with contextlib.suppress(Rollback), conn:
                await outbox.save(conn, "k", b"rolled back")
                raise Rollback
            conn.close()
        else:
            pg = await asyncpg.connect(POSTGRES_URL)
            with contextlib.suppress(Rollback):
                async with pg.transaction():
                    await outbox.save(pg, "k", b"rolled back")
                    raise Rollback
            await pg.close()
        await app_save(outbox, outbox_url, [("k", b"committed")])
        async with notifier.subscribe(channel) as sub, outbox.relay(notifier, poll_interval=0.02):
            got = await receive(sub, {b"committed"}, within=10)
        assert got == [b"committed"]
    finally:
        await notifier.close()
        await outbox.close()


async def test_relay_lifecycle_and_close(sqlite_url: str, channel: str) -> None:
    outbox = await Outbox.open(f"{sqlite_url}?channel={channel}")
    assert outbox.channel == channel
    notifier = await tidings.notify.connect(f"memory://{uuid.uuid4().hex}")
    relay = outbox.relay(notifier, poll_interval=30)
    assert not relay.running
    await relay.start()
    assert relay.running
    async with notifier.subscribe(channel) as sub:
        await app_save(outbox, sqlite_url, [("k", b"1")])
        relay.wake()  # with a 30 s poll, only the wake-up can deliver it in time
        assert (await sub.get(5)) is not None
    await outbox.close()  # stops the relays it made
    assert not relay.running
    with pytest.raises(StoreClosed):
        outbox.relay(notifier)
    with pytest.raises(StoreClosed), contextlib.closing(sqlite3.connect(":memory:")) as db:
        await outbox.save(db, "k", b"x")
    await notifier.close()


class StuckNotifier:
    """Publishes through a real notifier, but never returns for ``stuck`` while it is set."""

    def __init__(self, inner: Any, stuck: bytes) -> None:
        self.inner = inner
        self.stuck: bytes | None = stuck
        self.reached = asyncio.Event()

    async def publish(self, channel: str, payload: bytes) -> None:
        if payload == self.stuck:
            self.reached.set()
            await asyncio.Event().wait()
        await self.inner.publish(channel, payload)


async def test_a_round_cut_short_loses_nothing_and_publishes_again_in_order(
    outbox_url: str, channel: str
) -> None:
    outbox = await Outbox.open(outbox_url, channel=channel)
    inner = await tidings.notify.connect(f"memory://{uuid.uuid4().hex}")
    sent = [message("k", v, 0, 0, False) for v in range(1, 11)]
    stuck = StuckNotifier(inner, sent[5])
    try:
        await app_save(outbox, outbox_url, [("k", p) for p in sent])
        async with inner.subscribe(channel) as sub:
            relay = outbox.relay(stuck, poll_interval=0.02, stop_timeout=0.2)
            await relay.start()
            await asyncio.wait_for(stuck.reached.wait(), 10)
            await relay.stop()  # cancels the stuck publish: the round rolls back
            assert await outbox.pending() == len(sent)
            got = await receive(sub, set(sent[:5]), within=5)
            stuck.stuck = None
            async with outbox.relay(stuck, poll_interval=0.02):
                got += await receive(sub, set(sent), within=10)
        assert got[:5] == sent[:5]
        check_delivery(got, sent, duplicates_allowed=True)  # at least once
        assert await outbox.pending() == 0
    finally:
        await inner.close()
        await outbox.close()


async def test_sqlite_keys_of_a_relay_that_died_come_free_when_its_lease_ends(
    sqlite_url: str, channel: str
) -> None:
    outbox = await Outbox.open(sqlite_url, channel=channel)
    notifier = await tidings.notify.connect(f"memory://{uuid.uuid4().hex}")
    try:
        await app_save(outbox, sqlite_url, [("k", b"1"), ("k", b"2"), ("j", b"3")])
        dead = await outbox._source()  # a relay that claims, then is never heard of again
        claim = await dead.claim(2, 0.5)
        assert claim is not None and [r.payload for r in claim.rows] == [b"1", b"2"]
        async with notifier.subscribe(channel) as sub:
            async with outbox.relay(notifier, poll_interval=0.02):
                first = await sub.get(5)
                assert first is not None and first.payload == b"3"  # "k" is held
                assert await sub.get(0.2) is None
                got = await receive(sub, {b"1", b"2"}, within=5)
            assert got == [b"1", b"2"]
        await dead.close()
    finally:
        await notifier.close()
        await outbox.close()
