"""The PostgreSQL notifier: LISTEN/NOTIFY on two connections of its own, outside any pool.

One connection LISTENs (it must not sit behind a transaction-mode pooler), the other
sends. Publishes made while a send is in flight are coalesced into one
``pg_notify`` statement, in order, so a busy publisher costs one round trip per
batch. PostgreSQL carries text payloads under 8,000 bytes: bytes that are not plain
UTF-8 text travel base64-encoded behind a ``\\x01`` marker and are decoded back, and
anything over the limit is refused with ``PayloadTooLarge``, never cut.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import Any

import asyncpg

from tidings.errors import PayloadTooLarge
from tidings.notify.batching import SendQueue
from tidings.notify.supervised import SupervisedNotifier

PG_PAYLOAD_LIMIT = 7999  # NOTIFY payloads must be shorter than 8000 bytes
_MARK = "\x01"
_NOTIFY_ONE = "SELECT pg_notify($1, $2)"
_NOTIFY_MANY = "SELECT pg_notify(c, p) FROM unnest($1::text[], $2::text[]) AS t(c, p)"


def to_text(payload: bytes) -> str:
    """The NOTIFY text for a payload: itself when it is plain text, else marked base64."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or "\x00" in text or text.startswith(_MARK):
        text = _MARK + base64.b64encode(payload).decode("ascii")
    return text


def from_text(text: str) -> bytes:
    """The payload a NOTIFY text carries (the inverse of ``to_text``)."""
    if text.startswith(_MARK):
        try:
            return base64.b64decode(text[1:], validate=True)
        except (binascii.Error, ValueError):
            pass  # a foreign sender's text that merely starts with the marker
    return text.encode("utf-8")


class PostgresNotifier(SupervisedNotifier):
    """LISTEN/NOTIFY on PostgreSQL, reconnecting and re-LISTENing after a loss."""

    kind = "postgresql"

    def __init__(self, url: str, dsn: str, **options: Any) -> None:
        super().__init__(url, PG_PAYLOAD_LIMIT, **options)
        self._dsn = dsn
        self._listener: Any = None
        self._sender: Any = None
        self._listener_lock = asyncio.Lock()
        self._sends = SendQueue(
            "tidings.notify.postgresql.sender", self._send_batch, cut=_distinct_head
        )

    def _validate(self, payload: bytes) -> None:
        size = len(to_text(payload).encode("utf-8"))
        if size > PG_PAYLOAD_LIMIT:
            raise PayloadTooLarge(size, PG_PAYLOAD_LIMIT, self.kind)

    async def _open(self) -> None:
        listener = await asyncpg.connect(self._dsn, timeout=self.connect_timeout)
        self._listener = listener
        listener.add_termination_listener(self._on_termination)
        self._sender = await asyncpg.connect(self._dsn, timeout=self.connect_timeout)
        self._sender.add_termination_listener(self._on_termination)

    def _on_termination(self, connection: Any) -> None:
        if connection is self._listener or connection is self._sender:
            self._connection_lost("the server closed the connection")

    def _on_notification(self, connection: Any, pid: int, channel: str, payload: str) -> None:
        self._deliver(channel, from_text(payload))

    async def _disconnect(self) -> None:
        listener, sender = self._listener, self._sender
        self._listener = self._sender = None
        for connection in (listener, sender):
            if connection is not None:
                connection.terminate()  # close() would wait on a dead peer
        self._sends.fail_all(ConnectionError("the connection was closed"))

    async def _listen_now(self, channels: list[str]) -> None:
        async with self._listener_lock:
            for channel in channels:
                await self._listener.add_listener(channel, self._on_notification)

    async def _unlisten_now(self, channels: list[str]) -> None:
        async with self._listener_lock:
            for channel in channels:
                await self._listener.remove_listener(channel, self._on_notification)

    async def _ping(self) -> None:
        async with self._listener_lock:
            await self._listener.execute("SELECT 1")

    async def _send_now(self, channel: str, payload: bytes) -> None:
        await self._sends.send(channel, payload)

    async def _send_batch(self, pairs: list[tuple[str, bytes]]) -> None:
        if len(pairs) == 1:
            channel, payload = pairs[0]
            await self._sender.execute(_NOTIFY_ONE, channel, to_text(payload))
            return
        channels = [channel for channel, _ in pairs]
        await self._sender.execute(_NOTIFY_MANY, channels, [to_text(p) for _, p in pairs])


def _distinct_head(pairs: list[tuple[str, bytes]]) -> int:
    """How many leading pairs hold no repeated (channel, payload).

    PostgreSQL folds identical notifications of one transaction into one, so a
    repeat must go in the next statement.
    """
    seen: set[tuple[str, bytes]] = set()
    for count, pair in enumerate(pairs):
        if pair in seen:
            return count
        seen.add(pair)
    return len(pairs)
