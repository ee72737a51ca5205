"""Websocket event streams on ``/ws`` in FireFly's wire format, against a real server,
with plain ``websockets`` clients that ask for no subprotocol (as FireFly's do):
``load_balance`` round robin over three consumers, a batch in flight on a consumer that
drops or nacks going to another with the same number and id, ``broadcast`` to three,
and refusals for streams that are not there or not websocket streams."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect

from tests.gateway.conftest import append, category, http_client, ws_url
from tests.served import Served

WAIT = 5.0


def definition(name: str, cat: str, **websocket: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": "websocket",
        "filter": {"categories": [cat]},
        "batch_size": 5,
        "batch_timeout": 0.02,
        "websocket": {"ack_timeout": 1.0, **websocket},
    }


@asynccontextmanager
async def consumers(server: Served, stream: str, count: int) -> AsyncIterator[list[Consumer]]:
    async with AsyncExitStack() as stack:
        found = []
        for _ in range(count):
            ws = await stack.enter_async_context(ws_connect(ws_url(server), open_timeout=WAIT))
            consumer = Consumer(ws)
            await consumer.start(stream)
            found.append(consumer)
        yield found


class Consumer:
    """A FireFly-style consumer: start, then event_batch messages to ack or nack."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def start(self, stream: str) -> None:
        await self.ws.send(json.dumps({"type": "start", "stream": stream}))

    async def batch(self, wait: float = WAIT) -> dict[str, Any]:
        """The next event_batch (the gateway's ``ready`` and other messages skipped)."""
        async with asyncio.timeout(wait):
            while True:
                message = json.loads(await self.ws.recv())
                if message["type"] == "event_batch":
                    return message  # type: ignore[no-any-return]
                assert message["type"] in ("ready",), message

    async def answer(self, batch: dict[str, Any], kind: str = "ack", **more: Any) -> None:
        reply = {"type": kind, "stream": batch["stream"], "batchNumber": batch["batchNumber"]}
        await self.ws.send(json.dumps({**reply, **more}))


async def make(http: httpx.AsyncClient, body: dict[str, Any]) -> None:
    made = await http.post("/eventstreams", json=body)
    assert made.status_code == 201, made.text


async def acking(consumer: Consumer, into: list[dict[str, Any]]) -> None:
    """Take and ack batches until cancelled."""
    while True:
        batch = await consumer.batch(wait=30)
        into.append(batch)
        await consumer.answer(batch)


@asynccontextmanager
async def all_acking(found: list[Consumer]) -> AsyncIterator[list[list[dict[str, Any]]]]:
    """Each consumer of ``found`` takes and acks batches inside the block; what each got."""
    got: list[list[dict[str, Any]]] = [[] for _ in found]
    readers = [asyncio.create_task(acking(c, g)) for c, g in zip(found, got, strict=True)]
    try:
        yield got
    finally:
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)


async def until_delivered(http: httpx.AsyncClient, stream: str, count: int) -> None:
    for _ in range(200):
        if (await http.get(f"/eventstreams/{stream}")).json()["stats"]["delivered"] >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{stream}: {count} events not delivered in time")


async def test_load_balance_hands_each_batch_to_one_consumer_round_robin(
    main_server: Served,
) -> None:
    cat = category()
    async with http_client(main_server) as http:
        await make(http, definition(cat, cat))
        async with consumers(main_server, cat, 3) as three, all_acking(three) as got:
            for n in range(6):  # one batch at a time: each lands before the next
                await append(http, f"{cat}-1", 5, n=n)
                await until_delivered(http, cat, 5 * (n + 1))
        numbers = sorted(b["batchNumber"] for g in got for b in g)
        assert numbers == list(range(1, 7))  # every batch to exactly one consumer
        assert all(len(g) == 2 for g in got), [len(g) for g in got]  # round robin
        positions = sorted(e["position"] for g in got for b in g for e in b["events"])
        assert len(set(positions)) == 30


