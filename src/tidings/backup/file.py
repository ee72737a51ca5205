"""The backup file: a SQLite store file plus ``tidings_backup``, built aside and renamed.

``BackupWriter`` builds ``FILE.partial`` (the SQLite schema, every migration applied, the
rows, then the ``complete`` row), fsyncs it and renames it to ``FILE``: a killed backup
leaves no ``FILE``. ``BackupReader`` opens one for a restore and refuses it, with a
``BackupError`` and before anything is written anywhere, when it is not a backup file,
is incomplete, was written by a newer format, fails SQLite's ``quick_check``, or holds
other row counts than it recorded; each table's checksum is checked as its rows are
read (``check_digests``), before the restore commits. The calls block: run them on a
worker thread.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import msgspec

from tidings.backup.tables import TABLES, Digest, Row, Table
from tidings.errors import BackupError
from tidings.sql import load_queries, migrations, split_statements

FORMAT = 1
"""The backup format this tidings writes, and the highest it restores."""

Q = load_queries("sqlite", None, "backup.sql")
_STORE_Q = load_queries("sqlite")
_SQLITE_MAGIC = b"SQLite format 3\x00"


class Header(NamedTuple):
    """The ``tidings_backup`` row: what the file holds."""

    format: int
    identity: str
    """The source store's identity."""
    backend: str
    """``sqlite``, ``postgres`` or ``memory``: the source's backend."""
    position: int
    """The log is held up to this position (the source's head in the backup's snapshot)."""
    time_ms: int
    """The head's time then."""
    created_ms: int


def partial_path(path: Path) -> Path:
    """Where the file is built before it is complete."""
    return path.with_name(path.name + ".partial")


