"""The event-stream API: create or upsert, get, list, update, start, stop, reset, delete,
attempts and parked events. Definitions live in the store's database (a room).

A change of definition, status or checkpoint moves the stream's ``generation``: the
node running it notices at its next write or lease renewal and starts over from the
stored state, so a change made on any node reaches the runner within a lease period
(at once when the runner is on the node that made it).
"""

from __future__ import annotations

import asyncio
import builtins
import time
import uuid
from collections.abc import Callable
from typing import Any

import msgspec

from tidings.delivery.definitions import Defaults, Definition, TlsConfig, check, is_id, parse
from tidings.delivery.records import (
    Attempt,
    Created,
    Parked,
    Row,
    Stats,
    StreamInfo,
    attempt_of,
    when,
)
from tidings.delivery.signing import SigningKeys, new_secret
from tidings.delivery.ssrf import AddressPolicy, IPNetwork
from tidings.errors import AlreadyExists, ConfigurationError, InvalidInput, NotFound
from tidings.store.base import StoreFront
from tidings.store.rooms import Room, Step

MAX_PAGE = 1000
QUERIES = "eventstreams.sql"


def now_ms() -> int:
    """The process clock in ms, as the tables keep it."""
    return time.time_ns() // 1_000_000


class EventStreams:
    """Managed event streams on ``store``'s database.

    ``defaults`` fill what a definition leaves unset; ``tls`` are the named TLS settings
    a webhook may refer to; ``allow`` are networks webhooks may reach even though the
    SSRF guard refuses them (a test's receiver on loopback); ``proxies`` are the named
    egress proxies (URLs) a webhook may post through. ``on_change`` is called
    with a stream id after every change this object makes (the node's dispatcher, to
    act at once).
    """

    def __init__(
        self,
        store: StoreFront,
        defaults: Defaults | None = None,
        tls: dict[str, TlsConfig] | None = None,
        allow: tuple[IPNetwork, ...] = (),
        proxies: dict[str, str] | None = None,
    ) -> None:
        self.store = store
        self.defaults = defaults or Defaults()
        self.tls = dict(tls or {})
        self.allow = tuple(allow)
        self.proxies = dict(proxies or {})
        for name, url in self.proxies.items():
            if not url.startswith(("http://", "https://")):
                raise ConfigurationError(f"proxy {name!r}: {url!r} is not an http(s) URL")
        self.room: Room = store.room(QUERIES)
        self.on_change: Callable[[str], None] | None = None

    # -- reading ---------------------------------------------------------------------

    async def row(self, name_or_id: str) -> Row:
        """The stored row of a stream, by name or id; ``NotFound`` when there is none
        (or it is being deleted)."""
        query = "by_id" if is_id(name_or_id) else "by_name"
        rows = await self.room.rows(query, name_or_id.lower() if is_id(name_or_id) else name_or_id)
        if not rows or rows[0][3] == "deleting":
            raise NotFound(f"no event stream {name_or_id!r}")
        return Row.of(rows[0])

    async def get(self, name_or_id: str) -> StreamInfo:
        """A stream by name or id, with its statistics."""
        return await self.info(await self.row(name_or_id))

    async def list(
        self,
        name: str | None = None,
        status: str | None = None,
        type: str | None = None,
        after: str = "",
        limit: int = 100,
    ) -> list[StreamInfo]:
        """Streams by name, after the name ``after``; ``name``, ``status`` and ``type``
        narrow the list when given."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"limit must be 1 to {MAX_PAGE}, not {limit}")
        if status is not None and status not in ("started", "stopped"):
            raise InvalidInput(f"status must be started or stopped, not {status!r}")
        rows = await self.room.rows("list", name, status, type, after, limit)
        head = await self.store.head()
        return [await self.info(Row.of(r), head) for r in rows]

    async def info(self, row: Row, head: int | None = None) -> StreamInfo:
        """What the API shows of a row: the definition without its secret, and stats."""
        if head is None:
            head = await self.store.head()
        [(parked,)] = await self.room.rows("parked_count", row.id)
        dispatched = row.checkpoint if row.inflight_last is None else row.inflight_last
        stats = Stats(
            status=row.dispatch if row.status == "started" else "idle",
            start_time=when(row.started_ms),
            last_dispatch=when(row.last_dispatch_ms),
            highest_detected=head,
            highest_dispatched=max(dispatched, row.checkpoint),
            checkpoint=row.checkpoint,
            lag=max(0, head - row.checkpoint),
            delivered=row.delivered,
            batches=row.batches,
            attempts=row.attempts,
            failures=row.failures,
            failing_since=when(row.failing_since_ms),
            last_error=row.last_error,
            parked=int(parked),
            node=row.owner if row.lease_until_ms >= now_ms() else None,
        )
        return StreamInfo(
            id=row.id,
            name=row.name,
            type=row.type,
            status=row.status,
            reason=row.reason,
            definition=parse(row.definition),
            created=when(row.created_ms),  # type: ignore[arg-type]
            updated=when(row.updated_ms),  # type: ignore[arg-type]
            stats=stats,
        )

    async def attempts(
        self, name_or_id: str, before: int | None = None, limit: int = 100
    ) -> builtins.list[Attempt]:
        """Delivery attempts of a stream, newest first; ``before`` an attempt id pages on."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"limit must be 1 to {MAX_PAGE}, not {limit}")
        row = await self.row(name_or_id)
        cursor = 2**62 if before is None else before
        return [attempt_of(r) for r in await self.room.rows("attempts", row.id, cursor, limit)]

    async def parked(
        self, name_or_id: str, after: int = 0, limit: int = 100
    ) -> builtins.list[Parked]:
        """Events of a stream that ``skip`` parked, by position after ``after``."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"limit must be 1 to {MAX_PAGE}, not {limit}")
        row = await self.row(name_or_id)
        rows = await self.room.rows("parked", row.id, after, limit)
        return [Parked(int(p), b, r, when(ms)) for p, b, r, ms in rows]  # type: ignore[arg-type]

    # -- changing --------------------------------------------------------------------

    def policy(self, definition: Definition) -> AddressPolicy:
        """The addresses ``definition``'s webhook may reach."""
        hook = definition.webhook
        private = self.defaults.allow_private
        if hook is not None and hook.allow_private is not None:
            private = hook.allow_private
        return AddressPolicy(allow_private=private, allow=self.allow)

    def _check(self, definition: Definition) -> None:
        check(definition, frozenset(self.tls), self.policy(definition), frozenset(self.proxies))

    async def _start_position(self, definition: Definition) -> int:
        start = definition.initial_position
        if start == "beginning":
            return 0
        if start == "end":
            return await self.store.head()
        return int(start)

    async def create(
        self, definition: Definition, *, upsert: bool = False, started: bool = True
    ) -> Created:
        """Store a new stream (started unless ``started=False``); ``AlreadyExists`` when
        the name is taken, unless ``upsert``, which then replaces its definition."""
        self._check(definition)
        secret = None
        signing = None
        if definition.type == "webhook":
            assert definition.webhook is not None  # check() saw to it
            secret = definition.webhook.secret or new_secret()
            signing = SigningKeys.of(secret).to_json().decode()
        stored = _without_secret(definition)
        stream_id = str(uuid.uuid4())
        checkpoint = await self._start_position(definition)
        inserted = await self.room.run(
            "insert",
            stream_id,
            definition.name,
            definition.type,
            "started" if started else "stopped",
            _json(stored),
            signing,
            checkpoint,
            now_ms(),
        )
        if inserted:
            self._changed(stream_id)
            return Created(await self.get(stream_id), secret, True)
        if not upsert:
            raise AlreadyExists(f"event stream {definition.name!r}")
        info = await self.replace(definition.name, definition)
        return Created(info, None, False)

    async def replace(self, name_or_id: str, definition: Definition) -> StreamInfo:
        """Replace a stream's definition (PUT). A new ``secret`` rotates: the old one
        keeps signing beside it for the server's ``secret_overlap``."""
        self._check(definition)
        row = await self.row(name_or_id)
        if definition.name != row.name:
            raise InvalidInput(
                f"the definition is named {definition.name!r}, the stream {row.name!r}:"
                " a stream keeps its name"
            )
        signing = row.signing
        if definition.type == "webhook":
            assert definition.webhook is not None
            signing = self._rotated(row.signing, definition.webhook.secret)
        else:
            signing = None
        changed = await self.room.run(
            "redefine", row.id, _json(_without_secret(definition)), definition.type, signing,
            now_ms(),
        )  # fmt: skip
        if not changed:
            raise NotFound(f"no event stream {name_or_id!r}")
        self._changed(row.id)
        return await self.get(row.id)

    async def update(self, name_or_id: str, changes: dict[str, Any]) -> StreamInfo:
        """Change some fields of a stream's definition (PATCH: a JSON merge patch; a
        ``null`` field goes back to the server's default)."""
        row = await self.row(name_or_id)
        merged = _merge(msgspec.to_builtins(parse(row.definition)), changes)
        try:
            definition = msgspec.convert(merged, Definition)
        except msgspec.ValidationError as exc:
            raise InvalidInput(f"the changed definition is not valid: {exc}") from None
        return await self.replace(row.id, definition)

    def _rotated(self, stored: str | None, secret: str | None) -> str:
        if stored is None:
            return SigningKeys.of(secret or new_secret()).to_json().decode()
        keys = SigningKeys.from_json(stored)
        if secret is None:
            return stored
        return keys.rotate(secret, time.time(), self.defaults.secret_overlap).to_json().decode()

    async def start(self, name_or_id: str) -> StreamInfo:
        """Start a stream (again): it delivers from its checkpoint."""
        return await self._set(name_or_id, "start", now_ms())

    async def stop(self, name_or_id: str, reason: str | None = None) -> StreamInfo:
        """Stop a stream: the node running it finishes no further batch."""
        return await self._set(name_or_id, "stop", reason, now_ms())

    async def reset(self, name_or_id: str, position: int | None = None) -> StreamInfo:
        """Move a stream's checkpoint to ``position`` (None: to its initial position,
        resolved again: ``end`` means the head now)."""
        row = await self.row(name_or_id)
        if position is None:
            position = await self._start_position(parse(row.definition))
        elif isinstance(position, bool) or not isinstance(position, int) or position < 0:
            raise InvalidInput(f"position must be an int >= 0, not {position!r}")
        elif position > (head := await self.store.head()):
            # Events appended up to it later would never be delivered.
            raise InvalidInput(f"position {position} is past the head ({head})")
        return await self._set(row.id, "reset", position, now_ms())

    async def _set(self, name_or_id: str, query: str, *args: Any) -> StreamInfo:
        row = await self.row(name_or_id)
        if not await self.room.run(query, row.id, *args):
            raise NotFound(f"no event stream {name_or_id!r}")
        self._changed(row.id)
        return await self.get(row.id)

    async def redeliver(
        self, name_or_id: str, from_position: int, to_position: int, parked: bool = False
    ) -> StreamInfo:
        """Send the stream's events from ``from_position`` to ``to_position`` again (all
        delivered already: no further than the checkpoint), or with ``parked`` its parked
        events in that range, which are parked no more once they land. The checkpoint
        does not move. The stream's runner does it before going on."""
        for value in (from_position, to_position):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInput(f"positions are ints >= 1, not {value!r}")
        if from_position > to_position:
            raise InvalidInput(f"from_position {from_position} is after {to_position}")
        row = await self.row(name_or_id)
        if not parked and to_position > row.checkpoint:
            raise InvalidInput(
                f"to_position {to_position} is past the checkpoint ({row.checkpoint}):"
                " those events are on their way"
            )
        done = await self.room.run(
            "request_redelivery", row.id, from_position, to_position, parked, now_ms()
        )
        if not done:
            raise NotFound(f"no event stream {name_or_id!r}")
        self._changed(row.id)
        return await self.get(row.id)

    async def delete(self, name_or_id: str, wait: float | None = None) -> None:
        """Stop a stream, then delete it with its attempts and parked events.

        The stream is marked first; the node running it stops, and the rows go once its
        lease is free (waiting up to ``wait`` seconds, by default the lease period). A
        delete cut short here is finished by ``finish_deletes`` (at every dispatcher's
        start and on each of its rounds).
        """
        row = await self.row(name_or_id)
        await self.room.run("mark_deleting", row.id, now_ms())
        self._changed(row.id)
        deadline = time.monotonic() + (self.defaults.lease_ttl if wait is None else wait)
        while True:
            rows = await self.room.rows("by_id", row.id)
            if not rows:
                return
            current = Row.of(rows[0])
            if current.owner is None or current.lease_until_ms < now_ms():
                break
            if time.monotonic() >= deadline:
                return  # its runner holds on: finish_deletes ends it when the lease runs out
            await asyncio.sleep(0.05)
        await self._drop(row.id)

    async def finish_deletes(self) -> int:
        """Delete the streams marked for deletion whose runner is gone; how many."""
        done = 0
        for stream_id, owner, lease_until in await self.room.rows("deleting"):
            if owner is None or lease_until < now_ms():
                await self._drop(stream_id)
                done += 1
        return done

    async def _drop(self, stream_id: str) -> None:
        await self.room.steps(
            Step("delete_redeliveries", (stream_id,)),
            Step("delete_attempts", (stream_id,)),
            Step("delete_parked", (stream_id,)),
            Step("delete_stream", (stream_id,)),
        )

    def _changed(self, stream_id: str) -> None:
        if self.on_change is not None:
            self.on_change(stream_id)


def _json(definition: Definition) -> str:
    return msgspec.json.encode(definition).decode()


def _without_secret(definition: Definition) -> Definition:
    if definition.webhook is None or definition.webhook.secret is None:
        return definition
    return msgspec.structs.replace(
        definition, webhook=msgspec.structs.replace(definition.webhook, secret=None)
    )


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge(result.get(key), value)
    return result
