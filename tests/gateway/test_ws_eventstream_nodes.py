"""Websocket event streams across nodes: two ``tidings serve`` on one PostgreSQL and one
NATS, FireFly-style consumers on both. ``load_balance`` over three consumers on two
nodes gives each its turn; ``broadcast`` gives all three every batch; a batch in
flight on another node's consumer that drops, or on a node that is SIGKILLed, goes to
another consumer with the same number and id."""

from __future__ import annotations

import asyncio
import asyncio.subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect as ws_connect

from tests.conftest import POSTGRES_URL, pg_execute, require_postgres, require_service, with_option
from tests.gateway.harness import Server, signal
from tests.gateway.test_ws_eventstreams import (
    Consumer,
    acking,
    all_acking,
    definition,
    make,
    until_delivered,
)

pytestmark = [pytest.mark.postgres, pytest.mark.nats]

WAIT = 10.0
SETTINGS = {"TIDINGS_EVENTSTREAMS__LEASE_TTL": "1.5"}


@pytest.fixture(scope="module")
def nodes() -> Iterator[list[Server]]:
    """Two nodes on a schema of their own (the first migrates it alone), and a third
    that runs no event streams (``[eventstreams] enabled = false``)."""
    require_postgres()
    nats = require_service("nats")
    schema = "t_" + uuid.uuid4().hex[:16]
    url = with_option(POSTGRES_URL, "schema", schema)
    started = [Server(url, SETTINGS, "--notify", nats)]
    try:
        started.append(Server(url, SETTINGS, "--notify", nats))
        off = {**SETTINGS, "TIDINGS_EVENTSTREAMS__ENABLED": "false"}
        started.append(Server(url, off, "--notify", nats))
        yield started
    finally:
        for node in started:
            if node.process is not None and node.process.process.poll() is None:
                node.stop(signal.SIGTERM)
        asyncio.run(pg_execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


@asynccontextmanager
async def admin(node: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=node.http, timeout=10) as client:
        yield client


@asynccontextmanager
async def attached(stream: str, *where: Server) -> AsyncIterator[list[Consumer]]:
    """A consumer of ``stream`` on each node of ``where``, in that order."""
    async with AsyncExitStack() as stack:
        found = []
        for node in where:
            ws = await stack.enter_async_context(ws_connect(node.ws, open_timeout=WAIT))
            consumer = Consumer(ws)
            await consumer.start(stream)
            found.append(consumer)
        yield found


async def append(http: httpx.AsyncClient, stream: str, count: int) -> None:
    body = {"events": [{"type": "T", "data": {"i": i}} for i in range(count)]}
    response = await http.post(f"/streams/{stream}/events", json=body)
    assert response.status_code == 201, response.text


def names(got: list[dict[str, Any]]) -> list[int]:
    return [b["batchNumber"] for b in got]


async def test_load_balance_gives_consumers_on_both_nodes_their_turns(
    nodes: list[Server],
) -> None:
    a, b, _ = nodes
    cat = "l" + uuid.uuid4().hex[:8]
    async with admin(a) as http:
        await make(http, definition(cat, cat))
        async with attached(cat, a, a, b) as three, all_acking(three) as got:
            sent = 0
            # Whichever node runs it, a consumer counts once that node has heard of it.
            async with asyncio.timeout(WAIT):
                while not got[2]:
                    await append(http, f"{cat}-1", 5)
                    sent += 5
                    await until_delivered(http, cat, sent)
            before = [len(g) for g in got]
            for _ in range(6):  # one batch at a time, each landing before the next
                await append(http, f"{cat}-1", 5)
                sent += 5
                await until_delivered(http, cat, sent)
        numbers = sorted(n for g in got for n in names(g))
        assert numbers == list(range(1, len(numbers) + 1))  # each batch to one consumer
        assert [len(g) - n for g, n in zip(got, before, strict=True)] == [2, 2, 2]
        positions = [e["position"] for g in got for batch in g for e in batch["events"]]
        assert len(positions) == len(set(positions)) == sent
        attempts = (await http.get(f"/eventstreams/{cat}/attempts")).json()["items"]
        assert len({a["consumer"].split("/")[0] for a in attempts}) == 2  # both nodes


async def test_broadcast_gives_three_consumers_on_two_nodes_every_batch(
    nodes: list[Server],
) -> None:
    a, b, _ = nodes
    cat = "b" + uuid.uuid4().hex[:8]
    async with admin(b) as http:
        await make(http, definition(cat, cat, distribution="broadcast"))
        async with attached(cat, a, b, b) as three:
            await asyncio.sleep(0.3)  # each node has announced its consumers
            async with all_acking(three) as got:
                for _ in range(4):
                    await append(http, f"{cat}-1", 3)
                await until_delivered(http, cat, 12)
    for each in got:
        positions = [e["position"] for batch in each for e in batch["events"]]
        assert len(positions) == len(set(positions)) == 12 and positions == sorted(positions)
        assert names(each) == list(range(1, len(each) + 1))


async def test_consumers_on_a_node_that_runs_no_streams_are_served_from_another(
    nodes: list[Server],
) -> None:
    a, _, off = nodes
    cat = "o" + uuid.uuid4().hex[:8]
    async with admin(a) as http:
        await make(http, definition(cat, cat, distribution="broadcast"))
        async with attached(cat, off, off) as two, all_acking(two) as got:
            for _ in range(3):
                await append(http, f"{cat}-1", 4)
            await until_delivered(http, cat, 12)
        info = (await http.get(f"/eventstreams/{cat}")).json()
    for each in got:
        assert sorted(e["position"] for batch in each for e in batch["events"]) == [
            e["position"] for batch in each for e in batch["events"]
        ]
        assert sum(len(batch["events"]) for batch in each) == 12
    assert info["stats"]["node"] is not None


async def hold_one_on(
    http: httpx.AsyncClient, cat: str, here: Consumer, there: Consumer
) -> dict[str, Any]:
    """Append until a batch goes to ``there`` (``here`` acks what it gets meanwhile);
    that batch, unanswered."""
    held = asyncio.create_task(there.batch(wait=WAIT))
    acks = asyncio.create_task(acking(here, []))
    try:
        async with asyncio.timeout(WAIT):
            while not held.done():
                await append(http, f"{cat}-1", 2)
                await asyncio.wait([held], timeout=0.3)
    finally:
        acks.cancel()
        await asyncio.gather(acks, return_exceptions=True)
    return held.result()


@pytest.mark.parametrize("fault", ["consumer drops", "node killed"])
async def test_a_batch_held_on_another_node_goes_on_unchanged_after_a_fault(
    nodes: list[Server], fault: str
) -> None:
    a, b, _ = nodes
    cat = "d" + uuid.uuid4().hex[:8]
    async with admin(a) as http:
        await make(http, definition(cat, cat))
        async with attached(cat, a) as [here]:
            await append(http, f"{cat}-1", 2)
            await here.answer(await here.batch())
            async with attached(cat, b) as [there]:
                held = await hold_one_on(http, cat, here, there)
                if fault == "consumer drops":  # b answers "left"
                    await there.ws.close()
                else:  # no answer (after ack_timeout), or a lease run out
                    await asyncio.to_thread(b.stop, signal.SIGKILL)
                again = await here.batch(wait=WAIT)
            assert (again["batchNumber"], again["batchId"]) == (
                held["batchNumber"], held["batchId"]
            )  # fmt: skip
            assert again["events"] == held["events"]
            await here.answer(again)
            await append(http, f"{cat}-1", 1)
            after = await here.batch()
            assert after["batchNumber"] == held["batchNumber"] + 1
            # Answered before the consumer goes: a batch still in flight when it leaves
            # would be recorded as "left" too, and hide what became of the held one.
            await here.answer(after)
            last = after["events"][-1]["position"]
            for _ in range(200):
                if (await http.get(f"/eventstreams/{cat}")).json()["stats"]["checkpoint"] >= last:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError(f"{cat}: the last batch never landed")
        attempts = (await http.get(f"/eventstreams/{cat}/attempts")).json()["items"]
        failed = {a["error"] for a in attempts if a["batch_number"] == held["batchNumber"]}
        failed.discard(None)
        if fault == "consumer drops":  # b's consumer went: b tells a's runner at once
            assert failed == {"left: the consumer disconnected"}, attempts
        else:
            # Either node may run the stream: a's runner gets no answer from b within
            # ack_timeout, or b ran it and a takes it over after its lease (nothing is
            # recorded of the attempt b was making). Never "left": nobody left.
            assert failed <= {"no ack within 1 s"}, attempts
            await asyncio.to_thread(b.start)
