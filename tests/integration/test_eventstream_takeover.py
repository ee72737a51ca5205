"""A webhook event stream across SIGKILL of the node running it: another node takes it
over within the lease period, the receiver gets every event in order, and only the
batch in flight at the kill comes twice, with the same ``webhook-id`` and number."""

from __future__ import annotations

import asyncio
import ipaddress
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
import standardwebhooks

import tidings
from tests.receiver import Answer, Received, Receiver, receiving
from tidings.delivery.definitions import Defaults, Definition
from tidings.delivery.streams import EventStreams
from tidings.store.base import StoreFront

pytestmark = [pytest.mark.slow, pytest.mark.durable]

SCRIPT = Path(__file__).with_name("eventstream_node.py")
TOTAL = 300
BATCH = 20
LEASE_TTL = 1.5
KILLS = 2
FAST_BEFORE_SLOW = 3
"""Batches answered at once before the one held in flight until the kill."""
HOLD = 1.5 * LEASE_TTL
"""How long the running node is kept waiting on a batch before it is killed: longer
than a lease, so a standby that ignored a live lease would have taken over by then."""
DEFAULTS = Defaults(
    batch_size=BATCH,
    batch_timeout=0.02,
    retry_first=0.01,
    retry_max=0.05,
    webhook_timeout=10.0,
    lease_ttl=LEASE_TTL,
)


class Node:
    """A dispatcher in a child process."""

    def __init__(self, proc: asyncio.subprocess.Process, node_id: str) -> None:
        self.proc = proc
        self.node_id = node_id

    @classmethod
    async def start(cls, url: str, node_id: str) -> Node:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(SCRIPT), url, node_id,
            msgspec.json.encode(DEFAULTS).decode(),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        return cls(proc, node_id)

    async def ready(self) -> None:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
        if line.strip() != b"ready":
            stderr = await self.proc.stderr.read() if self.proc.stderr else b""
            raise AssertionError(f"node {self.node_id} did not start: {stderr.decode()}")

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()


def header(request: Received, name: str) -> str:
    return {k.lower(): v for k, v in request.headers.items()}[name]


async def until(check: Callable[[], bool], timeout: float, what: str) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout} s: {what}")
        await asyncio.sleep(0.01)


async def requests(receiver: Receiver, count: int, timeout: float) -> None:  # noqa: ASYNC109
    """Until the receiver has seen ``count`` requests."""
    await until(lambda: len(receiver.requests) >= count, timeout, f"{count} requests")


async def preload(store: tidings.EventStore) -> None:
    for start in range(0, TOTAL, 100):
        await store.append(
            f"order-{start}", [tidings.NewEvent("Placed", {"n": n}) for n in range(100)]
        )


async def owner(streams: EventStreams) -> str | None:
    return (await streams.get("orders")).stats.node


async def test_a_stream_outlives_sigkill_of_its_node_repeating_only_the_batch_in_flight(
    store_url: str,
) -> None:
    store = await tidings.connect(store_url)
    assert isinstance(store, StoreFront)
    nodes: dict[str, Node] = {}
    async with store, receiving() as receiver:
        await preload(store)
        streams = EventStreams(store, DEFAULTS, allow=(ipaddress.ip_network("127.0.0.0/8"),))
        definition = msgspec.convert(
            {"name": "orders", "type": "webhook", "webhook": {"url": receiver.url}}, Definition
        )
        created = await streams.create(definition)
        assert created.secret is not None
        try:
            kills, takeovers = await kill_running_nodes(store_url, streams, receiver, nodes)
            await until(
                lambda: (
                    {p for r in receiver.requests for p in positions(r)} >= set(range(1, TOTAL + 1))
                ),
                15,
                "every event delivered",
            )
            info = await streams.get("orders")
            for _ in range(200):  # the last batch's checkpoint is written after its answer
                if info.stats.checkpoint == TOTAL:
                    break
                await asyncio.sleep(0.02)
                info = await streams.get("orders")
            assert info.stats.checkpoint == TOTAL
            alive = {n for n, node in nodes.items() if node.proc.returncode is None}
            assert info.stats.node in alive
        finally:
            for node in nodes.values():
                await node.kill()
        seen = list(receiver.requests)

    check_deliveries(seen, kills, created.secret)
    # another node takes the stream over once the dead node's lease runs out: a lease
    # period at most, one round of the taker's (a third of it), and slack for a busy
    # machine
    assert max(takeovers) < LEASE_TTL + LEASE_TTL / 3 + 1.5, takeovers


async def kill_running_nodes(
    url: str, streams: EventStreams, receiver: Receiver, nodes: dict[str, Node]
) -> tuple[list[int], list[float]]:
    """Kill the node running the stream KILLS times, each while the receiver holds a
    batch; two nodes run at any time. The request indexes of the batches in flight at
    the kills, and the seconds from each kill to the batch's second arrival."""

    async def spawn() -> None:
        node_id = f"node-{len(nodes)}"
        nodes[node_id] = node = await Node.start(url, node_id)
        await node.ready()

    slow = Answer(delay=HOLD + 1.0)  # answered after the kill, to no one
    receiver.answer(*[Answer()] * FAST_BEFORE_SLOW, slow)
    first = FAST_BEFORE_SLOW
    await spawn()
    await requests(receiver, 1, 20)
    await spawn()  # a standby
    kills: list[int] = []
    takeovers: list[float] = []
    for kill in range(KILLS):
        held = first
        await requests(receiver, held + 1, 20)
        await asyncio.sleep(receiver.requests[held].at + HOLD - time.monotonic())
        # while a node runs the stream (and renews its lease), nobody else sends
        sent = len(receiver.requests)
        assert sent == held + 1, f"{sent - held - 1} requests while the batch was held"
        running = await owner(streams)
        assert running is not None and nodes[running].proc.returncode is None
        # the batch again and the next ones at once; then one held for the next kill
        last = kill == KILLS - 1
        receiver.answer(*[Answer()] * (1 + FAST_BEFORE_SLOW), *([] if last else [slow]))
        killed_at = time.monotonic()
        await nodes[running].kill()
        kills.append(held)
        await requests(receiver, held + 2, 10)  # the batch again: the take-over
        takeovers.append(receiver.requests[held + 1].at - killed_at)
        taker = await owner(streams)
        assert taker is not None and taker != running
        first = held + 2 + FAST_BEFORE_SLOW
        await spawn()  # the next standby
    return kills, takeovers


def positions(request: Received) -> list[int]:
    return [e["position"] for e in request.batch["events"]]


def check_deliveries(requests: list[Received], kills: list[int], secret: str) -> None:
    verifier = standardwebhooks.Webhook(secret)
    for request in requests:  # whichever node sent it signed it with the stream's key
        verifier.verify(request.body, request.headers)
    # the batch in flight at each kill came again first: the same id, number and events
    for held in kills:
        first, again = requests[held], requests[held + 1]
        assert header(again, "webhook-id") == header(first, "webhook-id")
        assert again.batch == first.batch
    repeats = {held + 1 for held in kills}
    distinct = [r for i, r in enumerate(requests) if i not in repeats]
    # nothing else came twice, and the log arrived in order, batch after batch
    numbers = [r.batch["batch_number"] for r in distinct]
    assert numbers == list(range(1, len(distinct) + 1))
    ids = [header(r, "webhook-id") for r in distinct]
    assert len(set(ids)) == len(ids)
    assert [r.batch["batch_id"] for r in distinct] == ids
    assert [p for r in distinct for p in positions(r)] == list(range(1, TOTAL + 1))
