"""The HTTP API on memory, SQLite and PostgreSQL: every route's answers, paging by
``next``, idempotent appends, expected versions, transactions with audit, readiness."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx
import pytest

import tidings
from tests.integration.tcp_proxy import TcpProxy
from tests.server.api import append, error_of, events_path, new
from tidings.server import Settings, create_app

# -- appends and stream reads ----------------------------------------------------------


async def test_an_append_answers_where_it_landed_and_the_stream_reads_it_back(
    client: httpx.AsyncClient,
) -> None:
    event_id = str(uuid.uuid4())
    placed = new("Placed", {"total": 12.5, "lines": [1, 2]}, metadata={"by": "al"}, id=event_id)
    first = await client.post(events_path("order-1"), json={"events": [placed]})
    assert first.status_code == 201
    assert first.headers["content-type"] == "application/json"
    assert first.json() == {
        "stream": "order-1",
        "first_version": 0,
        "last_version": 0,
        "position": 1,
    }
    second = await append(client, "order-1", new("Paid"), new("Shipped"))
    assert second == {"stream": "order-1", "first_version": 1, "last_version": 2, "position": 3}

    page = (await client.get("/streams/order-1/events")).json()
    assert page["stream"] == "order-1"
    assert page["next"] is None
    events = page["events"]
    assert [(e["type"], e["version"], e["position"]) for e in events] == [
        ("Placed", 0, 1),
        ("Paid", 1, 2),
        ("Shipped", 2, 3),
    ]
    assert events[0]["id"] == event_id
    assert events[0]["data"] == {"total": 12.5, "lines": [1, 2]}
    assert events[0]["metadata"] == {"by": "al"}
    assert events[1]["data"] is None and events[1]["metadata"] == {}
    assert all(e["stream"] == "order-1" for e in events)
    assert all(isinstance(datetime.fromisoformat(e["time"]), datetime) for e in events)

    version = await client.get("/streams/order-1")
    assert version.json() == {"stream": "order-1", "version": 2}
    assert (await client.get("/head")).json()["head"] == 3


@pytest.mark.parametrize(
    "stream", ["order/eu-1", "ordre-été", "a b-1", "100%-1", "what?-1", "hash#1", "plus+1"]
)
async def test_stream_names_with_reserved_characters_round_trip(
    client: httpx.AsyncClient, stream: str
) -> None:
    await append(client, stream, new("Placed"))
    page = (await client.get(events_path(stream))).json()
    assert page["stream"] == stream
    assert [e["stream"] for e in page["events"]] == [stream]
    version = await client.get(f"/streams/{quote(stream, safe='')}")
    assert version.json() == {"stream": stream, "version": 0}
    listed = (await client.get("/streams")).json()["streams"]
    assert listed == [{"name": stream, "version": 0}]


async def walk(
    client: httpx.AsyncClient, path: str, cursor: str, **params: Any
) -> list[tuple[list[Any], Any]]:
    """Follow ``next`` from page to page: each page's items and its ``next``."""
    pages: list[tuple[list[Any], Any]] = []
    query: dict[str, Any] = dict(params)
    while True:
        body = (await client.get(path, params=query)).json()
        items = body.get("events", body.get("streams"))
        pages.append((items, body["next"]))
        if body["next"] is None or not items or len(pages) > 50:
            return pages
        query[cursor] = body["next"]


@pytest.mark.parametrize(
    ("count", "versions"),
    [
        (7, [[0, 1, 2], [3, 4, 5], [6]]),
        (6, [[0, 1, 2], [3, 4, 5], []]),
    ],
)
async def test_next_walks_a_stream_forwards(
    client: httpx.AsyncClient, count: int, versions: list[list[int]]
) -> None:
    await append(client, "order-1", *[new("Step", n) for n in range(count)])
    pages = await walk(client, "/streams/order-1/events", "from_version", limit=3)
    assert [[e["version"] for e in items] for items, _ in pages] == versions
    assert [following for _, following in pages] == [3, 6, None]
    assert [e["data"] for items, _ in pages for e in items] == list(range(count))


@pytest.mark.parametrize(
    ("count", "start", "versions", "cursors"),
    [
        (7, None, [[6, 5, 4], [3, 2, 1], [0]], [3, 0, None]),
        (6, None, [[5, 4, 3], [2, 1, 0]], [2, None]),
        (7, 4, [[4, 3, 2], [1, 0]], [1, None]),
    ],
)
async def test_next_walks_a_stream_backwards(
    client: httpx.AsyncClient,
    count: int,
    start: int | None,
    versions: list[list[int]],
    cursors: list[int | None],
) -> None:
    await append(client, "order-1", *[new("Step", n) for n in range(count)])
    params: dict[str, Any] = {"limit": 3, "direction": "backward"}
    if start is not None:
        params["from_version"] = start
    pages = await walk(client, "/streams/order-1/events", "from_version", **params)
    assert [[e["version"] for e in items] for items, _ in pages] == versions
    assert [following for _, following in pages] == cursors


