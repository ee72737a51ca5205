"""Backup and restore: a consistent copy of a store in one portable file, and back (ADR 25).

    info = await store.backup("events.backup")          # while the store keeps serving
    await tidings.restore("events.backup", "postgresql://localhost/db")

A backup is "the log up to position P": one snapshot of the source (``sources``), every
row the restore needs, in a SQLite store file with a ``tidings_backup`` header
(``file``), built aside and renamed once complete. A restore checks the file, writes
every row as it was (positions, versions, times, ids) into an empty SQLite or PostgreSQL
store in one transaction (``targets``), moves its head to P and gives it a new identity,
so that a reader resuming from a position of the old store is told (``StoreChanged``).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec

from tidings.backup.file import FORMAT, BackupReader, BackupWriter, Header
from tidings.backup.sources import in_thread, snapshot_of
from tidings.backup.tables import TABLES
from tidings.backup.targets import target_of
from tidings.errors import BackupError
from tidings.store import connect as connect_store
from tidings.store import redact
from tidings.store.features import provide

__all__ = ["FORMAT", "BackupInfo", "Progress", "RestoreInfo", "backup", "restore"]

PAGE_ROWS = 5_000
"""Rows copied per step; progress is reported after each."""


class Progress(msgspec.Struct, frozen=True):
    """How far a backup or restore has got (given to its ``progress`` callback)."""

    action: str
    """``backup`` or ``restore``."""
    table: str
    """The table being copied."""
    events: int
    total_events: int
    bytes: int
    """The bytes of the rows copied so far (their MessagePack encoding)."""
    total_bytes: int | None
    """The rows' bytes in all (a restore); None for a backup, which cannot know ahead."""


ProgressCallback = Callable[[Progress], None]


class BackupInfo(msgspec.Struct, frozen=True):
    """A finished backup: the file holds the log up to ``position``."""

    path: str
    position: int
    events: int
    bytes: int
    """The file's size."""
    identity: str
    """The source store's identity."""
    backend: str
    seconds: float


class RestoreInfo(msgspec.Struct, frozen=True):
    """A finished restore: the store holds the backup's log up to ``position``."""

    url: str
    position: int
    events: int
    bytes: int
    """The bytes of the rows restored."""
    identity: str
    """The restored store's new identity."""
    source_identity: str
    """The identity of the store the backup was taken from."""
    source_backend: str
    seconds: float


async def backup(
    store: object, target: str | os.PathLike[str], progress: ProgressCallback | None = None
) -> BackupInfo:
    """Write a consistent copy of ``store`` to the file ``target`` while it keeps serving.

    The file holds the log up to the head at the moment the backup's snapshot began
    (``BackupInfo.position``) and every table a restore needs. It is built as
    ``target.partial`` and renamed when complete: a failed or killed backup leaves no
    ``target``. An existing ``target`` is refused (``BackupError``).
    """
    started = time.monotonic()
    check_open = getattr(store, "_check_open", None)
    if check_open is not None:
        check_open()
    path = Path(os.fspath(target))
    async with snapshot_of(store) as snap:
        writer = BackupWriter(path)
        header = Header(
            FORMAT,
            snap.identity,
            snap.backend,
            snap.position,
            snap.time_ms,
            time.time_ns() // 10**6,
        )
        try:
            await in_thread(lambda: writer.create(header))
            events = writer.digests["events"]
            for table in TABLES:
                async for rows in snap.pages(table, PAGE_ROWS):
                    await in_thread(lambda: writer.write(table, rows))  # noqa: B023
                    if progress is not None:
                        progress(
                            Progress(
                                "backup", table.name, events.rows, snap.position, writer.bytes, None
                            )
                        )
            if events.rows != snap.position:
                raise BackupError(
                    "corrupt",
                    redact(str(getattr(store, "url", ""))),
                    f"the log holds {events.rows} events up to its head {snap.position}",
                )
            size = await in_thread(writer.finish)
        except BaseException:
            writer.abort()
            raise
    return BackupInfo(
        str(path), snap.position, events.rows, size, snap.identity, snap.backend, _since(started)
    )


async def restore(
    file: str | os.PathLike[str],
    url: str,
    *,
    force: bool = False,
    progress: ProgressCallback | None = None,
    **options: Any,
) -> RestoreInfo:
    """Restore the backup ``file`` into the store at ``url`` (SQLite or PostgreSQL).

    The file is checked first (complete, not newer, undamaged, its counts); the store is
    opened (its schema migrated) and must be empty unless ``force``, which replaces what
    it holds. Every row is written as it was, in one transaction, with each table's
    checksum checked before the commit; the head moves to the backup's position and the
    store gets a new identity. Anything refused raises ``BackupError`` with nothing
    written. ``options`` are the store's (``tidings.store.connect``).
    """
    started = time.monotonic()
    path = Path(os.fspath(file))
    scheme = urlsplit(url).scheme if isinstance(url, str) else ""
    if scheme not in ("sqlite", "postgresql", "postgres"):
        raise BackupError(
            "unsupported",
            redact(str(url)),
            "a restore writes into a SQLite or PostgreSQL store only (sqlite:///file.db,"
            " postgresql://...)",
        )
    reader = await in_thread(lambda: BackupReader(path))
    new_file = _new_sqlite_file(url)
    try:
        store = await connect_store(url, **options)
        try:
            async with target_of(store, force) as target:
                done = 0
                for table in TABLES:
                    pages = reader.pages(table, PAGE_ROWS)
                    while (rows := await in_thread(lambda: next(pages, None))) is not None:  # noqa: B023
                        await target.write(table, rows)
                        done = sum(d.bytes for d in reader.digests.values())
                        if progress is not None:
                            events = reader.digests["events"].rows
                            progress(
                                Progress(
                                    "restore", table.name, events, reader.events, done, reader.bytes
                                )
                            )
                    reader.check_digests(table)
                identity = await target.finish(reader.header, reader.recorded)
        finally:
            await store.close()
    except BaseException:
        if new_file is not None:  # a store this restore made: leave nothing behind
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(OSError):
                    os.unlink(new_file + suffix)
        raise
    finally:
        reader.close()
    header = reader.header
    return RestoreInfo(
        redact(url),
        header.position,
        reader.events,
        reader.bytes,
        identity,
        header.identity,
        header.backend,
        _since(started),
    )


def _new_sqlite_file(url: str) -> str | None:
    """The file a ``sqlite://`` URL names, if it does not exist yet."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite":
        return None
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    return path if path and not os.path.exists(path) else None


def _since(started: float) -> float:
    return round(time.monotonic() - started, 3)


provide("backup", backup)
