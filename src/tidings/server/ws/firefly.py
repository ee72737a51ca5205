"""Consumers of websocket event streams on ``/ws``, in FireFly's wire format.

A connection that asked for no subprotocol may send FireFly's messages beside
``tidings.v1``'s: ``{"type": "start", "stream": NAME}`` attaches it to a websocket event
stream; batches come as ``{"type": "event_batch", "stream", "batchNumber", "batchId",
"events"}``; it answers ``{"type": "ack", "stream", "batchNumber"}`` or ``nack`` /
``error`` with a ``message``. A FireFly consumer works unchanged (it ignores ``ready``).

The stream's runner (``tidings.delivery.runner``) sends one batch at a time through
``Consumers.deliverer``: ``load_balance`` hands it to the next attached consumer, round
robin, and a batch nacked, unanswered within ``ack_timeout`` or in flight on a consumer
that leaves goes to another **with the same number and id**; ``broadcast`` hands it to
every attached consumer and counts it delivered when all that stayed have acked. With no
consumer attached the stream waits (``wait``, the default) rather than drop batches.

A stream runs on the node that holds its lease, and serves the consumers attached to
every node: those on other nodes through the ``Roster`` (``tidings.server.ws.roster``).
A node claims a websocket stream only while a consumer of it is attached to some node,
and gives the lease up when none has been for a lease round.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import msgspec

from tidings.delivery.definitions import effective, parse
from tidings.delivery.records import Row
from tidings.delivery.runner import Deliver, Lost
from tidings.delivery.webhook import Batch, Outcome
from tidings.events import RecordedEvent
from tidings.server.ws import protocol

if TYPE_CHECKING:
    from tidings.delivery.streams import EventStreams
    from tidings.server.ws.connection import Connection
    from tidings.server.ws.roster import RemoteConsumer, Roster

KINDS = frozenset({"start", "ack", "nack", "error"})


class Peek(msgspec.Struct):
    """Enough of a message to tell FireFly's from ``tidings.v1``'s."""

    type: str = ""
    stream: str | None = None
    batchNumber: int | None = None
    message: str | None = None


_peek = msgspec.json.Decoder(Peek)
_encode = msgspec.json.Encoder().encode


class EventBatch(msgspec.Struct, tag_field="type", tag="event_batch"):
    """A batch as FireFly's consumers expect it (``batchId`` is tidings' addition: the
    same on every redelivery, for deduplication)."""

    stream: str
    batchNumber: int
    batchId: str
    events: list[RecordedEvent]


def firefly(raw: str | bytes) -> Peek | None:
    """The FireFly message ``raw`` is, or None when it is not one (``start``, or an
    ``ack``/``nack``/``error`` naming a ``stream``)."""
    try:
        peek = _peek.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return None
    if peek.type == "start" or (peek.type in KINDS and peek.stream is not None):
        return peek
    return None


class Consumer:
    """One connection attached to one stream, with the batches it has not answered."""

    def __init__(self, connection: Connection, stream: str) -> None:
        self.connection = connection
        self.stream = stream
        self.waiting: dict[int, asyncio.Future[tuple[str, str | None]]] = {}

    @property
    def name(self) -> str:
        """How attempts name this consumer: its node and connection."""
        return f"node-{self.connection.node.id}/{self.connection.id}"

    def send(self, batch: Batch) -> asyncio.Future[tuple[str, str | None]]:
        """Send ``batch``; the future resolves with the answer (``ack``, ``nack``,
        ``error`` or ``left``) and its message."""
        answer: asyncio.Future[tuple[str, str | None]] = asyncio.get_running_loop().create_future()
        self.waiting[batch.batch_number] = answer
        body = EventBatch(batch.stream, batch.batch_number, batch.batch_id, batch.events)
        self.connection.deliver(_encode(body))
        return answer

    def answer(self, number: int, kind: str, message: str | None) -> bool:
        """Resolve the batch ``number``; False when it was not waiting."""
        answer = self.waiting.pop(number, None)
        if answer is None or answer.done():
            return False
        answer.set_result((kind, message))
        return True

    def drop(self, number: int) -> None:
        """Stop waiting for the answer to batch ``number``."""
        self.waiting.pop(number, None)

    def leave(self) -> None:
        """The connection went: every batch it holds goes back."""
        for answer in self.waiting.values():
            if not answer.done():
                answer.set_result(("left", "the consumer disconnected"))
        self.waiting.clear()


class Consumers:
    """The websocket event-stream consumers attached to this node, by stream id."""

    def __init__(self) -> None:
        self.attached: dict[str, list[Consumer]] = {}
        self._arrived: dict[str, asyncio.Event] = {}
        self._turns: dict[str, itertools.count[int]] = {}
        """Each stream's round-robin counter."""
        self.streams: EventStreams | None = None
        self.on_attach: Callable[[str], None] | None = None
        self.roster: Roster | None = None
        """The consumers attached to other nodes (None: this node's alone)."""

    # -- the connection's side ---------------------------------------------------------

    async def handle(self, connection: Connection, message: Peek) -> None:
        """A FireFly message from ``connection``."""
        if message.type == "start":
            await self._start(connection, message)
            return
        for consumer in self.attached.get(await self._stream_id(message.stream or ""), []):
            number = message.batchNumber
            if consumer.connection is connection and number is not None:  # noqa: SIM102
                if consumer.answer(number, message.type, message.message):
                    return
        raise protocol.BadMessage(
            "unknown_batch",
            f"no batch {message.batchNumber} of stream {message.stream!r} awaits an answer here",
        )

    async def _stream_id(self, name: str) -> str:
        if self.streams is None:
            return ""
        try:
            return (await self.streams.row(name)).id
        except Exception:
            return ""

    async def _start(self, connection: Connection, message: Peek) -> None:
        if self.streams is None or not message.stream:
            raise protocol.BadMessage("invalid_message", "start needs a stream's name")
        try:
            row = await self.streams.row(message.stream)
        except Exception:
            raise protocol.BadMessage(
                "unknown_stream", f"no event stream {message.stream!r}"
            ) from None
        if row.type != "websocket":
            raise protocol.BadMessage(
                "not_websocket", f"event stream {row.name!r} delivers to a webhook"
            )
        who = connection.who
        categories = parse(row.definition).filter.categories or ["*"]
        if who is None or not all(who.may("subscribe", c) for c in categories):
            raise protocol.BadMessage("forbidden", f"may not consume event stream {row.name!r}")
        found = self.attached.setdefault(row.id, [])
        if any(c.connection is connection for c in found):
            return  # started already: FireFly clients send start again after a reconnect
        found.append(Consumer(connection, row.id))
        if self.roster is not None:
            self.roster.changed(row.id)
        self.arrived(row.id)

    def arrived(self, stream_id: str) -> None:
        """A consumer of ``stream_id`` came, here or on another node: a batch waiting
        for one goes on, and the dispatcher looks for the stream to run."""
        self._arrived.setdefault(stream_id, asyncio.Event()).set()
        if self.on_attach is not None:
            self.on_attach(stream_id)

    def forget(self, connection: Connection) -> None:
        """``connection`` closed: detach it from every stream."""
        for stream_id, found in list(self.attached.items()):
            mine = [c for c in found if c.connection is connection]
            for consumer in mine:
                found.remove(consumer)
                consumer.leave()
            if not found:
                del self.attached[stream_id]
            if mine and self.roster is not None:
                self.roster.changed(stream_id)

    # -- the runner's side -------------------------------------------------------------

    def deliverer(self, row: Row) -> Deliver | None:
        """How the runner of websocket stream ``row`` delivers; None while no consumer
        of it is attached to any node this one has heard of."""
        if not self.everywhere(row.id) or self.streams is None:
            return None
        definition = parse(row.definition)
        settings = effective(definition, self.streams.defaults)
        ws = definition.websocket
        broadcast = ws is not None and ws.distribution == "broadcast"
        wait = ws is None or ws.wait
        give_up = self.streams.defaults.lease_ttl / 3

        async def deliver(batch: Batch) -> Outcome:
            started = time.perf_counter()
            consumers = await self._consumers(row.id, give_up if wait else 0.0)
            if not consumers:
                if wait:
                    raise Lost("no consumer attached")  # the lease goes: see module
                return Outcome("delivered", None, _ms(started), "no consumer: dropped")
            turn = self._turns.setdefault(row.id, itertools.count())
            chosen = consumers if broadcast else [consumers[next(turn) % len(consumers)]]
            answers = [c.send(batch) for c in chosen]
            names = ",".join(c.name for c in chosen)
            try:
                async with asyncio.timeout(settings.ack_timeout):
                    replies = await asyncio.gather(*answers)
            except TimeoutError:
                for consumer in chosen:
                    consumer.drop(batch.batch_number)
                error = f"no ack within {settings.ack_timeout:g} s"
                return Outcome("failed", None, _ms(started), error, consumer=names)
            refused = [(kind, text) for kind, text in replies if kind != "ack"]
            if broadcast and any(kind == "ack" for kind, _ in replies):
                # delivered when every consumer that stayed acked: those that left do not count
                refused = [(kind, text) for kind, text in refused if kind != "left"]
            if refused:
                kind, text = refused[0]
                error = f"{kind}: {text}" if text else kind
                return Outcome("failed", None, _ms(started), error, consumer=names)
            return Outcome("delivered", None, _ms(started), consumer=names)

        return deliver

    def everywhere(self, stream_id: str) -> list[Consumer | RemoteConsumer]:
        """The consumers of ``stream_id`` on every node, in the same order on every
        call (by name) so that round robin gives each its turn."""
        found: list[Consumer | RemoteConsumer] = list(self.attached.get(stream_id, []))
        if self.roster is not None:
            found += self.roster.others(stream_id)
        return sorted(found, key=lambda c: c.name)

    async def _consumers(self, stream_id: str, within: float) -> list[Consumer | RemoteConsumer]:
        """The consumers of ``stream_id`` on every node, waiting up to ``within`` seconds
        for one to come."""
        deadline = asyncio.get_running_loop().time() + within
        while not (found := self.everywhere(stream_id)):
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return []
            arrived = self._arrived.setdefault(stream_id, asyncio.Event())
            arrived.clear()
            try:
                async with asyncio.timeout(left):
                    await arrived.wait()
            except TimeoutError:
                return []
        return found


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