async def test_a_stream_read_from_a_version_starts_there(client: httpx.AsyncClient) -> None:
    await append(client, "order-1", *[new("Step", n) for n in range(5)])
    page = (await client.get("/streams/order-1/events", params={"from_version": 3})).json()
    assert [e["version"] for e in page["events"]] == [3, 4]
    beyond = (await client.get("/streams/order-1/events", params={"from_version": 9})).json()
    assert beyond == {"stream": "order-1", "events": [], "next": None}


async def test_a_stream_with_no_events_reads_as_an_empty_page(client: httpx.AsyncClient) -> None:
    answer = await client.get("/streams/nobody-1/events")
    assert answer.status_code == 200
    assert answer.json() == {"stream": "nobody-1", "events": [], "next": None}


# -- the stream listing ----------------------------------------------------------------


async def test_the_streams_listing_pages_in_name_order(client: httpx.AsyncClient) -> None:
    for name, count in [("stock-1", 1), ("order-2", 2), ("acct-1", 1), ("order-1", 3)]:
        await append(client, name, *[new() for _ in range(count)])
    await append(client, "order-3")
    pages = await walk(client, "/streams", "after", limit=2)
    assert pages == [
        ([{"name": "acct-1", "version": 0}, {"name": "order-1", "version": 2}], "order-1"),
        ([{"name": "order-2", "version": 1}, {"name": "order-3", "version": 0}], "order-3"),
        ([{"name": "stock-1", "version": 0}], None),
    ]


async def test_the_streams_listing_narrows_by_prefix(client: httpx.AsyncClient) -> None:
    for name in ["order-1", "order-2", "orders", "stock-1", "acct-1"]:
        await append(client, name)
    found = (await client.get("/streams", params={"prefix": "order-"})).json()
    assert found == {
        "streams": [{"name": "order-1", "version": 0}, {"name": "order-2", "version": 0}],
        "next": None,
    }
    pages = await walk(client, "/streams", "after", prefix="order", limit=1)
    assert [[s["name"] for s in items] for items, _ in pages] == [
        ["order-1"],
        ["order-2"],
        ["orders"],
        [],
    ]


# -- the global log --------------------------------------------------------------------


@pytest.fixture
async def history(client: httpx.AsyncClient) -> list[tuple[str, str]]:
    """Eight events across orders, carts and stock: (stream, type) by position."""
    written = [
        ("order-1", "Placed"),
        ("cart-1", "Added"),
        ("order-2", "Placed"),
        ("order-1", "Shipped"),
        ("stock-1", "Counted"),
        ("order-12", "Placed"),
        ("cart-1", "Removed"),
        ("order-2", "Shipped"),
    ]
    for stream, type_ in written:
        await append(client, stream, new(type_))
    return written


async def test_next_walks_the_log_and_each_page_reports_the_head(
    client: httpx.AsyncClient, history: list[tuple[str, str]]
) -> None:
    positions: list[int] = []
    cursor = 0
    for _ in range(10):
        page = (await client.get("/events", params={"from_position": cursor, "limit": 3})).json()
        assert page["head"] == 8
        positions += [e["position"] for e in page["events"]]
        if not page["events"]:
            break
        cursor = page["next"]
    assert positions == list(range(1, 9))
    assert cursor == 8
    everything = (await client.get("/events")).json()
    assert [(e["stream"], e["type"]) for e in everything["events"]] == history
    assert everything["next"] == 8


