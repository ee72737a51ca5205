"""Managed event streams on every store: the lifecycle, webhook delivery in order with
Standard Webhooks signatures, retries, throttling, block and skip (parking), 410, the
checkpoint over filtered-out stretches, and a restart keeping started streams started."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import msgspec
import pytest
import standardwebhooks

import tidings
from tests.receiver import Answer, Receiver, receiving
from tidings import NewEvent
from tidings.delivery.definitions import Defaults, Definition, Webhook
from tidings.delivery.dispatcher import Dispatcher
from tidings.delivery.streams import EventStreams
from tidings.errors import AlreadyExists, InvalidInput, NotFound
from tidings.store.base import StoreFront

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)
FAST = Defaults(
    batch_size=10,
    batch_timeout=0.02,
    retry_timeout=0.4,
    blocked_retry_delay=0.1,
    retry_first=0.01,
    retry_max=0.05,
    lease_ttl=1.0,
)


def hook(url: str, **options: object) -> Definition:
    return msgspec.convert(
        {"name": "orders", "type": "webhook", "webhook": {"url": url}, **options}, Definition
    )


async def fill(store: tidings.EventStore, count: int, stream: str = "order-1") -> None:
    await store.append(stream, [NewEvent("Placed", {"n": n}) for n in range(count)])


def streams_on(store: tidings.EventStore, defaults: Defaults = FAST) -> EventStreams:
    assert isinstance(store, StoreFront)
    return EventStreams(store, defaults, allow=LOOPBACK)


async def until(check: object, timeout: float = 10.0) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while not await check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


# -- lifecycle -----------------------------------------------------------------------


async def test_a_stream_is_created_found_by_name_and_id_and_listed(
    store: tidings.EventStore,
) -> None:
    streams = streams_on(store)
    created = await streams.create(hook("http://example.com/a"))
    assert created.created and created.secret is not None and created.secret.startswith("whsec_")
    info = created.stream
    assert (info.name, info.type, info.status) == ("orders", "webhook", "started")
    assert (await streams.get("orders")).id == info.id
    assert (await streams.get(info.id)).name == "orders"
    assert (await streams.get(info.id.upper())).name == "orders"
    assert info.definition.webhook is not None and info.definition.webhook.secret is None
    await streams.create(msgspec.structs.replace(hook("http://example.com/b"), name="audit"))
    await streams.create(
        msgspec.structs.replace(hook("http://example.com/c"), name="zeta"), started=False
    )
    assert [s.name for s in await streams.list()] == ["audit", "orders", "zeta"]
    assert [s.name for s in await streams.list(status="stopped")] == ["zeta"]
    assert [s.name for s in await streams.list(after="audit", limit=1)] == ["orders"]
    assert [s.name for s in await streams.list(name="orders")] == ["orders"]
    with pytest.raises(NotFound):
        await streams.get("nothing")


async def test_a_taken_name_is_refused_unless_upserted(store: tidings.EventStore) -> None:
    streams = streams_on(store)
    first = await streams.create(hook("http://example.com/a"))
    with pytest.raises(AlreadyExists):
        await streams.create(hook("http://example.com/b"))
    again = await streams.create(hook("http://example.com/b", batch_size=7), upsert=True)
    assert not again.created and again.secret is None
    assert again.stream.id == first.stream.id
    assert again.stream.definition.batch_size == 7


async def test_update_merges_and_null_goes_back_to_the_default(store: tidings.EventStore) -> None:
    streams = streams_on(store)
    await streams.create(hook("http://example.com/a", batch_size=5, error_handling="skip"))
    info = await streams.update("orders", {"batch_size": None, "webhook": {"timeout": 3}})
    assert info.definition.batch_size is None
    assert info.definition.error_handling == "skip"
    assert info.definition.webhook == Webhook(url="http://example.com/a", timeout=3)
    with pytest.raises(InvalidInput):
        await streams.update("orders", {"batch_size": 0})


async def test_start_stop_reset_and_delete(store: tidings.EventStore) -> None:
    await fill(store, 5)
    streams = streams_on(store)
    info = (await streams.create(hook("http://example.com/a"), started=False)).stream
    assert info.status == "stopped" and info.stats.checkpoint == 0 and info.stats.lag == 5
    assert (await streams.start("orders")).status == "started"
    assert (await streams.stop("orders")).status == "stopped"
    assert (await streams.reset("orders", 3)).stats.checkpoint == 3
    with pytest.raises(InvalidInput, match="past the head"):
        await streams.reset("orders", 6)
    assert (await streams.reset("orders")).stats.checkpoint == 0
    await streams.delete("orders")
    with pytest.raises(NotFound):
        await streams.get(info.id)
    assert await streams.list() == []


async def test_initial_position_end_starts_at_the_head(store: tidings.EventStore) -> None:
    await fill(store, 4)
    streams = streams_on(store)
    info = (await streams.create(hook("http://example.com/a", initial_position="end"))).stream
    assert info.stats.checkpoint == 4


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"filter": {"stream_pattern": "order-("}}, "regular expression"),
        ({"webhook": {"url": "http://example.com/", "tls": "nope"}}, "TLS setting"),
        ({"webhook": {"url": "http://example.com/", "method": "GET"}}, "method"),
        ({"webhook": {"url": "ftp://example.com/"}}, "http or https"),
        ({"webhook": {"url": "http://127.0.0.1:1/"}, "name": "x"}, None),
        ({"webhook": {"url": "http://10.0.0.1/"}}, "may not"),
        ({"name": "0b7e7f0e-1d7a-4c1b-9a0e-5c7d3f1e2a4b"}, "UUID"),
        ({"webhook": {"url": "http://example.com/", "headers": {"webhook-id": "x"}}}, "tidings"),
        ({"webhook": {"url": "http://example.com/", "secret": "whsec_short"}}, "secret"),
    ],
)
async def test_bad_definitions_are_refused_and_nothing_is_stored(
    store: tidings.EventStore, change: dict[str, object], problem: str | None
) -> None:
    streams = streams_on(store)
    definition = msgspec.convert(
        {"name": "orders", "type": "webhook", "webhook": {"url": "http://x.example/"}, **change},
        Definition,
    )
    if problem is None:  # loopback is on this test's allowlist
        await streams.create(definition)
        return
    with pytest.raises(InvalidInput, match=problem):
        await streams.create(definition)
    assert await streams.list() == []


@pytest.mark.parametrize("size", [0, 10_001])
def test_a_batch_size_out_of_bounds_does_not_decode(size: int) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"name": "a", "type": "webhook", "batch_size": size}, Definition)


# -- delivery ------------------------------------------------------------------------


@asynccontextmanager
async def running(
    store: tidings.EventStore, receiver: Receiver, defaults: Defaults = FAST, **options: object
) -> AsyncIterator[tuple[EventStreams, str]]:
    """A stream to ``receiver`` (its API and secret), run by a dispatcher while inside."""
    streams = streams_on(store, defaults)
    created = await streams.create(hook(receiver.url, **options))
    assert created.secret is not None
    async with Dispatcher(streams):
        yield streams, created.secret


async def test_batches_arrive_in_order_signed_and_the_checkpoint_follows(
    store: tidings.EventStore,
) -> None:
    await fill(store, 25)
    async with receiving() as receiver, running(store, receiver) as (streams, secret):
        await receiver.wait_for(25)
        await fill(store, 5, "order-2")
        await receiver.wait_for(30)
        assert receiver.positions() == list(range(1, 31))
        verifier = standardwebhooks.Webhook(secret)
        for request in receiver.requests:
            verifier.verify(request.body, request.headers)
            batch = request.batch
            assert len(batch["events"]) <= 10 and batch["stream"] == "orders"
            assert request.headers["webhook-id"] == batch["batch_id"]
        numbers = [r.batch["batch_number"] for r in receiver.requests]
        assert numbers == list(range(1, len(numbers) + 1))
        event = receiver.requests[0].batch["events"][0]
        assert (event["data"], event["metadata"], event["type"]) == ({"n": 0}, {}, "Placed")
        assert set(event) == {"id", "stream", "type", "data", "metadata", "version",
                              "position", "time"}  # fmt: skip

        async def caught_up() -> bool:
            return (await streams.get("orders")).stats.checkpoint == 30

        await until(caught_up)
        stats = (await streams.get("orders")).stats
        assert stats.delivered == 30 and stats.lag == 0 and stats.attempts == stats.batches

        async def complete() -> bool:
            return (await streams.get("orders")).stats.status == "complete"

        await until(complete)


async def test_failures_are_retried_with_the_same_id_and_nothing_is_lost(
    store: tidings.EventStore,
) -> None:
    await fill(store, 12)
    async with receiving() as receiver:
        receiver.answer(Answer(500), Answer(503), Answer(302, {"location": "http://127.0.0.1:1/"}))
        async with running(store, receiver) as (streams, _):
            await receiver.wait_for(12)
            first_ids = [r.headers["webhook-id"] for r in receiver.requests[:4]]
            assert len(set(first_ids)) == 1  # three failures, then the same batch lands
            assert receiver.positions() == list(range(1, 13))
            attempts = await streams.attempts("orders")
            assert [a.outcome for a in reversed(attempts)][:4] == [
                "failed", "throttled", "failed", "delivered"
            ]  # fmt: skip
            assert attempts[-1].status_code == 500 and attempts[-1].response == "ok"


async def test_retry_after_is_honoured(store: tidings.EventStore) -> None:
    await fill(store, 1)
    async with receiving() as receiver:
        receiver.answer(Answer(429, {"retry-after": "1"}))
        defaults = msgspec.structs.replace(FAST, retry_timeout=5.0)
        async with running(store, receiver, defaults) as (_, _):
            await receiver.wait_for(1)
            first, second = receiver.requests[:2]
            assert second.at - first.at >= 0.95


async def test_gone_stops_the_stream_with_the_reason(store: tidings.EventStore) -> None:
    await fill(store, 3)
    async with receiving() as receiver:
        receiver.answer(Answer(410))
        async with running(store, receiver) as (streams, _):

            async def stopped() -> bool:
                return (await streams.get("orders")).status == "stopped"

            await until(stopped)
            info = await streams.get("orders")
            assert info.reason is not None and "410" in info.reason
            assert info.stats.checkpoint == 0
            await asyncio.sleep(0.2)
            assert len(receiver.requests) == 1


async def test_skip_parks_a_failing_batch_and_goes_on(store: tidings.EventStore) -> None:
    await fill(store, 3)
    async with receiving() as receiver:
        receiver.answer(*[Answer(500)] * 1000)
        async with running(store, receiver, error_handling="skip") as (streams, _):
            await until(lambda: _parked(streams, 3))
            receiver.script.clear()
            await fill(store, 2, "order-2")
            await receiver.wait_for(2)
            assert receiver.positions() == [4, 5]
            parked = await streams.parked("orders")
            assert [p.position for p in parked] == [1, 2, 3]
            assert "HTTP 500" in parked[0].reason
            assert (await streams.get("orders")).stats.parked == 3


async def _parked(streams: EventStreams, count: int) -> bool:
    return len(await streams.parked("orders")) == count


async def test_block_holds_the_batch_until_it_lands(store: tidings.EventStore) -> None:
    await fill(store, 3)
    async with receiving() as receiver:
        receiver.answer(*[Answer(500)] * 1000)
        async with running(store, receiver) as (streams, _):

            async def blocked() -> bool:
                return (await streams.get("orders")).stats.status == "blocked"

            await until(blocked)
            assert (await streams.get("orders")).stats.checkpoint == 0
            receiver.script.clear()
            await receiver.wait_for(3)
            assert receiver.positions() == [1, 2, 3]
            assert await streams.parked("orders") == []


async def test_a_filtered_out_stretch_moves_the_checkpoint(store: tidings.EventStore) -> None:
    await fill(store, 2, "order-1")
    await fill(store, 30, "invoice-1")
    async with (
        receiving() as receiver,
        running(store, receiver, filter={"categories": ["order"]}) as (streams, _),
    ):
        await receiver.wait_for(2)

        async def passed() -> bool:
            return (await streams.get("orders")).stats.checkpoint == 32

        await until(passed)
        assert receiver.positions() == [1, 2]


@pytest.mark.durable
async def test_started_streams_start_again_with_the_server(store_url: str) -> None:
    async with receiving() as receiver:
        async with await tidings.connect(store_url) as store:
            await fill(store, 3)
            async with running(store, receiver):
                await receiver.wait_for(3)
        async with await tidings.connect(store_url) as store:
            await fill(store, 2, "order-2")
            streams = streams_on(store)
            async with Dispatcher(streams):
                await receiver.wait_for(5)
        assert receiver.positions() == [1, 2, 3, 4, 5]


async def test_a_stream_deleted_while_running_stops_delivering(store: tidings.EventStore) -> None:
    await fill(store, 3)
    async with receiving() as receiver:
        streams = streams_on(store)
        await streams.create(hook(receiver.url))
        dispatcher = Dispatcher(streams)
        await dispatcher.start()
        try:
            await receiver.wait_for(3)
            await streams.delete("orders")
            assert "orders" not in [s.name for s in await streams.list()]
            await fill(store, 3, "order-2")
            await asyncio.sleep(0.3)
            assert receiver.positions() == [1, 2, 3]
            assert dispatcher.runners == {}
        finally:
            await dispatcher.close()


async def test_a_rotated_secret_signs_beside_the_old_one(store: tidings.EventStore) -> None:
    await fill(store, 1)
    async with receiving() as receiver, running(store, receiver) as (streams, old):
        await receiver.wait_for(1)
        new = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk="
        definition = hook(receiver.url)
        assert definition.webhook is not None
        rotated = msgspec.structs.replace(
            definition, webhook=msgspec.structs.replace(definition.webhook, secret=new)
        )
        await streams.replace("orders", rotated)
        await fill(store, 1, "order-2")
        await receiver.wait_for(2)
        last = receiver.requests[-1]
        standardwebhooks.Webhook(old).verify(last.body, last.headers)
        standardwebhooks.Webhook(new).verify(last.body, last.headers)
        assert len(last.headers["webhook-signature"].split(" ")) == 2


async def test_a_webhook_on_a_refused_address_is_never_contacted(
    store: tidings.EventStore,
) -> None:
    await fill(store, 1)
    async with receiving() as receiver:
        assert isinstance(store, StoreFront)
        streams = EventStreams(store, FAST)  # no allowlist: loopback is refused
        url = receiver.url.replace("127.0.0.1", "localhost")
        await streams.create(hook(url))
        async with Dispatcher(streams):

            async def failed() -> bool:
                return bool(await streams.attempts("orders"))

            await until(failed)
        attempt = (await streams.attempts("orders"))[0]
        assert attempt.outcome == "failed" and attempt.error is not None
        assert "loopback" in attempt.error
        assert receiver.requests == []


async def test_a_redefinition_with_a_batch_in_flight_skips_nothing(
    store: tidings.EventStore,
) -> None:
    await fill(store, 30)
    async with receiving() as receiver:
        receiver.answer(*[Answer(500)] * 1000)
        defaults = msgspec.structs.replace(FAST, batch_size=20, retry_timeout=30.0)
        async with running(store, receiver, defaults) as (streams, _):

            async def failing() -> bool:
                return len(receiver.requests) >= 2

            await until(failing)
            await streams.update("orders", {"batch_size": 5})
            receiver.script.clear()

            async def all_arrived() -> bool:
                return set(receiver.positions()) == set(range(1, 31))

            await until(all_arrived)
            assert receiver.positions() == sorted(receiver.positions())


async def test_a_range_is_redelivered_without_moving_the_checkpoint(
    store: tidings.EventStore,
) -> None:
    await fill(store, 12)
    async with receiving() as receiver, running(store, receiver) as (streams, _):
        await receiver.wait_for(12)
        await until(lambda: _checkpoint(streams, 12))
        first_ids = {r.headers["webhook-id"] for r in receiver.requests}
        with pytest.raises(InvalidInput, match="past the checkpoint"):
            await streams.redeliver("orders", 5, 13)
        await streams.redeliver("orders", 3, 7)
        await receiver.wait_for(17)
        again = receiver.requests[len(first_ids) :]
        assert [e["position"] for r in again for e in r.batch["events"]] == [3, 4, 5, 6, 7]
        assert not first_ids & {r.headers["webhook-id"] for r in again}
        await fill(store, 1, "order-2")
        await receiver.wait_for(18)
        assert receiver.positions()[-1] == 13
        assert (await streams.get("orders")).stats.checkpoint >= 12
        attempts = await streams.attempts("orders")
        assert sum(a.redelivery for a in attempts) == 1


async def _checkpoint(streams: EventStreams, position: int) -> bool:
    return (await streams.get("orders")).stats.checkpoint == position


async def test_parked_events_are_redelivered_and_parked_no_more(
    store: tidings.EventStore,
) -> None:
    await fill(store, 3)
    async with receiving() as receiver:
        receiver.answer(*[Answer(500)] * 1000)
        async with running(store, receiver, error_handling="skip") as (streams, _):
            await until(lambda: _parked(streams, 3))
            receiver.script.clear()
            await streams.redeliver("orders", 1, 100, parked=True)
            await receiver.wait_for(3)
            assert receiver.positions() == [1, 2, 3]
            await until(lambda: _parked(streams, 0))
            assert (await streams.get("orders")).stats.parked == 0


async def test_a_named_proxy_carries_the_post_and_judges_the_target(
    store: tidings.EventStore,
) -> None:
    await fill(store, 2)
    async with receiving() as proxy:  # it plays the proxy: it answers what it is sent
        assert isinstance(store, StoreFront)
        streams = EventStreams(store, FAST, proxies={"egress": proxy.url.rsplit("/", 1)[0]})
        target = "http://receiver.invalid/hook"  # a name no resolver here knows
        await streams.create(hook(target, webhook={"url": target, "proxy": "egress"}))
        with pytest.raises(InvalidInput, match="proxy 'nope'"):
            await streams.create(
                hook(target, name="other", webhook={"url": target, "proxy": "nope"})
            )
        async with Dispatcher(streams):
            await proxy.wait_for(2)
        assert proxy.requests[0].headers["Host"] == "receiver.invalid"
        assert proxy.positions() == [1, 2]


async def test_the_batch_in_flight_keeps_its_number_and_id_after_a_redelivery(
    store: tidings.EventStore,
) -> None:
    await fill(store, 3)
    async with receiving() as receiver, running(store, receiver) as (streams, _):
        await receiver.wait_for(3)
        await until(lambda: _checkpoint(streams, 3))
        receiver.answer(*[Answer(500)] * 1000)
        await fill(store, 1, "order-2")
        await until(lambda: _has_requests(receiver, 2))
        held = receiver.requests[-1]
        await streams.redeliver("orders", 1, 2)  # restarts the runner: it goes first
        await until(lambda: _redelivered(streams))
        seen = len(receiver.requests)
        await streams.stop("orders")  # a new runner reads the batch in flight back
        await streams.start("orders")
        await until(lambda: _has_requests(receiver, seen + 1))
        receiver.script.clear()
        await until(lambda: _checkpoint(streams, 4))
        again = [r for r in receiver.requests if r.batch["events"][0]["position"] == 4]
        assert {r.headers["webhook-id"] for r in again} == {held.headers["webhook-id"]}
        assert {r.batch["batch_number"] for r in again} == {held.batch["batch_number"]}
        redelivered = [r for r in receiver.requests if r.batch["events"][0]["position"] == 1]
        ids = {r.headers["webhook-id"] for r in redelivered}
        assert ids and held.headers["webhook-id"] not in ids


async def _redelivered(streams: EventStreams) -> bool:
    return any(a.redelivery for a in await streams.attempts("orders"))


async def _has_requests(receiver: Receiver, count: int) -> bool:
    return len(receiver.requests) >= count


async def test_a_stream_failing_for_disable_after_is_stopped_with_the_reason(
    store: tidings.EventStore,
) -> None:
    await fill(store, 2)
    defaults = msgspec.structs.replace(FAST, retry_timeout=30.0, disable_after=0.3)
    async with receiving() as receiver:
        receiver.answer(*[Answer(503)] * 1000)
        async with running(store, receiver, defaults) as (streams, _):

            async def stopped() -> bool:
                return (await streams.get("orders")).status == "stopped"

            await until(stopped)
            info = await streams.get("orders")
            assert info.reason is not None and "failing without a break" in info.reason
            assert info.stats.checkpoint == 0 and info.stats.failures >= 1
            seen = len(receiver.requests)
            await asyncio.sleep(0.3)
            assert len(receiver.requests) == seen  # a stopped stream posts nothing more
