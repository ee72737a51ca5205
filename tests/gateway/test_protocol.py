"""The ``tidings.v1`` WebSocket protocol as docs/protocol.md states it, against real
``tidings serve`` processes (auth off; auth is in test_ws_auth.py)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from tests.gateway.conftest import (
    Client,
    append,
    category,
    category_events,
    connect,
    head,
    http_client,
)
from tests.served import Served, served

pytestmark = pytest.mark.timeout(60)

EVENT_FIELDS = {"id", "stream", "type", "data", "metadata", "version", "position", "time"}


def positions(events: list[dict[str, Any]]) -> list[int]:
    return [e["position"] for e in events]


async def fenced(client: Client, sub: str, fence_stream: str) -> list[dict[str, Any]]:
    """``sub``'s events (auto acks) up to the one on ``fence_stream`` with ``fence`` set;
    the ones before it."""
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(5):
        while True:
            batch = await client.batch(sub)
            for event in batch["events"]:
                if event["stream"] == fence_stream and event["data"].get("fence"):
                    return got
                got.append(event)


# -- connecting ------------------------------------------------------------------------


async def test_offering_tidings_v1_selects_it_and_sends_ready(main_server: Served) -> None:
    async with connect(main_server) as one, connect(main_server) as two:
        assert one.ws.subprotocol == "tidings.v1"
        ready = await one.ready()
        assert set(ready) == {"type", "protocol", "address", "user", "expires", "store"}
        assert str(uuid.UUID(ready["store"])) == ready["store"]
        assert ready["protocol"] == "tidings.v1"
        assert ready["user"] is None and ready["expires"] is None
        assert set(ready["address"]) == {"node", "connection"}
        assert all(isinstance(v, str) and v for v in ready["address"].values())
        other = (await two.ready())["address"]
        assert other["node"] == ready["address"]["node"]  # the same server node
        assert other["connection"] != ready["address"]["connection"]


async def test_a_subscription_resuming_positions_of_another_store_is_told_to_start_over(
    main_server: Served,
) -> None:
    async with connect(main_server) as client:
        store = (await client.ready())["store"]
        other = str(uuid.uuid4())
        refused = await client.error(
            {"type": "subscribe", "id": 1, "sub": "s", "from_position": 3, "store": other},
            "store_changed",
        )
        assert store in refused["message"] and refused["id"] == 1
        same = await client.subscribe("s", from_position=0, store=store)
        assert same["store"] == store and same["position"] == 0
        await client.still_open()


async def test_a_client_offering_no_subprotocol_is_served(main_server: Served) -> None:
    async with connect(main_server, subprotocols=[]) as client:
        ready = await client.ready()
        assert ready["protocol"] == "tidings.v1"
        await client.subscribe("s", **{"from": "end"})
        await client.still_open()


async def test_a_client_offering_only_other_subprotocols_is_closed_with_4000(
    main_server: Served,
) -> None:
    async with connect(main_server, subprotocols=["chat.v2", "graphql-ws"]) as client:
        messages = await client.closed()
        assert messages == []  # closed at once
        assert client.close_code == 4000


async def test_tidings_v1_is_selected_among_other_offered_subprotocols(
    main_server: Served,
) -> None:
    async with connect(main_server, subprotocols=["chat.v2", "tidings.v1"]) as client:
        assert client.ws.subprotocol == "tidings.v1"
        await client.ready()


# -- subscribe: catch-up, then live --------------------------------------------------


async def test_catch_up_then_live_has_no_gap_and_no_repeat(main_server: Served) -> None:
    c, other = category(), category()
    async with http_client(main_server) as http, connect(main_server) as client:
        for n in range(25):  # before: three streams, interleaved with another category
            await append(http, f"{c}-{n % 3}", 1, n=n)
            await append(http, f"{other}-1", 1)
        await client.ready()
        subscribed = await client.subscribe("s", filter={"categories": [c]})
        assert subscribed["position"] == 0

        async def writer() -> None:
            for n in range(25, 60):
                await append(http, f"{c}-{n % 3}", 1, n=n)
                await append(http, f"{other}-1", 1)
                if n % 7 == 0:
                    await asyncio.sleep(0.01)

        writing = asyncio.create_task(writer())
        try:
            got = await client.events("s", 60, ack=True, wait=15)
        finally:
            await writing
        assert [e["data"]["n"] for e in got] == list(range(60))
        assert positions(got) == positions(await category_events(http, c))
        await client.quiet()


async def test_events_have_the_http_apis_shape(main_server: Served) -> None:
    c = category()
    async with http_client(main_server) as http, connect(main_server) as client:
        await append(http, f"{c}-1", 3, "Placed", total=5)
        await client.ready()
        await client.subscribe("s", filter={"categories": [c]})
        got = await client.events("s", 3)
        assert all(set(e) == EVENT_FIELDS for e in got)
        assert got == await category_events(http, c)


async def test_from_position_starts_after_that_position(main_server: Served) -> None:
    c = category()
    async with http_client(main_server) as http, connect(main_server) as client:
        await append(http, f"{c}-1", 5)
        everything = await category_events(http, c)
        start = everything[1]["position"]
        await client.ready()
        subscribed = await client.subscribe(
            "s", filter={"categories": [c]}, from_position=start, ack="auto"
        )
        assert subscribed["position"] == start
        got = await client.events("s", 3)
        assert got == everything[2:]
        await client.quiet()


async def test_from_end_sends_only_what_commits_afterwards(main_server: Served) -> None:
    c = category()
    async with http_client(main_server) as http, connect(main_server) as client:
        await append(http, f"{c}-1", 4)
        await client.ready()
        at = await head(http)
        subscribed = await client.subscribe("s", filter={"categories": [c]}, **{"from": "end"})
        assert subscribed["position"] == at
        await client.quiet()
        await append(http, f"{c}-1", 2, late=True)
        got = await client.events("s", 2)
        assert all(e["data"].get("late") for e in got)
        assert all(p > at for p in positions(got))
        await client.quiet()


async def test_from_start_is_from_position_zero(main_server: Served) -> None:
    c = category()
    async with http_client(main_server) as http, connect(main_server) as client:
        await append(http, f"{c}-1", 3)
        await client.ready()
        subscribed = await client.subscribe("s", filter={"categories": [c]}, **{"from": "start"})
        assert subscribed["position"] == 0
        assert await client.events("s", 3) == await category_events(http, c)


async def test_from_and_from_position_together_are_refused(main_server: Served) -> None:
    async with connect(main_server) as client:
        await client.ready()
        message = {"type": "subscribe", "id": 9, "sub": "s", "from": "end", "from_position": 3}
        reply = await client.error(message, "invalid_message")
        assert reply["id"] == 9
        await client.subscribe("s", **{"from": "end"})  # nothing was subscribed


@pytest.mark.parametrize(
    ("name", "make_filter", "expected"),
    [
        ("categories", lambda c, d: {"categories": [c]}, ["c-a1", "c-a2", "c-b1"]),
        ("types", lambda c, d: {"categories": [c, d], "types": ["A"]}, ["c-a1", "c-b1", "d-a1"]),
        ("stream_prefix", lambda c, d: {"stream_prefix": f"{c}-a"}, ["c-a1", "c-a2"]),
        ("stream_pattern", lambda c, d: {"stream_pattern": f"{c}-.1"}, ["c-a1", "c-b1"]),
        (
            "all_criteria_must_match",
            lambda c, d: {
                "categories": [c],
                "types": ["A"],
                "stream_prefix": f"{c}-a",
                "stream_pattern": f"{c}-a[0-9]",
            },
            ["c-a1"],
        ),
    ],
)
async def test_a_filter_sends_only_matching_events(
    main_server: Served, name: str, make_filter: Any, expected: list[str]
) -> None:
    c, d = category(), category()
    layout = [("c-a1", "A"), ("c-a2", "B"), ("c-b1", "A"), ("d-a1", "A"), ("d-a2", "B")]
    real = {"c": c, "d": d}
    async with http_client(main_server) as http, connect(main_server) as client:
        for short, type_ in layout:
            await append(http, real[short[0]] + short[1:], 2, type_)
        fence = f"{c}-a1"  # matches every filter here
        await append(http, fence, 1, "A", fence=True)
        await client.ready()
        await client.subscribe("s", filter=make_filter(c, d), ack="auto")
        got = await fenced(client, "s", fence)
        wanted = [real[s[0]] + s[1:] for s in expected]
        assert sorted({e["stream"] for e in got}) == sorted(wanted)
        assert len(got) == 2 * len(wanted)
        assert positions(got) == sorted(positions(got))


async def test_a_stream_pattern_must_match_the_whole_stream_name(main_server: Served) -> None:
    c = category()
    async with http_client(main_server) as http, connect(main_server) as client:
        await append(http, f"{c}-a1", 2)
        await append(http, f"{c}-a12", 2)
        await client.ready()
        await client.subscribe("s", filter={"stream_pattern": f"{c}-a1"}, ack="auto")
        got = await client.events("s", 2)
        assert {e["stream"] for e in got} == {f"{c}-a1"}
        await client.quiet()


async def test_batches_count_from_one_and_hold_at_most_batch_events(main_server: Served) -> None:
    c = category()
    async with http_client(main_server) as http, connect(main_server) as client:
        await append(http, f"{c}-1", 25)  # catch-up: 25 events, batch_events is 10
        await client.ready()
        await client.subscribe("s", filter={"categories": [c]}, ack="auto")
        batches = []
        total = 0
        while total < 25:
            batches.append(await client.batch("s"))
            total += len(batches[-1]["events"])
        await append(http, f"{c}-2", 23)  # live: one commit of 23 events
        while total < 48:
            batches.append(await client.batch("s"))
            total += len(batches[-1]["events"])
        assert [b["batch"] for b in batches] == list(range(1, len(batches) + 1))
        for b in batches:
            assert set(b) == {"type", "sub", "batch", "events", "last_position"}
            assert 1 <= len(b["events"]) <= 10
            assert b["last_position"] == b["events"][-1]["position"]
        every = [e for b in batches for e in b["events"]]
        assert positions(every) == positions(await category_events(http, c))
        await client.quiet()


# -- flow control ----------------------------------------------------------------------


async def test_manual_acks_hold_the_subscription_at_max_in_flight(main_server: Served) -> None:
    c = category()
    async with http_client(main_server) as http, connect(main_server) as client:
        await append(http, f"{c}-1", 50)  # five batches of 10
        await client.ready()
        subscribed = await client.subscribe("s", filter={"categories": [c]})  # manual
        assert subscribed["max_in_flight"] == 2  # the window, for a client to pace its acks
        first = [await client.batch("s"), await client.batch("s")]
        assert [b["batch"] for b in first] == [1, 2]
        await client.quiet(0.5)  # max_in_flight is 2
        await client.send({"type": "ack", "sub": "s", "batch": 1})
        third = await client.batch("s")
        assert third["batch"] == 3
        await client.quiet()
        await client.send({"type": "ack", "sub": "s", "batch": 3})  # cumulative: 2 and 3
        rest = [await client.batch("s"), await client.batch("s")]
        assert [b["batch"] for b in rest] == [4, 5]
        await client.send({"type": "ack", "sub": "s", "batch": 5})
        await client.quiet()
        every = [e for b in [*first, third, *rest] for e in b["events"]]
        assert positions(every) == positions(await category_events(http, c))


async def test_an_old_ack_after_a_newer_one_changes_nothing(main_server: Served) -> None:
    c = category()
    async with http_client(main_server) as http, connect(main_server) as client:
        await append(http, f"{c}-1", 50)
        await client.ready()
        await client.subscribe("s", filter={"categories": [c]})
        await client.events("s", 20)
        await client.send({"type": "ack", "sub": "s", "batch": 2})
        await client.events("s", 20)  # batches 3 and 4
        await client.send({"type": "ack", "sub": "s", "batch": 1})
        await client.quiet()  # acks are cumulative: 1 was acked long ago
        await client.still_open()


async def test_auto_ack_needs_no_acks(main_server: Served) -> None:
    c = category()
    async with http_client(main_server) as http, connect(main_server) as client:
        await append(http, f"{c}-1", 50)
        await client.ready()
        subscribed = await client.subscribe("s", filter={"categories": [c]}, ack="auto")
        assert "max_in_flight" not in subscribed
        got = await client.events("s", 50)
        assert positions(got) == positions(await category_events(http, c))


async def test_acking_a_batch_not_sent_yet_is_invalid_ack(main_server: Served) -> None:
    c = category()
    async with http_client(main_server) as http, connect(main_server) as client:
        await append(http, f"{c}-1", 50)
        await client.ready()
        await client.subscribe("s", filter={"categories": [c]})
        await client.events("s", 20)  # batches 1 and 2, then it waits
        await client.error({"type": "ack", "sub": "s", "batch": 3}, "invalid_ack")
        await client.quiet()  # the bad ack acked nothing
        await client.send({"type": "ack", "sub": "s", "batch": 2})
        await client.events("s", 20)


async def test_an_invalid_ack_error_carries_the_acks_id(main_server: Served) -> None:
    c = category()
    async with http_client(main_server) as http, connect(main_server) as client:
        await append(http, f"{c}-1", 5)
        await client.ready()
        await client.subscribe("s", filter={"categories": [c]})
        await client.events("s", 5)  # batch 1
        message = {"type": "ack", "id": "a", "sub": "s", "batch": 2}
        reply = await client.error(message, "invalid_ack")
        assert reply["id"] == "a"


async def test_acks_on_an_auto_subscription_are_accepted_silently(main_server: Served) -> None:
    c = category()
    async with http_client(main_server) as http, connect(main_server) as client:
        await append(http, f"{c}-1", 5)
        await client.ready()
        await client.subscribe("s", filter={"categories": [c]}, ack="auto")
        await client.events("s", 5)
        await client.send({"type": "ack", "id": 1, "sub": "s", "batch": 1})
        await client.send({"type": "ack", "id": 2, "sub": "s", "batch": 99})
        await client.quiet()
        await client.still_open()


async def test_a_paused_subscription_whose_live_queue_overflows_loses_no_event(
    tight_server: Served,
) -> None:
    # tight: max_in_flight 1, batch_events 3, live_queue_events 5
    c = category()
    async with http_client(tight_server) as http, connect(tight_server) as client:
        await client.ready()
        await client.subscribe("s", filter={"categories": [c]}, **{"from": "end"})
        for n in range(40):  # live, while the client acks nothing
            await append(http, f"{c}-{n % 2}", 1, n=n)
        first = await client.batch("s")
        await client.quiet()
        await client.send({"type": "ack", "sub": "s", "batch": first["batch"]})
        rest = await client.events("s", 40 - len(first["events"]), ack=True, wait=10)
        got = first["events"] + rest
        assert [e["data"]["n"] for e in got] == list(range(40))
        await client.quiet()


async def test_a_slow_acker_crossing_from_store_to_live_many_times_loses_nothing(
    tight_server: Served,
) -> None:
    # tight: max_in_flight 1, batch_events 3, live_queue_events 5: a client that acks
    # slower than the log grows overflows its live queue again and again, and each time
    # reads the store and joins the live log anew, while commits go on
    c = category()
    total = 300
    async with http_client(tight_server) as http, connect(tight_server) as client:
        await client.ready()
        await client.subscribe("s", filter={"categories": [c]})

        async def writer(w: int) -> None:
            for n in range(total // 3):
                await append(http, f"{c}-{w}", 1, n=n)

        writing = asyncio.gather(*(writer(w) for w in range(3)))
        got: list[dict[str, Any]] = []
        try:
            async with asyncio.timeout(30):
                while len(got) < total:
                    batch = await client.batch("s")
                    got.extend(batch["events"])
                    await asyncio.sleep(0.002)
                    await client.send({"type": "ack", "sub": "s", "batch": batch["batch"]})
        finally:
            await writing
        assert positions(got) == positions(await category_events(http, c))
        for w in range(3):
            assert [e["data"]["n"] for e in got if e["stream"] == f"{c}-{w}"] == list(
                range(total // 3)
            )
        await client.quiet()


# -- unsubscribe -----------------------------------------------------------------------


async def test_unsubscribe_stops_the_subscription_and_frees_its_name(main_server: Served) -> None:
    c = category()
    async with http_client(main_server) as http, connect(main_server) as client:
        await append(http, f"{c}-1", 30)
        await client.ready()
        await client.subscribe("s", filter={"categories": [c]})
        first = await client.events("s", 20)  # then it waits for an ack
        reply = await client.request({"type": "unsubscribe", "id": 2, "sub": "s"})
        assert reply == {
            "type": "unsubscribed",
            "id": 2,
            "sub": "s",
            "position": first[-1]["position"],
        }
        await append(http, f"{c}-1", 5)
        await client.quiet(0.5)  # nothing more for "s"
        await client.subscribe("s", filter={"categories": [c]}, from_position=reply["position"])
        rest = await client.events("s", 15, ack=True)
        assert positions(first + rest) == positions(await category_events(http, c))


async def test_nothing_is_sent_for_a_live_subscription_after_unsubscribed(
    main_server: Served,
) -> None:
    c = category()
    async with http_client(main_server) as http, connect(main_server) as client:
        await client.ready()
        await client.subscribe("s", filter={"categories": [c]}, ack="auto")

        async def writer() -> None:
            for n in range(60):
                await append(http, f"{c}-1", 1, n=n)

        writing = asyncio.create_task(writer())
        got: list[dict[str, Any]] = []
        try:
            while len(got) < 20:
                got.extend((await client.batch("s"))["events"])
            await client.send({"type": "unsubscribe", "id": "u", "sub": "s"})
            while (message := await client.recv())["type"] == "events":
                got.extend(message["events"])
            assert message["type"] == "unsubscribed" and message["id"] == "u", message
        finally:
            await writing
        assert positions(got)[-1] <= message["position"]
        await client.quiet(0.5)
        await client.subscribe("s", filter={"categories": [c]}, from_position=message["position"])
        got.extend(await client.events("s", 60 - len(got), ack=True))
        assert [e["data"]["n"] for e in got] == list(range(60))
        await client.quiet()


# -- ping --------------------------------------------------------------------------------


@pytest.mark.parametrize("ping_id", ["p-1", 17, 0])
async def test_ping_gets_a_pong_with_its_id(main_server: Served, ping_id: str | int) -> None:
    async with connect(main_server) as client:
        await client.ready()
        assert await client.request({"type": "ping", "id": ping_id}) == {
            "type": "pong",
            "id": ping_id,
        }


# -- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        "{not json",
        "",
        pytest.param("[1, 2]"),
        pytest.param("42"),
        pytest.param('"ping"'),
        pytest.param("null"),
    ],
    ids=["broken", "empty", "array", "number", "string", "null"],
)
async def test_a_frame_that_is_not_a_json_object_is_invalid_json(
    main_server: Served, frame: str
) -> None:
    async with connect(main_server) as client:
        await client.ready()
        reply = await client.error(frame, "invalid_json")
        assert "id" not in reply


@pytest.mark.parametrize(
    "message",
    [{"id": 5}, {"type": "nope", "id": 5}, {"type": 3, "id": 5}, {"type": "Ping", "id": 5}],
    ids=["missing", "unknown", "not_a_string", "wrong_case"],
)
async def test_a_missing_or_unknown_type_is_unknown_type(
    main_server: Served, message: dict[str, Any]
) -> None:
    async with connect(main_server) as client:
        await client.ready()
        reply = await client.error(message, "unknown_type")
        assert reply["id"] == 5


@pytest.mark.parametrize(
    ("message", "names"),
    [
        ({"type": "subscribe", "id": 1}, "sub"),
        ({"type": "ack", "id": 1, "sub": "s"}, "batch"),
        ({"type": "refresh", "id": 1}, "token"),
        ({"type": "ping", "id": 1, "colour": "red"}, "colour"),
        ({"type": "subscribe", "id": 1, "sub": "s", "filter": {"category": ["x"]}}, "category"),
        ({"type": "ack", "id": 1, "sub": "s", "batch": "1"}, "$.batch"),
        ({"type": "ack", "id": 1, "sub": "s", "batch": 0}, "$.batch"),
        ({"type": "subscribe", "id": 1, "sub": 7}, "$.sub"),
        ({"type": "subscribe", "id": 1, "sub": ""}, "$.sub"),
        ({"type": "subscribe", "id": 1, "sub": "x" * 257}, "$.sub"),
        ({"type": "subscribe", "id": 1, "sub": "s", "from_position": -1}, "$.from_position"),
        ({"type": "subscribe", "id": 1, "sub": "s", "from_position": "5"}, "$.from_position"),
        ({"type": "subscribe", "id": 1, "sub": "s", "from": "middle"}, "$.from"),
        ({"type": "subscribe", "id": 1, "sub": "s", "ack": "sometimes"}, "$.ack"),
        ({"type": "subscribe", "id": 1, "sub": "s", "filter": {"types": "A"}}, "$.filter.types"),
        ({"type": "subscribe", "id": 1, "sub": "s", "filter": []}, "$.filter"),
    ],
    ids=[
        "missing_sub",
        "missing_batch",
        "missing_token",
        "unknown_field",
        "unknown_filter_field",
        "batch_wrong_type",
        "batch_out_of_range",
        "sub_wrong_type",
        "sub_empty",
        "sub_too_long",
        "negative_from_position",
        "from_position_wrong_type",
        "from_unknown_value",
        "ack_unknown_value",
        "types_not_a_list",
        "filter_not_an_object",
    ],
)
async def test_a_bad_field_is_invalid_message_naming_it(
    main_server: Served, message: dict[str, Any], names: str
) -> None:
    async with connect(main_server) as client:
        await client.ready()
        reply = await client.error(message, "invalid_message")
        assert reply["id"] == 1
        assert names in reply["message"], reply


async def test_a_sub_name_of_256_characters_is_accepted(main_server: Served) -> None:
    async with connect(main_server) as client:
        await client.ready()
        await client.subscribe("x" * 256, **{"from": "end"})


async def test_an_id_of_another_type_is_invalid_message(main_server: Served) -> None:
    async with connect(main_server) as client:
        await client.ready()
        for bad in (1.5, ["a"], {"n": 1}):
            reply = await client.error({"type": "ping", "id": bad}, "invalid_message")
            assert "id" not in reply  # not a readable one


async def test_a_stream_pattern_that_does_not_compile_is_invalid_filter(
    main_server: Served,
) -> None:
    async with connect(main_server) as client:
        await client.ready()
        message = {"type": "subscribe", "id": "f", "sub": "s", "filter": {"stream_pattern": "("}}
        reply = await client.error(message, "invalid_filter")
        assert reply["id"] == "f"
        await client.subscribe("s", **{"from": "end"})  # the name was not taken


async def test_a_sub_name_in_use_is_subscription_exists(main_server: Served) -> None:
    c = category()
    async with http_client(main_server) as http, connect(main_server) as client:
        await client.ready()
        await client.subscribe("s", filter={"categories": [c]}, ack="auto", **{"from": "end"})
        message = {"type": "subscribe", "id": 2, "sub": "s", "filter": {"categories": [category()]}}
        reply = await client.error(message, "subscription_exists")
        assert reply["id"] == 2
        await append(http, f"{c}-1", 2)  # the first one goes on, unchanged
        got = await client.events("s", 2)
        assert {e["stream"] for e in got} == {f"{c}-1"}


async def test_past_max_subscriptions_is_too_many_subscriptions(main_server: Served) -> None:
    async with connect(main_server) as client:  # max_subscriptions is 3
        await client.ready()
        for name in ("a", "b", "c"):
            await client.subscribe(name, **{"from": "end"})
        message = {"type": "subscribe", "id": 4, "sub": "d", "from": "end"}
        reply = await client.error(message, "too_many_subscriptions")
        assert reply["id"] == 4
        reply = await client.request({"type": "unsubscribe", "id": 5, "sub": "b"})
        assert reply["type"] == "unsubscribed"
        await client.subscribe("d", **{"from": "end"})


async def test_another_connection_has_subscriptions_of_its_own(main_server: Served) -> None:
    async with connect(main_server) as one, connect(main_server) as two:
        await one.ready()
        await two.ready()
        for name in ("a", "b", "c"):
            await one.subscribe(name, **{"from": "end"})
        await two.subscribe("a", **{"from": "end"})  # neither exists nor too many


@pytest.mark.parametrize("kind", ["ack", "unsubscribe"])
async def test_an_unknown_sub_is_unknown_subscription(main_server: Served, kind: str) -> None:
    async with connect(main_server) as client:
        await client.ready()
        message: dict[str, Any] = {"type": kind, "id": "x", "sub": "ghost"}
        if kind == "ack":
            message["batch"] = 1
        reply = await client.error(message, "unknown_subscription")
        assert reply["id"] == "x"
        assert "ghost" in reply["message"]


async def test_an_unsubscribed_name_is_unknown_subscription(main_server: Served) -> None:
    async with connect(main_server) as client:
        await client.ready()
        await client.subscribe("s", **{"from": "end"})
        assert (await client.request({"type": "unsubscribe", "sub": "s"}))["type"] == "unsubscribed"
        await client.error({"type": "ack", "sub": "s", "batch": 1}, "unknown_subscription")
        await client.error({"type": "unsubscribe", "sub": "s"}, "unknown_subscription")


async def test_auth_on_a_connection_with_a_caller_is_already_authenticated(
    main_server: Served,
) -> None:
    async with connect(main_server) as client:  # auth off: everyone is a caller
        await client.ready()
        reply = await client.error({"type": "auth", "id": 3, "token": "x"}, "already_authenticated")
        assert reply["id"] == 3


async def test_past_messages_per_second_is_rate_limited_and_not_handled(
    rate_server: Served,
) -> None:
    # messages_per_second is 5: bursts of 5, then 5 a second
    async with connect(rate_server) as client:
        await client.ready()
        for n in range(12):
            await client.send({"type": "ping", "id": n})
        await client.send({"type": "subscribe", "id": "late", "sub": "s", "from": "end"})
        replies = [await client.recv() for _ in range(13)]
        assert [r["id"] for r in replies] == [*range(12), "late"]
        assert all(r["type"] == "pong" for r in replies[:5]), replies
        limited = [r for r in replies if r["type"] == "error"]
        assert len(limited) >= 6, replies
        assert all(r["error"] == "rate_limited" and r["message"] for r in limited), replies
        assert replies[-1]["type"] == "error", replies  # the subscribe was not handled
        await client.quiet(1.2)  # the bucket fills again
        await client.subscribe("s", **{"from": "end"})
        await client.still_open()


# -- closes ------------------------------------------------------------------------------


async def test_a_message_over_max_message_bytes_closes_with_1009(main_server: Served) -> None:
    async with connect(main_server) as client:  # max_message_bytes is 4096
        await client.ready()
        under = '{"type": "ping", "id": 1, "pad": "%s"}' % ("x" * 3900)
        assert len(under) <= 4096
        await client.error(under, "invalid_message")  # refused, but no close
        over = '{"type": "ping", "id": 2, "pad": "%s"}' % ("x" * 5000)
        await client.send(over)
        messages = await client.closed()
        assert all(m["type"] == "closing" for m in messages), messages
        assert client.close_code == 1009


async def test_past_max_connections_closes_with_1013_after_closing(tight_server: Served) -> None:
    async with contextlib.AsyncExitStack() as stack:  # max_connections is 2
        held: list[Client] = []
        async with asyncio.timeout(10):
            while len(held) < 2:  # a connection of an earlier test may still be leaving
                client = await stack.enter_async_context(connect(tight_server))
                with contextlib.suppress(ConnectionClosed):
                    await client.ready()
                    held.append(client)
                    continue
                await asyncio.sleep(0.1)
        async with connect(tight_server) as refused:
            messages = await refused.closed()
            assert len(messages) == 1, messages
            assert messages[0]["type"] == "closing" and messages[0]["code"] == 1013, messages
            assert isinstance(messages[0]["reason"], str) and messages[0]["reason"]
            assert messages[0]["resume"] == {}
            assert refused.close_code == 1013
        for client in held:
            await client.still_open()
        await held[0].ws.close()
        async with asyncio.timeout(5):  # a freed place is taken again
            while True:
                async with connect(tight_server) as again:
                    with contextlib.suppress(ConnectionClosed):
                        await again.ready()
                        await again.still_open()
                        break
                await asyncio.sleep(0.1)


C_APPENDS = 8


async def test_sigterm_closes_with_1012_after_closing_with_resume_positions(
    tmp_path: Path,
) -> None:
    env = {
        "TIDINGS_WS__BATCH_EVENTS": "10",
        "TIDINGS_WS__MAX_IN_FLIGHT": "2",
        "TIDINGS_WS__QUEUE_MESSAGES": "8",
    }
    with served(f"sqlite:///{tmp_path / 'x.db'}", env=env) as server:
        async with http_client(server) as http:
            await append(http, "a-1", 5)
            await append(http, "b-1", 30)
            for _ in range(C_APPENDS):  # more than the sockets' buffers hold
                await append(http, "c-1", 500, pad="x" * 1000)
            await append(http, "z-1", 3)  # matches no subscription
            b_events = await category_events(http, "b")
            c_events = await category_events(http, "c")
            last = await head(http)
        async with connect(server) as client, connect(server) as idle:
            await client.ready()
            await idle.ready()
            await client.subscribe("a", filter={"categories": ["a"]}, ack="auto")
            a_got = await client.events("a", 5)
            await client.subscribe("b", filter={"categories": ["b"]})
            b_got = await client.events("b", 20)  # then it waits for an ack
            await client.quiet()
            # "c" streams batches that this client does not read yet
            c_filter = {"categories": ["c"]}
            await client.send({"type": "subscribe", "sub": "c", "filter": c_filter, "ack": "auto"})
            messages = [await client.expect("subscribed"), await client.batch("c")]
            server.process.send_signal(signal.SIGTERM)  # while "c" still catches up
            messages += await client.closed(wait=10)
            idle_messages = await idle.closed(wait=10)
        assert client.close_code == 1012
        assert messages[0]["type"] == "subscribed", messages[:2]
        assert messages[-1]["type"] == "closing", messages[-2:]  # after all it had queued
        closing = messages[-1]
        assert closing["code"] == 1012 and isinstance(closing["reason"], str), closing
        assert set(closing["resume"]) == {"a", "b", "c"}, closing
        # every event up to resume was sent, or did not match
        resume = closing["resume"]
        assert a_got[-1]["position"] <= resume["a"] <= last
        assert b_got[-1]["position"] <= resume["b"] < b_events[20]["position"]
        assert {m["type"] for m in messages[1:-1]} <= {"events"}
        c_got = [e for m in messages[1:-1] for e in m["events"]]
        assert len(c_got) >= 10  # mostly cut mid-stream: the check below holds either way
        assert c_got == [e for e in c_events if e["position"] <= resume["c"]]
        assert idle_messages == [
            {
                "type": "closing",
                "reason": closing["reason"],
                "code": 1012,
                "resume": {},
                "store": closing["store"],
            }
        ]
        assert str(uuid.UUID(closing["store"])) == closing["store"]
        assert idle.close_code == 1012