@pytest.mark.parametrize(
    ("params", "positions"),
    [
        ({"category": "order"}, [1, 3, 4, 6, 8]),
        ({"category": ["order", "stock"]}, [1, 3, 4, 5, 6, 8]),
        ({"type": "Shipped"}, [4, 8]),
        ({"type": ["Added", "Removed"]}, [2, 7]),
        ({"stream_prefix": "order-1"}, [1, 4, 6]),
        ({"stream_pattern": "order-[12]"}, [1, 3, 4, 8]),
        ({"stream_pattern": "(cart|stock)-.*"}, [2, 5, 7]),
        ({"category": "order", "type": "Placed"}, [1, 3, 6]),
        ({"category": "order", "stream_pattern": ".*-1"}, [1, 4]),
        ({"category": "nothing"}, []),
        ({"stream_prefix": ""}, [1, 2, 3, 4, 5, 6, 7, 8]),
    ],
)
async def test_the_log_filters(
    client: httpx.AsyncClient,
    history: list[tuple[str, str]],
    params: dict[str, Any],
    positions: list[int],
) -> None:
    page = (await client.get("/events", params=params)).json()
    assert [e["position"] for e in page["events"]] == positions
    assert page["next"] == 8 and page["head"] == 8
    paged: list[int] = []
    cursor = 0
    for _ in range(20):
        step = await client.get("/events", params={**params, "limit": 2, "from_position": cursor})
        body = step.json()
        paged += [e["position"] for e in body["events"]]
        if not body["events"]:
            break
        cursor = body["next"]
    assert paged == positions


async def test_the_logs_next_skips_a_filtered_out_stretch(client: httpx.AsyncClient) -> None:
    await append(client, "order-1", new("Placed"))
    await append(client, "cart-1", *[new("Added", n) for n in range(40)])
    first = (await client.get("/events", params={"category": "order", "limit": 10})).json()
    assert [e["position"] for e in first["events"]] == [1]
    assert first["next"] == 41 and first["head"] == 41  # past the 40 carts, not back at 1
    caught_up = (
        await client.get("/events", params={"category": "order", "from_position": first["next"]})
    ).json()
    assert caught_up == {"events": [], "next": 41, "head": 41}
    await append(client, "order-2", new("Placed"))
    later = (
        await client.get("/events", params={"category": "order", "from_position": first["next"]})
    ).json()
    assert [(e["stream"], e["position"]) for e in later["events"]] == [("order-2", 42)]


async def test_a_full_filtered_page_goes_on_from_its_last_event(client: httpx.AsyncClient) -> None:
    await append(client, "order-1", new("Placed"))
    await append(client, "cart-1", *[new("Added") for _ in range(5)])
    await append(client, "order-2", new("Placed"))
    page = (await client.get("/events", params={"category": "order", "limit": 1})).json()
    assert [e["position"] for e in page["events"]] == [1]
    assert page["next"] == 1  # a full page: what follows has not been looked at
    rest = (await client.get("/events", params={"category": "order", "from_position": 1})).json()
    assert [e["position"] for e in rest["events"]] == [7]


async def test_a_read_past_the_head_reports_the_real_head(client: httpx.AsyncClient) -> None:
    await append(client, "order-1", new(), new(), new())
    page = (await client.get("/events", params={"from_position": 1000})).json()
    assert page == {"events": [], "next": 1000, "head": 3}


async def test_a_log_read_of_no_events_skips_nothing(client: httpx.AsyncClient) -> None:
    await append(client, "order-1", new(), new(), new())
    page = (await client.get("/events", params={"from_position": 1, "limit": 0})).json()
    assert page == {"events": [], "next": 1, "head": 3}


# -- idempotent appends by id ----------------------------------------------------------


async def test_the_same_ids_with_the_same_content_answer_the_first_result_again(
    client: httpx.AsyncClient, store: tidings.EventStore
) -> None:
    await append(client, "order-1", new("Placed"))
    batch = [new("Paid", {"n": 1}, id=str(uuid.uuid4())), new("Sent", id=str(uuid.uuid4()))]
    first = await append(client, "order-1", *batch)
    again = await append(client, "order-1", *batch)
    assert (
        again
        == first
        == {"stream": "order-1", "first_version": 1, "last_version": 2, "position": 3}
    )
    assert await store.head() == 3
    page = (await client.get("/streams/order-1/events")).json()
    assert [e["type"] for e in page["events"]] == ["Placed", "Paid", "Sent"]


@pytest.mark.parametrize(
    ("stream", "changed"),
    [
        ("order-1", {"data": {"n": 2}}),
        ("order-1", {"type": "Refunded"}),
        ("order-1", {"metadata": {"by": "someone else"}}),
        ("order-2", {}),
    ],
)
async def test_an_id_already_stored_with_other_content_is_409_duplicate_event_id(
    client: httpx.AsyncClient, store: tidings.EventStore, stream: str, changed: dict[str, Any]
) -> None:
    event_id = str(uuid.uuid4())
    await append(client, "order-1", new("Paid", {"n": 1}, id=event_id))
    answer = await client.post(
        events_path(stream), json={"events": [{**new("Paid", {"n": 1}, id=event_id), **changed}]}
    )
    body = error_of(answer, 409, "duplicate_event_id")
    assert body["event_id"] == event_id
    assert body["stream"] == stream
    assert body["reason"]
    assert await store.head() == 1


