"""Where view rows live: beside the events, in the store's own database (memory: on the store).

Rows are written only inside the transaction that moves the view's checkpoint (the
subscription ``view:<name>``), and read together with that checkpoint in one snapshot,
so a reader always knows exactly which position the values it got are folded up to.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from tidings.sql import load_queries
from tidings.store.base import StoreFront
from tidings.store.memory import MemoryStore
from tidings.store.sqlite import SQLiteStore
from tidings.subscriptions.checkpoints import open_checkpoints
from tidings.views.fold import Stored

Row = tuple[str, str | None, int]
"""A stored row: key, value as JSON text (None: deleted, a tombstone), position."""


class ViewStorage(Protocol):
    """The rows of every view of one store."""

    async def prepare(self) -> None:
        """Create the table if it is missing (idempotent, safe between processes)."""
        ...

    async def current(self, tx: Any, view: str, keys: list[str]) -> dict[str, Stored]:
        """Inside the folding transaction ``tx``: the stored state of ``keys``."""
        ...

    async def write(self, tx: Any, view: str, changes: dict[str, Stored]) -> None:
        """Inside the folding transaction ``tx``: store the changed keys."""
        ...

    def committed(self, view: str, changes: dict[str, Stored]) -> None:
        """The folding transaction committed (the memory store applies ``changes`` here)."""
        ...

    async def read(
        self, view: str, subscription: str, after: int, keys: list[str] | None
    ) -> tuple[list[Row], int]:
        """In one snapshot: the rows of ``keys`` (None: every key) changed after
        ``after``, tombstones included, and the checkpoint they are folded up to."""
        ...

    async def close(self) -> None:
        """Release what reads opened."""
        ...


def open_storage(store: StoreFront) -> ViewStorage:
    """The view rows of ``store``'s database; the caller closes them."""
    store = store.home
    if isinstance(store, SQLiteStore):
        return SQLiteViewRows(store)
    if isinstance(store, MemoryStore):
        return MemoryViewRows(store)
    if type(store).__name__ == "PostgresStore":
        from tidings.views.postgres import PostgresViewRows  # asyncpg only when needed

        return PostgresViewRows(store)  # type: ignore[arg-type]
    raise TypeError(f"state views do not support {type(store).__name__}")


class MemoryViewRows:
    """Rows in a dict kept on the memory store (they live as long as its checkpoints)."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store
        rows: dict[str, dict[str, Stored]] | None = getattr(store, "_tidings_views", None)
        if rows is None:
            rows = {}
            store._tidings_views = rows  # type: ignore[attr-defined]
        self._rows = rows

    async def prepare(self) -> None:  # noqa: D102
        self._store._check_open()

    async def current(self, tx: Any, view: str, keys: list[str]) -> dict[str, Stored]:  # noqa: D102
        rows = self._rows.get(view, {})
        return {k: rows[k] for k in keys if k in rows}

    async def write(self, tx: Any, view: str, changes: dict[str, Stored]) -> None:  # noqa: D102
        return None  # no transaction to write in: applied by committed()

    def committed(self, view: str, changes: dict[str, Stored]) -> None:  # noqa: D102
        self._rows.setdefault(view, {}).update(changes)

    async def read(  # noqa: D102
        self, view: str, subscription: str, after: int, keys: list[str] | None
    ) -> tuple[list[Row], int]:
        self._store._check_open()
        # Nothing below suspends: the checkpoint and the rows are read in one step.
        checkpoint = await open_checkpoints(self._store).load(subscription) or 0
        rows = self._rows.get(view, {})
        found = rows.items() if keys is None else ((k, rows[k]) for k in keys if k in rows)
        return [(k, text, at) for k, (text, at) in found if at > after], checkpoint

    async def close(self) -> None:  # noqa: D102
        return None


_SQLITE = load_queries("sqlite", None, "views.sql")


class SQLiteViewRows:
    """Rows in the table ``tidings_views`` of the store's file.

    Folding writes on the checkpoint's transaction (the store's side transaction).
    Reads run on the store's read connection, each a single statement, so the
    checkpoint and the rows come from one snapshot.
    """

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store

    async def prepare(self) -> None:  # noqa: D102
        self._store._check_open()  # the table comes with the store's migrations

    async def current(self, tx: Any, view: str, keys: list[str]) -> dict[str, Stored]:  # noqa: D102
        found = tx.execute(_SQLITE["current"], (view, json.dumps(keys))).fetchall()
        return {key: (text, int(at)) for key, text, at in found}

    async def write(self, tx: Any, view: str, changes: dict[str, Stored]) -> None:  # noqa: D102
        tx.executemany(
            _SQLITE["write"], [(view, key, text, at) for key, (text, at) in changes.items()]
        )

    def committed(self, view: str, changes: dict[str, Stored]) -> None:  # noqa: D102
        return None

    async def read(  # noqa: D102
        self, view: str, subscription: str, after: int, keys: list[str] | None
    ) -> tuple[list[Row], int]:
        sql, args = _SQLITE["read_every"], [view, subscription, after]
        if keys is not None:
            sql, args = _SQLITE["read_keys"], [*args, json.dumps(keys)]
        found = await self._store.read(lambda conn: conn.execute(sql, args).fetchall())
        return split_rows(found)

    async def close(self) -> None:  # noqa: D102
        return None  # the connections are the store's


def split_rows(found: Any) -> tuple[list[Row], int]:
    """Rows of a ``read_*`` query and the checkpoint (the row whose key is NULL)."""
    checkpoint = 0
    rows: list[Row] = []
    for key, text, at in found:
        if key is None:
            checkpoint = int(at)
        else:
            rows.append((key, text, int(at)))
    return rows, checkpoint
