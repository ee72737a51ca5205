"""PostgreSQL specifics: gap-free global order under concurrency, migrations, errors."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

import tidings
from tests.conftest import POSTGRES_URL, pg_execute, with_option
from tidings.sql import declared_schema, load_queries, migrations

pytestmark = pytest.mark.postgres


@pytest.fixture
async def admin() -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        yield conn
    finally:
        await conn.close()


async def _held_open_append(
    url: str, schema: str, stream: str, count: int, hold: float, commit: bool
) -> list[uuid.UUID]:
    """Append through the batch function in a transaction held open before commit,
    as a slow node would; returns the ids it committed (none when rolled back)."""
    ids = [uuid.uuid4() for _ in range(count)]
    queries = load_queries("postgres", schema)
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        tx = conn.transaction()
        await tx.start()
        current = await conn.fetchval(
            f'SELECT version FROM "{schema}".streams WHERE name = $1', stream
        )
        first = 0 if current is None else current + 1
        head = await conn.fetchval(
            queries["write_batch"],
            [stream],
            [current],
            [first + count - 1],
            ids,
            [stream] * count,
            list(range(first, first + count)),
            ["Held"] * count,
            json.dumps([{"held": True}] * count),
            json.dumps([{}] * count),
            [],
            [],
            [],
            [],
            [],
        )
        assert head >= 0
        await asyncio.sleep(hold)
        if commit:
            await tx.commit()
            return ids
        await tx.rollback()
        return []
    finally:
        await conn.close()


async def test_a_follower_of_the_log_sees_every_event_exactly_once_under_concurrent_writers(
    pg_url: str,
) -> None:
    schema = pg_url.rsplit("schema=", 1)[1]
    nodes = [await tidings.connect(pg_url) for _ in range(3)]  # three "nodes", three pools
    committed: list[uuid.UUID] = []
    done = asyncio.Event()

    async def node_writer(store: tidings.EventStore, n: int) -> None:
        for i in range(40):
            events = [
                tidings.NewEvent("Fast", {"n": n, "i": i}, id=uuid.uuid4())
                for _ in range(1 + i % 3)
            ]
            await store.append(f"fast-{n}", events)
            committed.extend(e.id for e in events if e.id is not None)

    async def slow_writer(n: int) -> None:
        for i in range(6):
            ids = await _held_open_append(
                pg_url,
                schema,
                f"slow-{n}",
                1 + i % 4,
                random.uniform(0.02, 0.15),
                commit=i % 3 != 2,
            )
            committed.extend(ids)

    seen: list[tidings.RecordedEvent] = []

    async def follower() -> None:
        store = nodes[0]
        while True:
            finished = done.is_set()
            last = seen[-1].position if seen else 0
            seen.extend([e async for e in store.read_all(from_position=last)])
            if finished:
                return
            await asyncio.sleep(0.001)

    reader = asyncio.create_task(follower())
    writers = [node_writer(nodes[n % 3], n) for n in range(12)] + [slow_writer(n) for n in range(4)]
    await asyncio.gather(*writers)
    done.set()
    await reader
    try:
        positions = [e.position for e in seen]
        assert positions == list(range(1, len(seen) + 1)), (
            "the follower skipped or repeated a position"
        )
        assert sorted(e.id for e in seen) == sorted(committed), "committed and seen events differ"
        assert len({e.id for e in seen}) == len(seen)
        assert all(a.time <= b.time for a, b in itertools.pairwise(seen))
        assert positions[-1] == await nodes[1].head()
    finally:
        for store in nodes:
            await store.close()


async def test_the_batch_check_looks_streams_up_by_key_even_planned_on_an_empty_store(
    pg_url: str,
) -> None:
    """PL/pgSQL keeps a statement's plan for the connection's life, and every store
    starts empty: the version check must not be planned as a scan of the streams table,
    which a pool connection would then repeat on every commit as the table grows."""
    schema = pg_url.rsplit("schema=", 1)[1]
    async with await tidings.connect(pg_url):
        pass
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        try:
            await conn.execute("LOAD 'auto_explain'")
        except asyncpg.PostgresError as exc:
            pytest.skip(f"auto_explain is not available: {exc}")
        for name, value in [
            ("auto_explain.log_min_duration", "0"),
            ("auto_explain.log_nested_statements", "on"),
            ("client_min_messages", "log"),
        ]:
            await conn.execute(f"SET {name} = '{value}'")
        plans: list[str] = []
        conn.add_log_listener(lambda _conn, message: plans.append(message.message))
        count = 64
        streams = [f"s-{i}" for i in range(count)]
        arguments = (
            streams,
            [None] * count,
            [0] * count,
            list(range(1, count + 1)),
            [uuid.uuid4() for _ in streams],
            streams,
            [0] * count,
            ["Checked"] * count,
            ["{}"] * count,
            ["{}"] * count,
            [0] * count,
            [],
            [],
            [],
            [],
        )
        # After five calls the plan cache may keep a generic plan: look at the seventh.
        for _ in range(7):
            plans.clear()
            tx = conn.transaction()
            await tx.start()
            await conn.fetchval(load_queries("postgres", schema)["apply_batch"], *arguments)
            await tx.rollback()
    finally:
        await conn.close()
    [check] = [p for p in plans if "IS DISTINCT FROM" in p and "unnest(c_stream" in p]
    assert "Index Scan using streams_pkey" in check, check
    assert "Seq Scan on streams" not in check, check


async def test_migrated_schema_matches_the_declared_schema(
    pg_url: str, admin: asyncpg.Connection
) -> None:
    migrated = pg_url.rsplit("schema=", 1)[1]
    declared = "d_" + uuid.uuid4().hex[:16]
    async with await tidings.connect(pg_url):
        pass
    await admin.execute(f'CREATE SCHEMA "{declared}"')
    try:
        await admin.execute(declared_schema("postgres", declared))
        assert await _catalog(admin, migrated) == await _catalog(admin, declared)
    finally:
        await admin.execute(f'DROP SCHEMA "{declared}" CASCADE')


async def _catalog(conn: asyncpg.Connection, schema: str) -> dict[str, Any]:
    def norm(text: str | None) -> str | None:
        return None if text is None else text.replace(f'"{schema}".', "").replace(f"{schema}.", "")

    columns = await conn.fetch(
        "SELECT table_name, column_name, data_type, is_nullable, column_default"
        " FROM information_schema.columns WHERE table_schema = $1 ORDER BY 1, 2",
        schema,
    )
    indexes = await conn.fetch(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = $1 ORDER BY 1", schema
    )
    constraints = await conn.fetch(
        "SELECT c.conrelid::regclass::text AS tbl, c.conname, pg_get_constraintdef(c.oid) AS def"
        " FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace"
        " WHERE n.nspname = $1 ORDER BY 2",
        schema,
    )
    functions = await conn.fetch(
        "SELECT p.proname, pg_get_function_arguments(p.oid) AS args, p.prosrc"
        " FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = $1"
        " ORDER BY 1",
        schema,
    )
    return {
        "columns": [tuple(norm(v) if isinstance(v, str) else v for v in r) for r in columns],
        "indexes": [(r[0], norm(r[1])) for r in indexes],
        "constraints": [(norm(r[0]), r[1], norm(r[2])) for r in constraints],
        "functions": [(r[0], r[1], norm(r[2])) for r in functions],
    }


async def test_concurrent_first_connects_migrate_once(
    pg_url: str, admin: asyncpg.Connection
) -> None:
    stores = await asyncio.gather(*(tidings.connect(pg_url) for _ in range(4)))
    for store in stores:
        await store.close()
    schema = pg_url.rsplit("schema=", 1)[1]
    applied = await admin.fetchval(f'SELECT count(*) FROM "{schema}".migrations')
    assert applied == len(migrations("postgres"))  # each once, not once per store


async def test_an_unreachable_database_raises_store_unavailable_without_the_password() -> None:
    url = "postgresql://postgres:s3cret@127.0.0.1:1/postgres"
    with pytest.raises(tidings.StoreUnavailable) as info:
        await tidings.connect(url)
    assert "s3cret" not in str(info.value)
    assert "***" in info.value.url


async def test_a_missing_database_raises_store_unavailable() -> None:
    with pytest.raises(tidings.StoreUnavailable):
        await tidings.connect(
            "postgresql://postgres@127.0.0.1:5432/no_such_db_" + uuid.uuid4().hex[:8]
        )


async def test_without_a_statement_cache_it_works_as_behind_a_transaction_pooler(
    pg_url: str,
) -> None:
    async with await tidings.connect(with_option(pg_url, "statement_cache_size", 0)) as store:
        await store.append("s-1", [tidings.NewEvent("A", {})])
        assert [e.type async for e in store.read_all()] == ["A"]


async def test_events_written_by_other_nodes_are_visible_to_every_node(pg_url: str) -> None:
    async with await tidings.connect(pg_url) as one, await tidings.connect(pg_url) as two:
        await one.append("s-1", [tidings.NewEvent("A", {})], expected_version=tidings.NO_STREAM)
        with pytest.raises(tidings.WrongExpectedVersion):
            await two.append("s-1", [tidings.NewEvent("B", {})], expected_version=tidings.NO_STREAM)
        await two.append("s-1", [tidings.NewEvent("B", {})], expected_version=0)
        assert [e.type async for e in one.read_stream("s-1")] == ["A", "B"]


async def test_losing_the_connection_mid_use_raises_store_unavailable_then_recovers(
    pg_url: str,
) -> None:
    name = "victim_" + uuid.uuid4().hex[:8]
    async with await tidings.connect(with_option(pg_url, "application_name", name)) as store:
        await store.append("s-1", [tidings.NewEvent("A", {})])
        await pg_execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            f" WHERE application_name = '{name}'"
        )
        outcomes = []
        for _ in range(3):
            try:
                outcomes.append(await store.append("s-1", [tidings.NewEvent("B", {})]))
            except tidings.StoreUnavailable:
                outcomes.append(None)
        assert outcomes[-1] is not None, "the pool did not recover after its connections were cut"
        assert await store.stream_version("s-1") == sum(1 for o in outcomes if o)


async def test_numeric_options_from_the_url_are_integers(pg_url: str) -> None:
    url = with_option(with_option(with_option(pg_url, "writers", 3), "max_size", 4), "page_size", 7)
    async with await tidings.connect(url) as store:
        await asyncio.gather(
            *(store.append(f"s-{i}", [tidings.NewEvent("A", {})]) for i in range(20))
        )
        assert [e.position async for e in store.read_all()] == list(range(1, 21))


async def test_command_timeout_bounds_a_statement_and_is_checked(pg_url: str) -> None:
    async with await tidings.connect(with_option(pg_url, "command_timeout", "0.2")) as store:
        calls: Any = store.calls  # type: ignore[attr-defined]
        with pytest.raises(TimeoutError):
            await calls.execute("SELECT pg_sleep(2)")
        await store.append("after-1", [tidings.NewEvent("A", {})])  # the pool goes on
        assert await store.head() == 1
    for bad in ["soon", "-1"]:
        with pytest.raises(tidings.ConfigurationError, match="command_timeout"):
            await tidings.connect(with_option(pg_url, "command_timeout", bad))
    async with await tidings.connect(with_option(pg_url, "command_timeout", "none")) as store:
        await store.calls.execute("SELECT pg_sleep(0.3)")  # type: ignore[attr-defined]


async def test_a_node_whose_known_versions_are_stale_neither_misjudges_nor_miswrites(
    pg_url: str,
) -> None:
    async with await tidings.connect(pg_url) as one, await tidings.connect(pg_url) as two:
        nodes = [one, two]
        for version in range(12):  # alternate nodes: each node's last write is always stale
            node = nodes[version % 2]
            expected = tidings.NO_STREAM if version == 0 else version - 1
            result = await node.append("s-1", [tidings.NewEvent("A", {"v": version})], expected)
            assert result.last_version == version
        with pytest.raises(tidings.WrongExpectedVersion) as info:
            await one.append("s-1", [tidings.NewEvent("A", {})], expected_version=10)
        assert info.value.actual == 11
        with pytest.raises(tidings.WrongExpectedVersion) as info:
            await one.append("s-1", [tidings.NewEvent("A", {})], expected_version=tidings.NO_STREAM)
        assert info.value.actual == 11
        assert [e.data["v"] async for e in one.read_stream("s-1")] == list(range(12))


async def test_a_handler_s_session_changes_do_not_reach_the_next_user_of_its_connection(
    pg_url: str,
) -> None:
    """The pool skips asyncpg's reset on release (tidings' statements leave no session
    state); a connection lent to a transactional handler is reset before it returns."""
    store = await tidings.connect(pg_url + "&max_size=2&min_size=2")
    pids: set[int] = set()

    async def handler(events: list[tidings.RecordedEvent], conn: Any) -> None:
        pids.add(await conn.fetchval("SELECT pg_backend_pid()"))
        await conn.execute("SET application_name = 'leaky-handler'")  # session-wide
        await conn.execute("SELECT pg_advisory_lock(4242)")  # held past the transaction

    async with store:
        await store.append("leak-1", [tidings.NewEvent("E", {})])
        async with store.subscribe("leaky", handler):
            await store.wait_for(1)
            async with asyncio.timeout(10):
                while not [i for i in await store.subscriptions() if i.checkpoint == 1]:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
        pool: Any = store._pool  # type: ignore[attr-defined]
        conns = [await pool.acquire() for _ in range(2)]
        try:
            seen = {await c.fetchval("SELECT pg_backend_pid()") for c in conns}
            assert pids & seen, "the handler's connection is back in the pool"
            for conn in conns:
                assert await conn.fetchval("SHOW application_name") != "leaky-handler"
            held = await conns[0].fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242"
            )
            assert held == 0
        finally:
            for conn in conns:
                await pool.release(conn)


async def test_migration_5_keeps_events_written_as_jsonb(
    pg_url: str, admin: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store created before migration 5 (data as jsonb) is migrated to json in place:
    every event reads back the same, and appends go on."""
    import tidings.store.postgres as pg_module

    schema = pg_url.rsplit("schema=", 1)[1]
    first_four = [m for m in migrations("postgres", schema) if m.version <= 4]
    monkeypatch.setattr(pg_module, "migrations", lambda dialect, s: first_four)
    data = [{"b": 1, "a": [1.5, None, "é"], "nested": {"z": True}}, [1, 2], "text", 7, None]
    async with await tidings.connect(pg_url):
        pass
    # Written as the tidings of migration 4 wrote: through its apply_batch.
    count = len(data)
    head = await admin.fetchval(
        load_queries("postgres", schema)["apply_batch"],
        ["old-1"],
        [None],
        [count - 1],
        list(range(1, count + 1)),
        [uuid.uuid4() for _ in data],
        ["old-1"] * count,
        list(range(count)),
        ["E"] * count,
        [json.dumps(d) for d in data],
        ['{"k": "v"}'] * count,
        [1] * count,
        [],
        [],
        [],
        [],
    )
    assert head == 0
    kinds = "SELECT data_type FROM information_schema.columns WHERE table_schema = $1"
    kinds += " AND table_name = 'events' AND column_name = 'data'"
    assert await admin.fetchval(kinds, schema) == "jsonb"
    monkeypatch.undo()
    async with await tidings.connect(pg_url) as store:
        events = [e async for e in store.read_all()]
        assert [e.data for e in events] == data
        assert {e.metadata["k"] for e in events} == {"v"}
        await store.append("old-1", [tidings.NewEvent("E", {"after": 1})], expected_version=4)
        assert [e.data async for e in store.read_stream("old-1", from_version=5)] == [{"after": 1}]
    assert await admin.fetchval(kinds, schema) == "json"
