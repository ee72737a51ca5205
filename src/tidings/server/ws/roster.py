"""Websocket event-stream consumers on other nodes: who is attached where, and batches
handed across.

Every node tells the others, on the gateway hub's topic ``e``, which consumers of which
stream are attached to it: at once when one comes or goes, and again every
``lease_ttl / 3`` seconds (a node not heard from for ``lease_ttl`` has none). The node
running a stream counts those consumers beside its own, so ``load_balance`` and
``broadcast`` reach consumers on every node.

A batch for a consumer on another node travels as a hint, never as its events (a
NOTIFY carries 8,000 bytes at most): ``{stream, number, id, first, last, count}`` on that
node's topic ``e.<node>``. That node reads the batch from the store, where it is
exactly the stream's events from ``first`` to ``last`` (or, for a redelivery of parked
events, the parked ones among them), sends it, and sends each answer back on the
running node's topic. A hint or an answer lost on the way is an unanswered batch: it
goes again after ``ack_timeout``, with the same number and id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from tidings.delivery.definitions import effective, parse
from tidings.delivery.webhook import Batch
from tidings.events import RecordedEvent

if TYPE_CHECKING:
    from tidings.delivery.streams import EventStreams
    from tidings.server.ws.firefly import Consumers

log = logging.getLogger("tidings.delivery")

PRESENCE = "e"
MAX_NAMES = 100
"""Consumers of one stream a node announces (a hub message stays far below 8,000 bytes)."""

Answer = tuple[str, str | None]
Publish = Callable[[str, dict[str, Any]], Awaitable[None]]


def topic_of(node: str) -> str:
    """The hub topic on which ``node`` takes hints and answers."""
    return f"e.{node}"


class RemoteConsumer:
    """A consumer attached to another node, as the running node sees it."""

    def __init__(self, roster: Roster, stream_id: str, node: str, name: str) -> None:
        self.roster = roster
        self.stream_id = stream_id
        self.node = node
        self.name = name

    def send(self, batch: Batch) -> asyncio.Future[Answer]:
        """Hand ``batch`` over to the consumer's node; the future resolves with its answer."""
        return self.roster.hand_over(self.stream_id, self.node, self.name, batch)

    def drop(self, number: int) -> None:
        """Stop waiting for the answer to batch ``number``."""
        self.roster.waiting.pop((self.name, number), None)


