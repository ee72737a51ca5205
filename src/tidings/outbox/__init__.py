"""The transactional outbox: save a message in the application's own transaction; a relay
publishes it to a notifier, in order per key, at least once.

outbox = await Outbox.open("postgresql://app@db/app?schema=app", channel="orders")
async with pool.acquire() as conn, conn.transaction():
    await conn.execute("UPDATE orders SET status = 'paid' WHERE id = $1", 42)
    await outbox.save(conn, key="order-42", payload=b'{"id": 42, "status": "paid"}')
async with outbox.relay(notifier):
    ...  # saved messages reach the notifier's subscribers of "orders"
"""

from __future__ import annotations

import sqlite3
from types import TracebackType
from typing import Any, Protocol, Self
from urllib.parse import parse_qsl, urlencode, urlsplit

from tidings.errors import ConfigurationError, InvalidChannel, InvalidInput, StoreClosed
from tidings.notify import check_channel
from tidings.notify.base import check_payload
from tidings.outbox.relay import RELAY_TASK, Publisher, Relay, RelayStats, Source
from tidings.store import redact

__all__ = ["RELAY_TASK", "Outbox", "Publisher", "Relay", "RelayStats", "driver_of"]

_PG_OPTIONS = {"schema", "channel", "max_payload"}
_SQLITE_OPTIONS = {"channel", "max_payload", "busy_timeout_ms"}
_MAX_KEY_LENGTH = 1024


class _Backend(Protocol):
    dialect: str
    url: str

    async def create(self) -> None: ...

    async def save(
        self, driver: str, conn: Any, key: str, channel: str, payload: bytes
    ) -> None: ...

    def save_sync(self, driver: str, conn: Any, key: str, channel: str, payload: bytes) -> None: ...

    async def count(self) -> int: ...

    async def source(self) -> Source: ...


class Outbox:
    """Messages saved in the application's transactions, for relays to publish.

    Open it by URL: ``postgresql://...`` (the table ``<schema>.outbox``, schema
    ``tidings`` unless ``?schema=`` says otherwise) or ``sqlite:///path`` (the table
    ``tidings_outbox``). ``open`` creates the table if missing. Options (URL query or
    keywords): ``channel`` (the default channel of ``save``), ``max_payload`` (refuse
    larger payloads at save time, say the notifier's limit), ``schema`` (PostgreSQL),
    ``busy_timeout_ms`` (SQLite, 10,000).
    """

    def __init__(
        self, backend: _Backend, *, channel: str | None = None, max_payload: int | None = None
    ) -> None:
        self.url = backend.url
        self.channel = None if channel is None else check_channel(channel)
        self.max_payload = max_payload
        self._backend = backend
        self._relays: set[Relay] = set()
        self._closed = False

    @classmethod
    async def open(cls, url: str, **options: Any) -> Outbox:
        """Open the outbox at ``url``, creating its table if needed (idempotent, under a lock)."""
        if not isinstance(url, str):
            raise ConfigurationError(f"outbox URL must be a string, not {type(url).__name__}")
        parts = urlsplit(url)
        scheme = "postgresql" if parts.scheme == "postgres" else parts.scheme
        backend: _Backend
        if scheme == "postgresql":
            ours, theirs = _split_options(url, options, _PG_OPTIONS)
            schema = str(ours.get("schema", "tidings"))
            if not schema or len(schema) > 63:
                raise ConfigurationError(f"schema name {schema!r} is not usable")
            try:
                from tidings.outbox.postgres import PostgresOutbox
            except ImportError as exc:  # asyncpg missing
                raise ConfigurationError(
                    "the PostgreSQL outbox needs asyncpg: pip install 'tidings[postgres]'"
                ) from exc
            dsn = parts._replace(scheme="postgresql", query=urlencode(theirs)).geturl()
            backend = PostgresOutbox(url, dsn, schema)
        elif scheme == "sqlite":
            ours, theirs = _split_options(url, options, _SQLITE_OPTIONS)
            if theirs:
                raise ConfigurationError(f"unknown option(s) {sorted(theirs)} for {url}")
            from tidings.outbox.sqlite import SQLiteOutbox

            backend = SQLiteOutbox(url, _sqlite_path(url), _int(ours, "busy_timeout_ms", 10_000))
        else:
            raise ConfigurationError(
                f"unknown outbox URL scheme {parts.scheme!r} in {redact(url)}: "
                "use sqlite:///path or postgresql://"
            )
        max_payload = ours.get("max_payload")
        outbox = cls(
            backend,
            channel=ours.get("channel"),
            max_payload=None if max_payload is None else _int(ours, "max_payload", 0),
        )
        await backend.create()
        return outbox

    @property
    def dialect(self) -> str:
        """``postgres`` or ``sqlite``."""
        return self._backend.dialect

    # -- saving ---------------------------------------------------------------------

    async def save(
        self, conn: Any, key: str, payload: bytes, *, channel: str | None = None
    ) -> None:
        """Save a message through ``conn``, the application's connection, in its transaction.

        ``conn`` is an asyncpg connection (or pool connection), a psycopg 3 connection
        (async or not) or, for a SQLite outbox, a ``sqlite3.Connection``. The message
        commits or rolls back with the application's transaction (outside one, it
        commits at once). Messages of one ``key`` are published in the order they were
        saved. Raises ``InvalidInput`` or ``InvalidChannel`` before writing anything;
        errors of the application's connection are its own and come through unchanged.
        """
        driver, key, channel, payload = self._prepare(conn, key, payload, channel)
        await self._backend.save(driver, conn, key, channel, payload)

    def save_sync(self, conn: Any, key: str, payload: bytes, *, channel: str | None = None) -> None:
        """``save`` for synchronous code: a ``sqlite3`` or psycopg 3 (non-async) connection."""
        driver, key, channel, payload = self._prepare(conn, key, payload, channel)
        if driver not in ("sqlite3", "psycopg"):
            raise InvalidInput(f"save_sync takes a synchronous connection; use save for {driver}")
        self._backend.save_sync(driver, conn, key, channel, payload)

    def _prepare(
        self, conn: Any, key: object, payload: object, channel: str | None
    ) -> tuple[str, str, str, bytes]:
        self._check_open()
        if not isinstance(key, str) or not key:
            raise InvalidInput(f"an outbox key must be a non-empty str, not {key!r}")
        if len(key) > _MAX_KEY_LENGTH or "\x00" in key:
            raise InvalidInput(
                f"an outbox key must have at most {_MAX_KEY_LENGTH} characters and no NUL"
            )
        if channel is None:
            channel = self.channel
            if channel is None:
                raise InvalidChannel("no channel given, and the outbox has no default channel")
        check_channel(channel)
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise InvalidInput(f"an outbox payload must be bytes, not {type(payload).__name__}")
        limit = self.max_payload if self.max_payload is not None else len(payload)
        data = check_payload(payload, limit, "outbox")
        driver = driver_of(conn)
        wanted = "sqlite" if driver == "sqlite3" else "postgres"
        if wanted != self.dialect:
            raise InvalidInput(
                f"this outbox is in a {self.dialect} database; "
                f"save takes a connection to it, not a {driver} connection"
            )
        return driver, key, channel, data

    # -- relaying and the rest ------------------------------------------------------

    def relay(self, notifier: Publisher, **options: Any) -> Relay:
        """A relay publishing this outbox's messages to ``notifier``; start it or ``async with``.

        Options: ``batch_size`` (100), ``poll_interval`` (1.0 s), ``backoff`` and
        ``backoff_max`` (retry delays, 0.5 and 60 s), ``publish_timeout`` (10 s),
        ``concurrency`` (keys published side by side, 16), ``stop_timeout`` (10 s).
        """
        self._check_open()
        relay = Relay(self, notifier, **options)
        self._relays.add(relay)
        return relay

    async def pending(self) -> int:
        """How many messages wait in the table (committed, not yet published)."""
        self._check_open()
        return await self._backend.count()

    async def close(self) -> None:
        """Stop the relays made here (the notifiers stay open: they are the caller's)."""
        if self._closed:
            return
        self._closed = True
        for relay in list(self._relays):
            await relay.stop()
        self._relays.clear()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed(f"the outbox at {redact(self.url)} is closed")

    async def _source(self) -> Source:
        self._check_open()
        return await self._backend.source()

    def _forget(self, relay: Relay) -> None:
        self._relays.discard(relay)