# -- expected versions -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("stream", "expected", "first_version"),
    [
        ("order-1", "any", 2),
        ("order-9", "any", 0),
        ("order-1", None, 2),
        ("order-9", "no_stream", 0),
        ("order-1", "stream_exists", 2),
        ("order-1", 1, 2),
        ("order-1", "STREAM_EXISTS", 2),
    ],
)
async def test_an_expected_version_that_holds_appends(
    client: httpx.AsyncClient, stream: str, expected: Any, first_version: int
) -> None:
    await append(client, "order-1", new(), new())
    body = {} if expected is None else {"expected_version": expected}
    landed = await append(client, stream, new("Next"), **body)
    assert landed["first_version"] == first_version


@pytest.mark.parametrize(
    ("stream", "expected", "actual"),
    [
        ("order-1", "no_stream", 1),
        ("order-9", "stream_exists", None),
        ("order-1", 0, 1),
        ("order-1", 2, 1),
        ("order-9", 0, None),
        ("order-1", 2**70, 1),
    ],
)
async def test_an_expected_version_that_fails_is_409_with_expected_and_actual(
    client: httpx.AsyncClient,
    store: tidings.EventStore,
    stream: str,
    expected: Any,
    actual: int | None,
) -> None:
    await append(client, "order-1", new(), new())
    answer = await client.post(
        events_path(stream), json={"events": [new("Next")], "expected_version": expected}
    )
    body = error_of(answer, 409, "wrong_expected_version")
    assert body["stream"] == stream
    assert body["expected"] == expected
    assert "actual" in body and body["actual"] == actual  # null when the stream does not exist
    assert await store.head() == 2


# -- transactions and audit ------------------------------------------------------------


async def test_a_transaction_lands_every_append_with_one_audit_record(
    client: httpx.AsyncClient,
) -> None:
    await append(client, "order-1", new("Placed"))
    answer = await client.post(
        "/transactions",
        json={
            "appends": [
                {
                    "stream": "order-1",
                    "events": [new("Paid"), new("Packed")],
                    "expected_version": 0,
                },
                {"stream": "stock-7", "events": [new("Reserved")], "expected_version": "no_stream"},
            ],
            "audit": {"user": "alice", "extra": {"ip": "10.0.0.1", "request": 7}},
        },
    )
    assert answer.status_code == 201, answer.text
    assert answer.json() == {
        "results": [
            {"stream": "order-1", "first_version": 1, "last_version": 2, "position": 3},
            {"stream": "stock-7", "first_version": 0, "last_version": 0, "position": 4},
        ]
    }
    records = [(await client.get(f"/events/{p}/audit")).json() for p in (2, 3, 4)]
    assert records[0] == records[1] == records[2]
    record = records[0]
    assert record["user"] == "alice"
    assert record["extra"] == {"ip": "10.0.0.1", "request": 7}
    assert isinstance(record["id"], int)
    assert datetime.fromisoformat(record["created"]) <= datetime.fromisoformat(record["arrived"])
    outside = await client.get("/events/1/audit")
    error_of(outside, 404, "not_found")


async def test_each_transaction_has_an_audit_record_of_its_own(client: httpx.AsyncClient) -> None:
    for user in ("alice", "bob"):
        tx = {"appends": [{"stream": "order-1", "events": [new()]}], "audit": {"user": user}}
        assert (await client.post("/transactions", json=tx)).status_code == 201
    first, second = [(await client.get(f"/events/{p}/audit")).json() for p in (1, 2)]
    assert (first["user"], second["user"]) == ("alice", "bob")
    assert first["id"] != second["id"]
    assert first["extra"] == {}


async def test_a_transaction_without_audit_lands_without_a_record(
    client: httpx.AsyncClient,
) -> None:
    tx = {"appends": [{"stream": "a-1", "events": [new()]}, {"stream": "b-1", "events": [new()]}]}
    answer = await client.post("/transactions", json=tx)
    assert [r["position"] for r in answer.json()["results"]] == [1, 2]
    error_of(await client.get("/events/2/audit"), 404, "not_found")


# -- not found, wrong method -----------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/streams/nobody-1",
        "/events/1/audit",
        "/events/0/audit",
        "/events/-3/audit",
        "/events/99999999999999999999999/audit",
        "/no/such/route",
        "/streams/order-1/nothing",
    ],
)
async def test_what_is_not_there_is_404_not_found(client: httpx.AsyncClient, path: str) -> None:
    error_of(await client.get(path), 404, "not_found")