class Roster:
    """One node's view of the consumers attached elsewhere, and its side of the
    hand-over in both directions."""

    def __init__(
        self, consumers: Consumers, streams: EventStreams, node: str, publish: Publish
    ) -> None:
        self.consumers = consumers
        self.streams = streams
        self.node = node
        self.publish = publish
        self.ttl = streams.defaults.lease_ttl
        self.elsewhere: dict[str, dict[str, tuple[list[str], float]]] = {}
        """Stream id -> node -> (its consumers' names, when it said so)."""
        self.waiting: dict[tuple[str, int], asyncio.Future[Answer]] = {}
        """Batches handed over, by (consumer, number), until answered."""
        self._tasks: set[asyncio.Task[Any]] = set()
        self._beat: asyncio.Task[None] | None = None

    # -- presence ----------------------------------------------------------------------

    def start(self, join: Callable[[], Awaitable[object]]) -> None:
        """In the background: ``join`` the hub's topics, ask every node to say what it
        holds, and keep telling ours (a node whose notifier is down still starts)."""
        self._beat = asyncio.get_running_loop().create_task(
            self._heartbeat(join), name=f"tidings eventstream roster {self.node}"
        )

    async def close(self) -> None:
        """Tell the others this node's consumers are gone; stop."""
        if self._beat is not None:
            self._beat.cancel()
            await asyncio.gather(self._beat, return_exceptions=True)
        with contextlib.suppress(Exception):
            for stream_id in list(self.consumers.attached):
                await self.publish(PRESENCE, self._here(stream_id, []))
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for answer in self.waiting.values():
            if not answer.done():
                answer.set_result(("left", "the node is stopping"))

    def changed(self, stream_id: str) -> None:
        """This node's consumers of ``stream_id`` changed: tell the others now."""
        names = [c.name for c in self.consumers.attached.get(stream_id, [])]
        self._spawn(self.publish(PRESENCE, self._here(stream_id, names)))

    async def _heartbeat(self, join: Callable[[], Awaitable[object]]) -> None:
        while True:
            try:
                await join()
                await self.publish(PRESENCE, {"op": "who", "node": self.node})
                break
            except Exception as exc:
                log.warning("event-stream roster: joining the gateway hub failed: %s", exc)
                await asyncio.sleep(self.ttl / 3)
        while True:
            await asyncio.sleep(self.ttl / 3)
            for stream_id, found in list(self.consumers.attached.items()):
                with contextlib.suppress(Exception):  # the next beat tries again
                    await self.publish(PRESENCE, self._here(stream_id, [c.name for c in found]))

    def _here(self, stream_id: str, names: list[str]) -> dict[str, Any]:
        names = names[:MAX_NAMES]
        return {"op": "here", "node": self.node, "stream": stream_id, "consumers": names}

    def others(self, stream_id: str) -> list[RemoteConsumer]:
        """The consumers of ``stream_id`` attached to other nodes heard from lately."""
        now = time.monotonic()
        found = []
        for node, (names, seen) in list(self.elsewhere.get(stream_id, {}).items()):
            if now - seen > self.ttl:
                del self.elsewhere[stream_id][node]
                continue
            found += [RemoteConsumer(self, stream_id, node, name) for name in names]
        return found

    # -- messages from the hub ---------------------------------------------------------

    def receive(self, value: Any) -> None:
        """A message on ``e`` or on this node's ``e.<node>``."""
        if not isinstance(value, dict):
            return
        op = value.get("op")
        if op == "here" and value.get("node") != self.node:
            self._heard(value)
        elif op == "who" and value.get("node") != self.node:
            for stream_id in list(self.consumers.attached):
                self.changed(stream_id)
        elif op == "batch":
            self._spawn(self._serve(value))
        elif op == "answer":
            key = (str(value.get("consumer")), int(value.get("number", -1)))
            answer = self.waiting.pop(key, None)
            if answer is not None and not answer.done():
                answer.set_result((str(value.get("kind")), value.get("message")))

    def _heard(self, value: dict[str, Any]) -> None:
        stream_id, node = str(value.get("stream")), str(value.get("node"))
        names = [str(n) for n in value.get("consumers") or []]
        nodes = self.elsewhere.setdefault(stream_id, {})
        if names:
            arrived = node not in nodes
            nodes[node] = (names, time.monotonic())
            if arrived:
                self.consumers.arrived(stream_id)
            return
        nodes.pop(node, None)  # a batch it holds comes back as "left" from that node

    # -- the running node's side -------------------------------------------------------

    def hand_over(
        self, stream_id: str, node: str, name: str, batch: Batch
    ) -> asyncio.Future[Answer]:
        """Send the hint of ``batch`` (of ``stream_id``) to ``node`` for its consumer
        ``name``."""
        answer: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self.waiting[(name, batch.batch_number)] = answer
        events = batch.events
        hint = {
            "op": "batch", "from": self.node, "stream": stream_id,
            "number": batch.batch_number, "id": batch.batch_id, "first": events[0].position,
            "last": events[-1].position, "count": len(events), "to": name,
        }  # fmt: skip
        self._spawn(self._publish_or_fail(topic_of(node), hint, answer))
        return answer

    async def _publish_or_fail(
        self, topic: str, message: dict[str, Any], answer: asyncio.Future[Answer]
    ) -> None:
        try:
            await self.publish(topic, message)
        except Exception as exc:
            if not answer.done():
                answer.set_result(("error", f"could not reach the consumer's node: {exc}"))

    # -- the consumer's node's side ----------------------------------------------------

    async def _serve(self, hint: dict[str, Any]) -> None:
        """Form the hinted batch from the store, send it to the named consumer here, and
        send its answer back."""
        reply_to, stream_id = str(hint.get("from")), str(hint.get("stream"))
        name, number = str(hint.get("to")), int(hint.get("number", -1))
        kind: str = "left"
        message: str | None = "the consumer is not attached here"
        try:
            consumer = next(
                (c for c in self.consumers.attached.get(stream_id, []) if c.name == name), None
            )
            if consumer is not None:
                row = await self.streams.row(stream_id)
                events = await self._events(row.definition, hint)
                if len(events) != int(hint["count"]):
                    kind, message = "error", "the batch could not be read back from the store"
                else:
                    timeout = effective(parse(row.definition), self.streams.defaults).ack_timeout
                    sent = consumer.send(Batch(row.name, str(hint["id"]), number, events))
                    try:
                        async with asyncio.timeout(timeout):
                            kind, message = await sent
                    except TimeoutError:
                        consumer.drop(number)
                        return  # the running node has given up on it too
        except Exception as exc:
            log.exception("event stream %s: batch %d not handed on", stream_id, number)
            kind, message = "error", f"the consumer's node failed: {exc}"
        answer = {"op": "answer", "stream": stream_id, "number": number, "consumer": name,
                  "kind": kind, "message": message}  # fmt: skip
        await self.publish(topic_of(reply_to), answer)

    async def _events(self, definition: str, hint: dict[str, Any]) -> list[RecordedEvent]:
        """The batch's events: the stream's events from ``first`` to ``last``, or the
        parked ones among them when that is not ``count`` events."""
        store = self.streams.store
        spec = parse(definition).filter.to_filter()
        first, last, count = int(hint["first"]), int(hint["last"]), int(hint["count"])
        events: list[RecordedEvent] = []
        async for page in store.read_all_pages(first - 1, spec, limit=count, raw=True):
            events += page
        if events and events[-1].position == last and len(events) == count:
            return events
        rows = await self.streams.room.rows("parked_between", hint["stream"], first, last)
        wanted = {int(p) for (p,) in rows}
        events = []
        async for page in store.read_all_pages(first - 1, spec, raw=True):
            events += [e for e in page if e.position in wanted]
            if page[-1].position >= last:
                break
        return events

    def _spawn(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("event-stream roster: %s", task.exception())