async def test_a_batch_in_flight_on_a_consumer_that_drops_goes_to_another_unchanged(
    main_server: Served,
) -> None:
    cat = category()
    async with http_client(main_server) as http:
        await make(http, definition(cat, cat))
        async with consumers(main_server, cat, 1) as [first]:
            await append(http, f"{cat}-1", 3)
            held = await first.batch()
            await first.ws.close()
        async with consumers(main_server, cat, 1) as [second]:
            again = await second.batch()
            assert again["batchNumber"] == held["batchNumber"]
            assert again["batchId"] == held["batchId"]
            assert again["events"] == held["events"]
            await second.answer(again)
            attempts = (await http.get(f"/eventstreams/{cat}/attempts")).json()["items"]
            assert attempts[-1]["error"] == "left: the consumer disconnected"


async def test_a_nacked_or_unanswered_batch_comes_again_with_the_same_number(
    main_server: Served,
) -> None:
    cat = category()
    async with http_client(main_server) as http:
        await make(http, definition(cat, cat))
        async with consumers(main_server, cat, 1) as [consumer]:
            await append(http, f"{cat}-1", 2)
            first = await consumer.batch()
            await consumer.answer(first, "nack", message="not now")
            second = await consumer.batch()
            assert (second["batchNumber"], second["batchId"]) == (
                first["batchNumber"], first["batchId"]
            )  # fmt: skip
            third = await consumer.batch(wait=4.0)  # no answer: back after ack_timeout
            assert third["batchId"] == first["batchId"]
            await consumer.answer(third)
            await append(http, f"{cat}-1", 1)
            fourth = await consumer.batch()
            assert fourth["batchNumber"] == first["batchNumber"] + 1
            attempts = (await http.get(f"/eventstreams/{cat}/attempts")).json()["items"]
            errors = [a["error"] for a in reversed(attempts)][:2]
            assert errors == ["nack: not now", "no ack within 1 s"]


async def test_broadcast_gives_every_consumer_every_batch(main_server: Served) -> None:
    cat = category()
    async with http_client(main_server) as http:
        await make(http, definition(cat, cat, distribution="broadcast"))
        async with consumers(main_server, cat, 3) as three, all_acking(three) as got:
            await append(http, f"{cat}-1", 12)
            await until_delivered(http, cat, 12)
        for each in got:
            positions = [e["position"] for b in each for e in b["events"]]
            assert positions == sorted(positions) and len(set(positions)) == 12
            assert [b["batchNumber"] for b in each] == list(range(1, len(each) + 1))


async def test_start_refuses_unknown_and_webhook_streams(main_server: Served) -> None:
    cat = category()
    async with http_client(main_server) as http:
        hook = {"name": cat, "type": "webhook", "webhook": {"url": "http://example.com/h"}}
        await make(http, {**hook, "initial_position": "end"})
        await http.post(f"/eventstreams/{cat}/stop")
    async with ws_connect(ws_url(main_server), open_timeout=WAIT) as ws:
        for stream, code in [("nothing-here", "unknown_stream"), (cat, "not_websocket")]:
            await ws.send(json.dumps({"type": "start", "stream": stream}))
            async with asyncio.timeout(WAIT):
                while True:
                    message = json.loads(await ws.recv())
                    if message["type"] == "error":
                        break
            assert message["error"] == code, message


async def test_without_wait_batches_nobody_takes_are_dropped_and_recorded(
    main_server: Served,
) -> None:
    cat = category()
    async with http_client(main_server) as http:
        await make(http, definition(cat, cat, wait=False))
        async with consumers(main_server, cat, 1) as [consumer]:
            await append(http, f"{cat}-1", 2)
            first = await consumer.batch()
            await consumer.answer(first)
            await until_delivered(http, cat, 2)
        await append(http, f"{cat}-1", 3)  # nobody attached now: dropped, not waited for
        for _ in range(200):
            info = (await http.get(f"/eventstreams/{cat}")).json()
            if info["stats"]["checkpoint"] >= info["stats"]["highest_detected"]:
                break
            await asyncio.sleep(0.05)
        attempts = (await http.get(f"/eventstreams/{cat}/attempts")).json()["items"]
        assert attempts[0]["error"] == "no consumer: dropped"
        assert attempts[0]["outcome"] == "delivered"