def _fsync(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class BackupWriter:
    """Builds a backup file (blocking calls)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.partial = partial_path(path)
        self.digests = {t.name: Digest() for t in TABLES}
        self._conn: sqlite3.Connection | None = None

    def create(self, header: Header) -> None:
        """Start ``FILE.partial`` with the schema and the (incomplete) header; refuse an
        existing ``FILE``. A ``.partial`` left by a killed backup is replaced."""
        where = str(self.path)
        if self.path.exists():
            raise BackupError("exists", where, "the file exists already: back up to a new name")
        if not self.path.parent.is_dir():
            raise BackupError("unsupported", where, f"no directory {self.path.parent}")
        self.partial.unlink(missing_ok=True)
        conn = self._conn = sqlite3.connect(
            self.partial, isolation_level=None, check_same_thread=False
        )
        for statement in split_statements(Q["build_pragmas"]):
            conn.execute(statement)
        conn.execute("BEGIN")
        conn.execute(_STORE_Q["create_migrations"])
        for migration in migrations("sqlite"):
            for statement in split_statements(migration.sql):
                conn.execute(statement)
            conn.execute(
                _STORE_Q["record_migration"], (migration.version, migration.name, _now_ms())
            )
        conn.execute(Q["create_backup_table"])
        conn.execute(
            Q["start_backup"],
            (
                header.format,
                header.identity,
                header.backend,
                header.position,
                header.time_ms,
                header.created_ms,
            ),
        )
        conn.execute(Q["set_head"], (header.position, header.time_ms))

    def write(self, table: Table, rows: list[Row]) -> int:
        """Add rows (in the file's form) to ``table``; their bytes."""
        assert self._conn is not None
        self._conn.executemany(Q["insert_" + table.name], rows)
        return self.digests[table.name].add(rows)

    @property
    def bytes(self) -> int:
        """The bytes of the rows written so far."""
        return sum(d.bytes for d in self.digests.values())

    def finish(self) -> int:
        """Write the ``complete`` row last, commit, fsync and rename; the file's bytes."""
        conn = self._conn
        assert conn is not None
        tables = {name: d.as_json() for name, d in self.digests.items()}
        conn.execute(Q["complete_backup"], (msgspec.json.encode(tables).decode(),))
        conn.execute("COMMIT")
        conn.close()
        self._conn = None
        _fsync(self.partial)
        os.replace(self.partial, self.path)
        _fsync(self.path.parent, directory=True)
        return self.path.stat().st_size

    def abort(self) -> None:
        """Drop the partial file (a failed backup leaves nothing)."""
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None
        self.partial.unlink(missing_ok=True)


class BackupReader:
    """Reads a backup file for a restore, refusing one it cannot trust (blocking calls)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = str(path)
        self.digests = {t.name: Digest() for t in TABLES}
        self.recorded: dict[str, Digest] = {}
        self._conn: sqlite3.Connection | None = None
        self.header = self._open()

    def _corrupt(self, detail: str) -> BackupError:
        return BackupError("corrupt", self.where, detail)

    def _open(self) -> Header:
        if not self.path.is_file():
            if partial_path(self.path).exists():
                raise BackupError(
                    "incomplete", self.where, "the backup never finished (only a .partial file)"
                )
            raise BackupError("missing", self.where, "no such backup file")
        with self.path.open("rb") as f:
            if f.read(len(_SQLITE_MAGIC)) != _SQLITE_MAGIC:
                raise self._corrupt("not a tidings backup file (not a SQLite file)")
        try:
            self._conn = sqlite3.connect(
                f"file:{self.path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
            )
            return self._check(self._conn)
        except sqlite3.DatabaseError as exc:
            self.close()
            raise self._corrupt(f"the file is damaged or truncated ({exc})") from exc
        except BaseException:
            self.close()
            raise

    def _check(self, conn: sqlite3.Connection) -> Header:
        if conn.execute(Q["backup_table_exists"]).fetchone() is None:
            raise self._corrupt("not a tidings backup file (no tidings_backup table)")
        row = conn.execute(Q["backup_row"]).fetchone()
        if row is None or not row[6]:
            raise BackupError("incomplete", self.where, "the backup never finished (not complete)")
        header = Header(*row[:6])
        if not isinstance(header.format, int) or header.format > FORMAT:
            raise BackupError(
                "newer_format",
                self.where,
                f"backup format {header.format} is newer than this tidings reads ({FORMAT}):"
                " upgrade tidings",
            )
        newest = max(m.version for m in migrations("sqlite"))
        (schema,) = conn.execute(Q["file_migrations"]).fetchone()
        if schema is None or schema > newest:
            raise BackupError(
                "newer_format",
                self.where,
                f"the file's schema (version {schema}) is newer than this tidings' ({newest})",
            )
        problems = [r[0] for r in conn.execute(Q["quick_check"]).fetchall()]
        if problems != ["ok"]:
            raise self._corrupt("the file is damaged: " + "; ".join(map(str, problems[:3])))
        try:
            recorded = msgspec.json.decode(row[7])
            self.recorded = {t.name: Digest.from_json(recorded[t.name]) for t in TABLES}
        except (msgspec.DecodeError, KeyError, TypeError, ValueError) as exc:
            raise self._corrupt(f"its table digests do not read ({exc})") from exc
        found = dict(conn.execute(Q["counts"]).fetchall())
        for name, digest in self.recorded.items():
            if found.get(name) != digest.rows:
                raise self._corrupt(
                    f"table {name} holds {found.get(name)} rows, not the {digest.rows} recorded"
                )
        return header

    @property
    def events(self) -> int:
        """The events the file holds."""
        return self.recorded["events"].rows

    @property
    def bytes(self) -> int:
        """The bytes of all its rows (as counted by the digests)."""
        return sum(d.bytes for d in self.recorded.values())

    def pages(self, table: Table, size: int) -> Iterator[list[Row]]:
        """The table's rows, ``size`` at a time, counted into its digest."""
        assert self._conn is not None
        digest = self.digests[table.name]
        try:
            cursor = self._conn.execute(Q["select_" + table.name])
            while rows := cursor.fetchmany(size):
                digest.add(rows)
                yield rows
        except sqlite3.DatabaseError as exc:
            raise self._corrupt(f"table {table.name} is damaged ({exc})") from exc

    def check_digests(self, table: Table) -> None:
        """Refuse the file if ``table``'s rows, as read, are not those recorded."""
        if not self.digests[table.name].same(self.recorded[table.name]):
            raise self._corrupt(f"the rows of table {table.name} do not match their checksum")

    def close(self) -> None:
        """Close the file."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