async def test_a_missing_stream_404_names_it(client: httpx.AsyncClient) -> None:
    body = error_of(await client.get("/streams/nobody-1"), 404, "not_found")
    assert body["stream"] == "nobody-1"


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/streams/order-1/events", {"GET", "POST"}),
        ("PUT", "/streams/order-1/events", {"GET", "POST"}),
        ("POST", "/head", {"GET"}),
        ("GET", "/transactions", {"POST"}),
        ("PATCH", "/events", {"GET"}),
        ("POST", "/streams/order-1", {"GET"}),
    ],
)
async def test_a_method_not_served_is_405_with_every_allowed_method(
    client: httpx.AsyncClient, method: str, path: str, allowed: set[str]
) -> None:
    answer = await client.request(method, path)
    error_of(answer, 405, "method_not_allowed")
    assert set(answer.headers["allow"].split(", ")) == allowed


# -- head, health, readiness, documents ------------------------------------------------


async def test_head_answers_the_last_position_and_long_polls_for_one(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.get("/head")).json()["head"] == 0
    await append(client, "order-1", new(), new())
    assert (await client.get("/head")).json()["head"] == 2
    reached = await client.get("/head", params={"at_least": 2, "wait": 30})
    assert reached.json()["head"] == 2  # already there: no wait
    waiter = asyncio.create_task(client.get("/head", params={"at_least": 3, "wait": 30}))
    await append(client, "order-1", new())
    assert (await asyncio.wait_for(waiter, 10)).json()["head"] == 3


async def test_healthz_and_readyz_answer_200_while_the_store_answers(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    await append(client, "order-1")
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "head": 1, "live_clients": 0}


async def test_a_closed_store_is_503_store_unavailable_with_retry_after(
    client: httpx.AsyncClient, store: tidings.EventStore
) -> None:
    await append(client, "order-1")
    await store.close()
    error_of(await client.get("/readyz"), 503, "store_unavailable")
    assert (await client.get("/healthz")).status_code == 200  # the process is still up
    for answer in [
        await client.get("/head"),
        await client.get("/events"),
        await client.post(events_path("order-1"), json={"events": [new()]}),
    ]:
        error_of(answer, 503, "store_unavailable")
        assert answer.headers["retry-after"] == "1"


@pytest.fixture
async def proxied_pg(pg_url: str) -> AsyncIterator[tuple[TcpProxy, tidings.EventStore]]:
    """A PostgreSQL store reached through a proxy the test can cut."""
    async with TcpProxy("127.0.0.1", 5432) as proxy:
        store = await tidings.connect(pg_url.replace(":5432/", f":{proxy.port}/"))
        try:
            yield proxy, store
        finally:
            proxy.refuse(False)
            await store.close()


@pytest.mark.postgres
async def test_readyz_is_503_while_postgresql_cannot_be_reached_and_200_once_back(
    proxied_pg: tuple[TcpProxy, tidings.EventStore],
) -> None:
    proxy, store = proxied_pg
    app = create_app(store, Settings())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/readyz")).status_code == 200
            proxy.refuse(True)
            proxy.cut()
            error_of(await client.get("/readyz"), 503, "store_unavailable")
            down = await client.get("/head")
            error_of(down, 503, "store_unavailable")
            assert down.headers["retry-after"] == "1"
            assert "password" not in down.text and str(proxy.port) not in down.text
            proxy.refuse(False)
            async with asyncio.timeout(10):  # the pool reconnects on its own
                while (await client.get("/readyz")).status_code != 200:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            assert (await client.get("/head")).json()["head"] == 0


async def test_the_openapi_document_and_docs_are_served(client: httpx.AsyncClient) -> None:
    answer = await client.get("/openapi.json")
    assert answer.status_code == 200
    document = answer.json()
    paths = document["paths"]
    for path, methods in {
        "/streams/{stream}/events": {"get", "post"},
        "/streams/{stream}": {"get"},
        "/streams": {"get"},
        "/events": {"get"},
        "/events/{position}/audit": {"get"},
        "/events/live": {"get"},
        "/streams/{stream}/events/live": {"get"},
        "/head": {"get"},
        "/transactions": {"post"},
        "/healthz": {"get"},
        "/readyz": {"get"},
    }.items():
        assert methods <= set(paths[path]), path
    schemas = document["components"]["schemas"]
    assert {"AppendBody", "EventIn", "RecordedEvent", "LogPage", "ErrorBody"} <= set(schemas)
    assert "HTTPValidationError" not in schemas  # every 422 is an ErrorBody
    docs = await client.get("/docs")
    assert docs.status_code == 200
    assert docs.headers["content-type"].startswith("text/html")