def driver_of(conn: object) -> str:
    """Which driver made ``conn``: ``asyncpg``, ``psycopg_async``, ``psycopg`` or ``sqlite3``.

    Judged by class and module, so that no driver is imported to ask.
    """
    if isinstance(conn, sqlite3.Connection):
        return "sqlite3"
    for cls in type(conn).__mro__:
        package = cls.__module__.partition(".")[0]
        if package == "asyncpg" and cls.__name__ in ("Connection", "PoolConnectionProxy"):
            return "asyncpg"
        if package == "psycopg" and cls.__name__ == "AsyncConnection":
            return "psycopg_async"
        if package == "psycopg" and cls.__name__ == "Connection":
            return "psycopg"
    raise InvalidInput(
        f"save takes an asyncpg, psycopg 3 or sqlite3 connection, not {type(conn).__name__}"
    )


def _split_options(
    url: str, options: dict[str, Any], known: set[str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """Split the URL query and keywords into the outbox's options and the driver's own."""
    ours: dict[str, Any] = {}
    theirs: dict[str, str] = {}
    for key, value in parse_qsl(urlsplit(url).query):
        (ours if key in known else theirs)[key] = value
    unknown = options.keys() - known
    if unknown:
        raise ConfigurationError(f"unknown outbox option(s) {sorted(unknown)}")
    ours.update(options)
    return ours, theirs


def _int(options: dict[str, Any], key: str, default: int) -> int:
    value = options.get(key, default)
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"option {key} must be an integer, not {value!r}") from None
    if number < 1:
        raise ConfigurationError(f"option {key} must be at least 1, not {value!r}")
    return number


def _sqlite_path(url: str) -> str:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise ConfigurationError(f"sqlite URLs take a path, as sqlite:///file.db, not {url!r}")
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if not path:
        raise ConfigurationError(f"sqlite URL {url!r} names no file")
    return path
