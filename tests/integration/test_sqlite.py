"""SQLite specifics: file handling, durability modes, migrations, bad URLs."""

from __future__ import annotations

import re
import sqlite3
import threading
import time
import uuid
from pathlib import Path

import pytest

import tidings
from tidings.sql import declared_schema, migrations, split_statements


def _catalog(conn: sqlite3.Connection) -> list[tuple[object, ...]]:
    tables = [
        r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY 1")
    ]
    shape: list[tuple[object, ...]] = []
    for table in tables:
        shape.append(("table", table, tuple(conn.execute(f"PRAGMA table_xinfo({table})"))))
        for index in conn.execute(f"PRAGMA index_list({table})").fetchall():
            shape.append(
                ("index", table, index[1:], tuple(conn.execute(f"PRAGMA index_xinfo({index[1]})")))
            )
        shape.append(("fk", table, tuple(conn.execute(f"PRAGMA foreign_key_list({table})"))))
    return shape


async def test_migrated_schema_matches_the_declared_schema(tmp_path: Path) -> None:
    async with await tidings.connect(f"sqlite:///{tmp_path / 'migrated.db'}"):
        pass
    declared = sqlite3.connect(tmp_path / "declared.db")
    for statement in split_statements(declared_schema("sqlite")):
        declared.execute(statement)
    migrated = sqlite3.connect(tmp_path / "migrated.db")
    assert _catalog(migrated) == _catalog(declared)


async def test_reopening_does_not_migrate_again(sqlite_url: str) -> None:
    for _ in range(3):
        async with await tidings.connect(sqlite_url) as store:
            await store.append("s-1", [tidings.NewEvent("A", {})])
    path = sqlite_url.removeprefix("sqlite:///")
    conn = sqlite3.connect(path)
    try:
        applied = conn.execute("SELECT count(*) FROM tidings_migrations").fetchone()[0]
    finally:
        conn.close()
    assert applied == len(migrations("sqlite"))  # each once, not once per open


@pytest.mark.parametrize(
    ("option", "pragma"), [("", 2), ("?synchronous=normal", 1), ("?synchronous=FULL", 2)]
)
async def test_durability_is_full_by_default_and_normal_on_request(
    sqlite_url: str, option: str, pragma: int
) -> None:
    store = await tidings.connect(sqlite_url + option)
    async with store:
        assert store.synchronous == {1: "NORMAL", 2: "FULL"}[pragma]  # type: ignore[attr-defined]
        conn = store._writer_conn  # type: ignore[attr-defined]
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == pragma
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://",
        "sqlite://host/x.db",
        "sqlite:///x.db?synchronous=sometimes",
        "sqlite:///x.db?nope=1",
    ],
)
async def test_bad_sqlite_urls_are_configuration_errors(url: str) -> None:
    with pytest.raises(tidings.ConfigurationError):
        await tidings.connect(url)


async def test_a_missing_directory_is_store_unavailable(tmp_path: Path) -> None:
    with pytest.raises(tidings.StoreUnavailable):
        await tidings.connect(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}")


async def test_a_file_that_is_not_a_database_is_store_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(tidings.StoreUnavailable):
        await tidings.connect(f"sqlite:///{path}")


async def test_two_stores_on_one_file_share_the_log(sqlite_url: str) -> None:
    async with await tidings.connect(sqlite_url) as one, await tidings.connect(sqlite_url) as two:
        await one.append("s-1", [tidings.NewEvent("A", {})], expected_version=tidings.NO_STREAM)
        with pytest.raises(tidings.WrongExpectedVersion):
            await two.append("s-1", [tidings.NewEvent("B", {})], expected_version=tidings.NO_STREAM)
        await two.append("s-1", [tidings.NewEvent("B", {})], expected_version=0)
        assert [e.position async for e in one.read_all()] == [1, 2]


async def test_opening_a_file_another_process_holds_waits_for_it(tmp_path: Path) -> None:
    path = tmp_path / "held.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE t (x)")
    # Still a rollback journal, and another process mid-write: the WAL switch needs the
    # file alone, and SQLite refuses it at once rather than risk a deadlock waiting.
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO t VALUES (1)")
    release = threading.Timer(0.3, lambda: holder.execute("COMMIT"))
    release.start()
    try:
        started = time.monotonic()
        async with await tidings.connect(f"sqlite:///{path}") as store:
            await store.append("s-1", [tidings.NewEvent("A", {})])
            assert await store.head() == 1
        assert time.monotonic() - started >= 0.25
    finally:
        release.join()
        holder.close()


_BOUND = re.compile(r"[xX]?'(?:[^']|'')*'|\b\d+\b|\bNULL\b")


async def test_the_writer_prepares_few_statement_texts_whatever_the_batch_sizes(
    sqlite_url: str,
) -> None:
    # A connection keeps each statement it prepared (a 100-row insert holds ~50 KiB), so a
    # text per batch size would grow the process for as long as new sizes turn up.
    async with await tidings.connect(sqlite_url, notify=None) as store:
        texts: set[str] = set()

        def prepared(sql: str) -> None:  # the trace has the values bound: take them out
            texts.add(_BOUND.sub("?", sql))

        store._writer_conn.set_trace_callback(prepared)  # type: ignore[attr-defined]
        for n in range(1, 151):
            async with store.transaction() as tx:
                for s in range(n):  # n streams, n events in all
                    tx.append(f"shape-{n}-{s}", [tidings.NewEvent("T", {"n": n})])
        given = [tidings.NewEvent("T", {}, id=uuid.uuid4()) for _ in range(37)]
        await store.append("given-1", given)
        assert await store.head() == sum(range(1, 151)) + 37
        events = [t for t in texts if t.startswith("INSERT INTO tidings_events")]
        upserts = [t for t in texts if t.startswith("INSERT INTO tidings_streams")]
        lookups = [t for t in texts if "IN (" in t]
        assert 1 <= len(events) <= 8 and 1 <= len(upserts) <= 8, (len(events), len(upserts))
        assert 1 <= len(lookups) <= 20, len(lookups)
        got = [e async for e in store.read_stream("given-1")]
        assert [e.id for e in got] == [e.id for e in given]
