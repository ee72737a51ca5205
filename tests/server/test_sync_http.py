"""Satellite sync over HTTP: pushes decided exactly once, in order, with stored verdicts;
pulls of a satellite's categories that never cut a transaction in two."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

import tidings
from tests.server.api import error_of
from tidings.server import Settings, create_app
from tidings.server.auth import ApiKey, AuthSettings, hash_key

SAT = "till-1"


def event(n: int, type_: str = "Sold") -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "type": type_, "data": {"n": n}}


def tx(seq: int, *appends: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"seq": seq, "appends": list(appends), **fields}


def part(stream: str, *events: dict[str, Any], expected: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"stream": stream, "events": list(events)}
    if expected is not None:
        body["expected_version"] = expected
    return body


async def push(
    client: httpx.AsyncClient, *transactions: Any, satellite: str = SAT, **headers: str
) -> dict[str, Any]:
    answer = await client.post(
        "/sync/push",
        json={"satellite_id": satellite, "transactions": list(transactions)},
        headers=headers,
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def pull(client: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    query = {"satellite_id": SAT, "categories": "sale", **params}
    answer = await client.get("/sync/pull", params=query)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def test_pushed_transactions_land_in_order_with_their_verdicts(
    client: httpx.AsyncClient, store: tidings.EventStore
) -> None:
    first, second = event(1), event(2)
    reply = await push(
        client,
        tx(1, part("sale-1", first, expected="no_stream")),
        tx(2, part("sale-1", second, expected=0), part("till-1", event(3)), audit={"user": "bo"}),
    )
    assert reply["last_seq"] == 2
    one, two = reply["verdicts"]
    assert one["seq"] == 1 and one["verdict"] == "accepted"
    assert one["results"] == [
        {"stream": "sale-1", "first_version": 0, "last_version": 0, "position": 1}
    ]
    assert two["verdict"] == "accepted"
    assert [r["stream"] for r in two["results"]] == ["sale-1", "till-1"]
    stored = [e async for e in store.read_stream("sale-1")]
    assert [str(e.id) for e in stored] == [first["id"], second["id"]]
    audit = await store.audit(stored[1])
    assert audit is not None and audit.user == "bo"
    assert audit.extra == {"satellite": SAT, "seq": 2}


async def test_a_replayed_push_applies_nothing_twice_and_returns_the_stored_verdicts(
    client: httpx.AsyncClient, store: tidings.EventStore
) -> None:
    batch = [tx(1, part("sale-1", event(1))), tx(2, part("sale-2", event(2), expected=5))]
    first = await push(client, *batch)
    head = await store.head()
    again = await push(client, *batch)
    assert await store.head() == head
    assert again["last_seq"] == 2
    assert [v["verdict"] for v in again["verdicts"]] == ["duplicate", "duplicate"]
    assert [v["stored"] for v in again["verdicts"]] == first["verdicts"]


async def test_a_stale_expected_version_is_one_conflict_and_the_next_transaction_still_lands(
    client: httpx.AsyncClient, store: tidings.EventStore
) -> None:
    await store.append("sale-9", [tidings.NewEvent("Sold"), tidings.NewEvent("Sold")])
    stale = event(1)
    reply = await push(
        client,
        tx(1, part("sale-9", stale, expected=0), part("sale-10", event(2))),
        tx(2, part("sale-11", event(3), expected="no_stream")),
    )
    conflict, accepted = reply["verdicts"]
    assert conflict == {
        "seq": 1,
        "verdict": "conflict",
        "stream": "sale-9",
        "expected": 0,
        "actual": 1,
        "first": stale["id"],  # which transaction it was about
    }
    assert accepted["verdict"] == "accepted"
    assert await store.stream_version("sale-9") == 1  # nothing of the conflict written
    assert await store.stream_version("sale-10") is None
    assert reply["last_seq"] == 2


async def test_metrics_count_the_verdicts(
    client: httpx.AsyncClient, store: tidings.EventStore
) -> None:
    await store.append("sale-1", [tidings.NewEvent("Sold")])
    second = tx(2, part("sale-1", event(2), expected=0))
    await push(client, tx(1, part("sale-1", event(1), expected=0)), second)
    await push(client, second)
    text = (await client.get("/metrics")).text
    assert 'tidings_sync_verdicts_total{verdict="accepted"} 1.0' in text
    assert 'tidings_sync_verdicts_total{verdict="conflict"} 1.0' in text
    assert 'tidings_sync_verdicts_total{verdict="duplicate"} 1.0' in text


async def test_a_sequence_number_past_the_next_is_out_of_order_and_not_stored(
    client: httpx.AsyncClient,
) -> None:
    await push(client, tx(1, part("sale-1", event(1))))
    reply = await push(client, tx(3, part("sale-1", event(3))), tx(2, part("sale-1", event(2))))
    skipped, landed = reply["verdicts"]
    assert skipped["verdict"] == "out_of_order" and "next seq is 2" in skipped["reason"]
    assert landed["verdict"] == "accepted"
    assert reply["last_seq"] == 2


async def test_a_seq_reused_for_another_transaction_is_out_of_order_with_those_after_it(
    client: httpx.AsyncClient, store: tidings.EventStore
) -> None:
    first = tx(1, part("sale-1", event(1)))
    await push(client, first, tx(2, part("sale-1", event(2))))
    # A satellite restored from an older copy numbers new transactions from 2 again.
    reply = await push(
        client, first, tx(2, part("sale-1", event(9))), tx(3, part("sale-1", event(10)))
    )
    replayed, reused, after = reply["verdicts"]
    assert replayed["verdict"] == "duplicate" and replayed["stored"]["verdict"] == "accepted"
    assert replayed["stored"]["first"] == first["appends"][0]["events"][0]["id"]
    assert reused["verdict"] == "out_of_order" and "another transaction" in reused["reason"]
    assert after["verdict"] == "out_of_order"  # applied, it would land before the reused one
    assert reply["last_seq"] == 2
    assert await store.stream_version("sale-1") == 1


async def test_a_malformed_transaction_among_good_ones_is_the_only_one_rejected(
    client: httpx.AsyncClient, store: tidings.EventStore
) -> None:
    reply = await push(
        client,
        tx(1, part("sale-1", event(1))),
        {"seq": 2, "appends": [{"stream": "sale-1", "events": "not a list"}]},
        tx(3, part("sale-1", {"type": "", "data": 1})),  # an empty type: invalid event
        tx(4, part("sale-1", event(4)), expected_version="sideways"),  # unknown field
        tx(5, part("sale-1", event(5), expected="sideways")),
        "not even an object",
        tx(6, part("sale-1", event(6))),
    )
    outcomes = [(v["seq"], v["verdict"]) for v in reply["verdicts"]]
    assert outcomes == [
        (1, "accepted"),
        (2, "rejected"),
        (3, "rejected"),
        (4, "rejected"),
        (5, "rejected"),
        (None, "rejected"),
        (6, "accepted"),
    ]
    assert all(v["reason"] for v in reply["verdicts"] if v["verdict"] == "rejected")
    assert await store.stream_version("sale-1") == 1
    assert reply["last_seq"] == 6
    replay = await push(client, tx(3, part("sale-1", event(3))))
    assert replay["verdicts"][0]["stored"]["verdict"] == "rejected"


async def test_a_push_may_not_write_the_servers_verdict_streams(
    client: httpx.AsyncClient,
) -> None:
    reply = await push(client, tx(1, part("$sync-other", event(1))))
    assert reply["verdicts"][0]["verdict"] == "rejected"


async def test_racing_pushes_of_the_same_transactions_land_each_once(
    client: httpx.AsyncClient, store: tidings.EventStore
) -> None:
    batch = [tx(n, part(f"sale-{n % 3}", event(n))) for n in range(1, 21)]
    replies = await asyncio.gather(*(push(client, *batch) for _ in range(4)))
    assert all(r["last_seq"] == 20 for r in replies)
    for seq in range(20):
        outcomes = sorted(r["verdicts"][seq]["verdict"] for r in replies)
        assert outcomes.count("accepted") <= 1
        assert set(outcomes) <= {"accepted", "duplicate", "out_of_order"}
    ids = [e.id async for e in store.read_all(filter=tidings.Filter(["sale"]))]
    assert len(ids) == 20 == len(set(ids))


async def test_a_pull_returns_the_categories_events_and_the_verdicts_after_seq_after(
    client: httpx.AsyncClient, store: tidings.EventStore
) -> None:
    await store.append("other-1", [tidings.NewEvent("Noise")])
    await push(client, tx(1, part("sale-1", event(1))), tx(2, part("sale-1", event(2), expected=7)))
    await store.append("sale-2", [tidings.NewEvent("Sold")])
    page = await pull(client)
    assert [e["stream"] for e in page["events"]] == ["sale-1", "sale-2"]
    assert page["cursor"] == page["head"] == await store.head()
    assert page["last_seq"] == 2
    assert [v["verdict"] for v in page["verdicts"]] == ["accepted", "conflict"]
    assert page["identity"] == store.identity
    later = await pull(client, cursor=page["cursor"], seq_after=2)
    assert later["events"] == [] and later["verdicts"] == []


async def test_a_pull_page_never_ends_inside_a_transaction_with_an_audit(
    client: httpx.AsyncClient, store: tidings.EventStore
) -> None:
    async with store.transaction(tidings.Audit("al")) as t:
        t.append("sale-1", [tidings.NewEvent("Sold")] * 2)
        t.append("other-1", [tidings.NewEvent("Noise")])
        t.append("sale-2", [tidings.NewEvent("Sold")] * 2)
    await store.append("sale-3", [tidings.NewEvent("Sold")])
    first = await pull(client, limit=1)
    assert [e["stream"] for e in first["events"]] == ["sale-1", "sale-1", "sale-2", "sale-2"]
    rest = await pull(client, limit=1, cursor=first["cursor"])
    assert [e["stream"] for e in rest["events"]] == ["sale-3"]


async def test_pulls_page_through_the_whole_log_without_skipping_or_repeating(
    client: httpx.AsyncClient, store: tidings.EventStore
) -> None:
    for n in range(25):
        await store.append(f"sale-{n % 4}", [tidings.NewEvent("Sold", {"n": n})])
        await store.append("other-1", [tidings.NewEvent("Noise")])
    seen: list[int] = []
    cursor = 0
    while True:
        page = await pull(client, limit=7, cursor=cursor)
        seen += [e["data"]["n"] for e in page["events"]]
        if not page["events"]:
            break
        cursor = page["cursor"]
    assert seen == list(range(25))


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"satellite_id": "has space"}, 422, "validation_error"),
        ({"satellite_id": ""}, 422, "validation_error"),
        ({"categories": "sale,,x"}, 422, "validation_error"),
        ({"cursor": -1}, 422, "validation_error"),
        ({"seq_after": "x"}, 422, "validation_error"),
    ],
)
async def test_bad_pull_parameters_are_refused(
    client: httpx.AsyncClient, params: dict[str, Any], status: int, code: str
) -> None:
    query = {"satellite_id": SAT, "categories": "sale", **params}
    error_of(await client.get("/sync/pull", params=query), status, code)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"satellite_id": SAT}, 422, "validation_error"),
        ({"satellite_id": "a/b", "transactions": []}, 422, "validation_error"),
        ({"satellite_id": SAT, "transactions": {}}, 422, "validation_error"),
        ({"satellite_id": SAT, "transactions": [], "extra": 1}, 422, "validation_error"),
    ],
)
async def test_bad_push_bodies_are_refused_whole(
    client: httpx.AsyncClient, body: dict[str, Any], status: int, code: str
) -> None:
    error_of(await client.post("/sync/push", json=body), status, code)


# Scopes: a satellite's key names it, and its appends and reads are per category.

KEYS = {
    "till": ["sync:till-1", "append:sale", "read:sale"],
    "reader": ["sync:till-1", "read:sale"],
    "stranger": ["sync:till-2", "append:sale", "read:sale"],
}


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer key-{name}-0123456789abcdef"}


@pytest.fixture
async def guarded() -> AsyncIterator[httpx.AsyncClient]:
    keys = [
        ApiKey(name=n, hash=hash_key(f"key-{n}-0123456789abcdef"), scopes=s)
        for n, s in KEYS.items()
    ]
    store = await tidings.connect("memory://")
    app = create_app(store, Settings(auth=AuthSettings(api_keys=keys)))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            yield c
    await store.close()


async def test_a_satellite_pushes_only_as_itself_and_appends_only_where_it_may(
    guarded: httpx.AsyncClient,
) -> None:
    body = {"satellite_id": SAT, "transactions": [tx(1, part("sale-1", event(1)))]}
    error_of(
        await guarded.post("/sync/push", json=body, headers=bearer("stranger")), 403, "forbidden"
    )
    error_of(await guarded.post("/sync/push", json=body), 401, "unauthorized")
    reply = await push(
        guarded,
        tx(1, part("sale-1", event(1)), part("stock-1", event(2))),
        tx(2, part("sale-1", event(3))),
        **bearer("till"),
    )
    refused, landed = reply["verdicts"]
    assert refused["verdict"] == "rejected" and "stock" in refused["reason"]
    assert landed["verdict"] == "accepted"
    readonly = await push(guarded, tx(3, part("sale-1", event(4))), **bearer("reader"))
    assert readonly["verdicts"][0]["verdict"] == "rejected"


async def test_a_satellite_pulls_only_as_itself_and_only_categories_it_may_read(
    guarded: httpx.AsyncClient,
) -> None:
    ok = {"satellite_id": SAT, "categories": "sale"}
    answer = await guarded.get("/sync/pull", params=ok, headers=bearer("till"))
    assert answer.status_code == 200, answer.text
    stranger = await guarded.get("/sync/pull", params=ok, headers=bearer("stranger"))
    error_of(stranger, 403, "forbidden")
    wider = {"satellite_id": SAT, "categories": "sale,stock"}
    error_of(
        await guarded.get("/sync/pull", params=wider, headers=bearer("till")), 403, "forbidden"
    )
