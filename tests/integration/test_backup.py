"""Backup and restore on real SQLite files and PostgreSQL schemas: round trips between the
backends, a backup taken while writers append, and backup files that must be refused."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

import tidings
from tests.conftest import POSTGRES_URL, pg_execute, require_postgres, with_option
from tests.integration.backup_tools import contents, fill, pg_schema, raw_sql
from tidings import BackupError, NewEvent

PG = pytest.mark.postgres
MakeUrl = Callable[[str], str]
# Columns PostgreSQL keeps as jsonb (its own spelling of the text): compared as values.
JSONB_COLUMNS = {"audit": 2, "snapshots": 4, "views": 2, "pull": 1}


@pytest.fixture
def make_url(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[MakeUrl]:
    """Fresh store URLs: ``make_url("sqlite")`` a new file, ``make_url("postgres")`` a new
    schema (dropped afterwards)."""
    schemas: list[str] = []
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and "postgres" in callspec.params.values():
        require_postgres()

    def make(kind: str) -> str:
        if kind == "sqlite":
            return f"sqlite:///{tmp_path / uuid.uuid4().hex[:8]}.db"
        schemas.append("t_" + uuid.uuid4().hex[:16])
        return with_option(POSTGRES_URL, "schema", schemas[-1])

    yield make
    for schema in schemas:
        asyncio.run(pg_execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


def comparable(found: dict[str, Any]) -> dict[str, Any]:
    """``contents`` with jsonb columns decoded (PostgreSQL rewrites their text)."""
    out = dict(found)
    for table, column in JSONB_COLUMNS.items():
        rows = []
        for row in found["table " + table]:
            value = row[column]
            decoded = None if value is None else msgspec.json.decode(value)
            rows.append((*row[:column], decoded, *row[column + 1 :]))
        out["table " + table] = sorted(rows, key=repr)
    return out


ROUND_TRIPS = [
    pytest.param("sqlite", "postgres", marks=PG, id="sqlite-to-postgres"),
    pytest.param("postgres", "sqlite", marks=PG, id="postgres-to-sqlite"),
    pytest.param("sqlite", "sqlite", id="sqlite-to-sqlite"),
    pytest.param("postgres", "postgres", marks=PG, id="postgres-to-postgres"),
]


@pytest.mark.parametrize(("source", "target"), ROUND_TRIPS)
async def test_a_backup_restores_into_either_backend_as_it_was(
    make_url: MakeUrl, tmp_path: Path, source: str, target: str
) -> None:
    src = make_url(source)
    await fill(src)
    before = await contents(src)
    file = tmp_path / "store.backup"
    async with await tidings.connect(src) as store:
        info = await store.backup(file)
        source_identity = store.identity
    head = before["head"]
    assert (info.position, info.events, info.identity) == (head, head, source_identity)
    assert exists(file) and not exists(Path(f"{file}.partial"))

    dst = make_url(target)
    restored = await tidings.restore(file, dst)
    assert (restored.position, restored.events) == (head, head)
    assert restored.source_identity == source_identity
    after = await contents(dst)
    assert after["events"] == before["events"]  # ids, streams, data bytes, versions, times
    assert after["audit"] == before["audit"]
    assert after["parked"] == before["parked"] and len(after["parked"]) == 1
    assert comparable(after) == comparable(before)

    # Who held a group's partitions or a stream's lease is not restored.
    if target == "sqlite":
        leases = [
            "SELECT (SELECT count(*) FROM tidings_members) + (SELECT count(*) FROM"
            " tidings_pull_handed) + (SELECT count(*) FROM tidings_partitions WHERE owner IS"
            " NOT NULL) + (SELECT count(*) FROM tidings_eventstreams WHERE owner IS NOT NULL)"
        ]
    else:
        s = pg_schema(dst)
        leases = [
            f"SELECT (SELECT count(*) FROM {s}.members) + (SELECT count(*) FROM {s}.pull_handed)"
            f" + (SELECT count(*) FROM {s}.partitions WHERE owner IS NOT NULL)"
            f" + (SELECT count(*) FROM {s}.eventstreams WHERE owner IS NOT NULL)"
        ]
    assert (await raw_sql(dst, leases))[0][0] == 0

    async with await tidings.connect(dst) as store:
        assert store.identity == restored.identity
        assert store.identity not in (source_identity, info.identity)
        appended = await store.append("order-1", [NewEvent("After", {"n": 0})])
        assert appended.position == head + 1
        async with store.transaction(tidings.Audit("bob", {})) as tx:
            tx.append("order-2", [NewEvent("After", {"n": 1})])
        audit = await store.audit(head + 2)
        assert audit is not None and audit.id > max(a.id for a in before["audit"] if a)
        seen: list[int] = []

        async def handler(batch: list[tidings.RecordedEvent]) -> None:
            seen.extend(e.position for e in batch)

        async with store.subscribe("audit-log", handler) as sub:
            async with asyncio.timeout(10):
                while (sub.position or 0) < head + 2:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
        assert seen == [head + 1, head + 2]  # on from its checkpoint, nothing again


@pytest.mark.parametrize(("source", "target"), [ROUND_TRIPS[2], ROUND_TRIPS[1]])
async def test_a_backup_taken_while_eight_writers_append_holds_the_log_up_to_its_position(
    make_url: MakeUrl, tmp_path: Path, source: str, target: str
) -> None:
    url = make_url(source)
    file = tmp_path / "live.backup"
    async with await tidings.connect(url) as store:
        for n in range(60):
            await store.append(
                f"seed-{n}", [NewEvent("Seed", {"n": n, "i": i}) for i in range(100)]
            )
        stop = asyncio.Event()

        async def writer(i: int) -> None:
            n = 0
            while not stop.is_set():
                await store.append(f"writer-{i}", [NewEvent("W", {"i": i, "n": n})])
                n += 1

        async def handler(batch: list[tidings.RecordedEvent]) -> None:
            await asyncio.sleep(0)

        heads: list[int] = []
        async with store.subscribe("follower", handler, batch_size=50):
            writers = [asyncio.create_task(writer(i)) for i in range(8)]
            start = await store.head()
            async with asyncio.timeout(20):
                while await store.head() < start + 200:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
            info = await store.backup(file, progress=lambda p: heads.append(store.known_head))
            async with asyncio.timeout(20):
                while await store.head() < info.position + 200:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
            stop.set()
            await asyncio.gather(*writers)
        live = [
            (e.id, e.stream, e.version, e.position, e.time, bytes(e.data), bytes(e.metadata))
            async for page in store.read_all_pages(limit=info.position, raw=True)
            for e in page
        ]
    assert info.position > start and max(heads) > info.position  # writers went on meanwhile
    shutil.copy(file, tmp_path / "look.db")  # opened as a store, the file is looked at as-is
    async with await tidings.connect(f"sqlite:///{tmp_path / 'look.db'}") as copy:
        copied = [
            (e.id, e.stream, e.version, e.position, e.time, bytes(e.data), bytes(e.metadata))
            async for page in copy.read_all_pages(raw=True)
            for e in page
        ]
        assert await copy.head() == info.position
    assert copied == live and len(copied) == info.position

    restored = await tidings.restore(file, make_url(target))  # its checks pass: checkpoints <= P
    assert restored.position == info.position


# -- files that must be refused -------------------------------------------------------


@pytest.fixture
def good_backup(tmp_path: Path) -> Path:
    """A backup of a SQLite store of 300 events, one of them holding a needle."""

    async def make() -> Path:
        url = f"sqlite:///{tmp_path / 'source.db'}"
        async with await tidings.connect(url) as store:
            for n in range(30):
                events = [NewEvent("E", {"n": n, "i": i, "pad": "x" * 200}) for i in range(10)]
                if n == 15:
                    events[5] = NewEvent("E", {"needle": "needle-in-the-middle"})
                await store.append(f"order-{n}", events)
            await store.backup(tmp_path / "good.backup")
        return tmp_path / "good.backup"

    return asyncio.run(make())


TARGETS = ["sqlite", pytest.param("postgres", marks=PG)]


async def refused(file: Path, url: str, problem: str, **options: Any) -> BackupError:
    with pytest.raises(BackupError) as caught:
        await tidings.restore(file, url, **options)
    assert caught.value.problem == problem, caught.value
    return caught.value


async def nothing_written(url: str) -> None:
    if url.startswith("sqlite"):
        assert not exists(Path(url.removeprefix("sqlite:///")))  # not even created
        return
    async with await tidings.connect(url) as store:
        assert await store.head() == 0
        assert [e async for e in store.read_all()] == []


def exists(path: Path) -> bool:
    return path.exists()


def truncate_half(file: Path) -> None:
    size = file.stat().st_size
    with file.open("r+b") as f:
        f.truncate(size // 2)


def change_a_byte_of(file: Path, text: bytes) -> float:
    """Change the first byte of ``text`` in the file; where it was, as a share of the file."""
    data = bytearray(file.read_bytes())
    at = data.index(text)
    data[at] = data[at] ^ 0x20
    file.write_bytes(bytes(data))
    return at / len(data)


def changed(file: Path, statement: str) -> Path:
    conn = sqlite3.connect(file)
    conn.execute(statement)
    conn.commit()
    conn.close()
    return file


@pytest.mark.parametrize("target", TARGETS)
async def test_a_truncated_backup_is_refused_as_corrupt(
    good_backup: Path, make_url: MakeUrl, target: str
) -> None:
    truncate_half(good_backup)
    url = make_url(target)
    error = await refused(good_backup, url, "corrupt")
    assert "damaged" in str(error) or "truncated" in str(error)
    await nothing_written(url)


@pytest.mark.parametrize("target", TARGETS)
async def test_a_byte_changed_in_the_middle_is_refused_by_its_checksum(
    good_backup: Path, make_url: MakeUrl, target: str
) -> None:
    assert 0.2 < change_a_byte_of(good_backup, b"needle-in-the-middle") < 0.8
    url = make_url(target)
    error = await refused(good_backup, url, "corrupt")
    assert "checksum" in str(error)
    await nothing_written(url)


async def test_an_unfinished_backup_is_refused_as_incomplete(
    good_backup: Path, make_url: MakeUrl
) -> None:
    url = make_url("sqlite")
    changed(good_backup, "UPDATE tidings_backup SET complete = 0")
    await refused(good_backup, url, "incomplete")
    os.replace(good_backup, f"{good_backup}.partial")  # what a killed backup leaves
    await refused(good_backup, url, "incomplete")
    await nothing_written(url)


async def test_a_backup_of_a_newer_format_is_refused(good_backup: Path, make_url: MakeUrl) -> None:
    url = make_url("sqlite")
    changed(good_backup, "UPDATE tidings_backup SET format = 99")
    error = await refused(good_backup, url, "newer_format")
    assert "upgrade tidings" in str(error)
    await nothing_written(url)


async def test_a_file_that_is_no_backup_is_refused(tmp_path: Path, make_url: MakeUrl) -> None:
    url = make_url("sqlite")
    (tmp_path / "notes.txt").write_text("hello")
    await refused(tmp_path / "notes.txt", url, "corrupt")
    store_file = tmp_path / "plain.db"
    async with await tidings.connect(f"sqlite:///{store_file}"):
        pass
    await refused(store_file, url, "corrupt")  # a store, but not a backup
    await refused(tmp_path / "nothing.backup", url, "missing")
    await nothing_written(url)


@pytest.mark.parametrize("target", TARGETS)
async def test_a_store_holding_data_is_refused_unless_forced(
    good_backup: Path, make_url: MakeUrl, target: str
) -> None:
    url = make_url(target)
    async with await tidings.connect(url) as store:
        await store.append("mine-1", [NewEvent("Mine", {})])
        identity = store.identity
    error = await refused(good_backup, url, "not_empty")
    assert "--force" in str(error)
    async with await tidings.connect(url) as store:
        assert await store.head() == 1 and store.identity == identity
    restored = await tidings.restore(good_backup, url, force=True)
    async with await tidings.connect(url) as store:
        assert await store.head() == restored.position == 300
        assert await store.stream_version("mine-1") is None
        assert store.identity == restored.identity != identity


async def test_a_backup_refuses_an_existing_file_and_leaves_no_partial_behind(
    good_backup: Path, tmp_path: Path
) -> None:
    async with await tidings.connect(f"sqlite:///{tmp_path / 'source.db'}") as store:
        with pytest.raises(BackupError) as caught:
            await store.backup(good_backup)
        assert caught.value.problem == "exists"
    assert not exists(Path(f"{good_backup}.partial"))


async def test_memory_stores_are_refused_clearly(tmp_path: Path) -> None:
    async with await tidings.connect("memory://") as store:
        with pytest.raises(BackupError) as caught:
            await store.backup(tmp_path / "m.backup")
        assert caught.value.problem == "unsupported"
    with pytest.raises(BackupError) as caught:
        await tidings.restore(tmp_path / "m.backup", "memory://")
    assert caught.value.problem == "unsupported"
    assert not (tmp_path / "m.backup").exists()


async def test_a_consumer_resuming_across_a_restore_is_told_the_store_changed(
    tmp_path: Path,
) -> None:
    """A server stopped, its store restored from a backup in place, started again: a
    remote reader holding positions of the old store is told instead of resuming."""
    from tests.served import start_server

    url = f"sqlite:///{tmp_path / 'served.db'}"
    first = start_server(url)
    port = int(first.url.rsplit(":", 1)[1])
    try:
        remote = await tidings.connect(first.url)
        await remote.append("order-1", [NewEvent("Placed", {"n": 1})])
        seen = [e.position async for e in remote.read_all()]
        known = remote.identity
    finally:
        first.stop()
    async with await tidings.connect(url) as store:
        await store.backup(tmp_path / "served.backup")
    restored = await tidings.restore(tmp_path / "served.backup", url, force=True)
    assert restored.position == seen[-1] == 1
    second = start_server(url, port=port)
    try:
        with pytest.raises(tidings.StoreChanged) as info:
            async for _ in remote.read_all(from_position=seen[-1], follow=True):
                pass
        assert info.value.expected == known and info.value.current == restored.identity
        await remote.close()
    finally:
        second.stop()
