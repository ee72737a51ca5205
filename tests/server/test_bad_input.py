"""Bad requests on memory, SQLite and PostgreSQL: each gets its status and error code in
the one error body, never a 5xx, and writes nothing (the head does not move)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

import tidings
from tests.server.api import error_of, events_path, new

LIMIT = 2 * 1024 * 1024  # Settings.max_body_bytes by default
ORDER = "/streams/order-1/events"
SAME_ID = str(uuid.uuid4())
NOTHING = object()


def nested(depth: int) -> bytes:
    return b'{"events":[{"type":"A","data":' + b"[" * depth + b"]" * depth + b"}]}"


def bad(
    name: str,
    status: int,
    code: str,
    path: str = ORDER,
    *,
    method: str | None = None,
    json: Any = NOTHING,
    content: bytes | None = None,
    headers: dict[str, str] | None = None,
    params: Any = None,
) -> Any:
    """One row of the table: a request and the status and code it must get."""
    if method is None:
        method = "GET" if json is NOTHING and content is None else "POST"
    request = {"json": json, "content": content, "headers": headers, "params": params}
    return pytest.param(method, path, request, status, code, id=name)


def one(**event: Any) -> dict[str, Any]:
    """A body of one event."""
    return {"events": [event]}


def tx(*appends: dict[str, Any], **body: Any) -> dict[str, Any]:
    return {"appends": list(appends), **body}


BAD_REQUESTS = [
    # -- not JSON, or not UTF-8
    bad("malformed JSON", 400, "invalid_input", content=b'{"events": ['),
    bad("not JSON at all", 400, "invalid_input", content=b"events please"),
    bad("an empty body", 400, "invalid_input", content=b""),
    bad("a NaN literal", 400, "invalid_input", content=b'{"events":[{"type":"A","data":NaN}]}'),
    bad("trailing garbage", 400, "invalid_input", content=b'{"events":[{"type":"A"}]} {}'),
    bad("a non-UTF-8 body", 400, "invalid_input", content=b'{"events":[{"type":"\xff\xfe"}]}'),
    bad(
        "a latin-1 body",
        400,
        "invalid_input",
        content='{"events":[{"type":"Café"}]}'.encode("latin-1"),
        headers={"content-type": "application/json; charset=latin-1"},
    ),
    bad("nesting past the decoder's depth", 400, "invalid_input", content=nested(20_000)),
    # -- the wrong shape (422) or wrong types
    bad("a list for a body", 422, "validation_error", json=[new()]),
    bad("null for a body", 422, "validation_error", content=b"null"),
    bad("no events field", 422, "validation_error", json={}),
    bad("events not a list", 422, "validation_error", json={"events": {"type": "A"}}),
    bad("an event that is a string", 422, "validation_error", json={"events": ["Placed"]}),
    bad("an event without a type", 422, "validation_error", json=one(data={"n": 1})),
    bad("a type that is a number", 422, "validation_error", json=one(type=7)),
    bad("metadata that is a list", 422, "validation_error", json=one(type="A", metadata=[1])),
    bad("metadata that is a string", 422, "validation_error", json=one(type="A", metadata="m")),
    bad("an id that is no UUID", 422, "validation_error", json=one(type="A", id="abc")),
    bad("an id that is a number", 422, "validation_error", json=one(type="A", id=12)),
    bad(
        "a number past float range",
        422,
        "validation_error",
        content=b'{"events":[{"type":"A","data":1e400}]}',
    ),
    bad(
        "an unknown field in the body", 422, "validation_error", json={**one(type="A"), "expect": 0}
    ),
    bad("an unknown field in an event", 422, "validation_error", json=one(type="A", dta={"n": 1})),
    # -- events the store refuses (400 invalid_event)
    bad("no events", 400, "invalid_event", json={"events": []}),
    bad("an empty type", 400, "invalid_event", json=one(type="")),
    bad("an overlong type", 400, "invalid_event", json=one(type="T" * 256)),
    bad("a type with a control character", 400, "invalid_event", json=one(type="Pla\x07ced")),
    bad("a type with a line break", 400, "invalid_event", json=one(type="Placed\n")),
    bad("a type with NUL", 400, "invalid_event", json=one(type="\x00")),
    bad("data with a NUL character", 400, "invalid_event", json=one(type="A", data="a\x00b")),
    bad("a data key with NUL", 400, "invalid_event", json=one(type="A", data={"\x00": 1})),
    bad("metadata with NUL", 400, "invalid_event", json=one(type="A", metadata={"k": "\x00"})),
    bad(
        "an event over the store's event limit",
        400,
        "invalid_event",
        json=one(type="A", data="x" * (1024 * 1024 + 1)),
    ),
    bad(
        "the same id twice in one append",
        400,
        "invalid_event",
        json={"events": [new("A", id=SAME_ID), new("B", id=SAME_ID)]},
    ),
    # -- bad stream names in the path
    bad("an empty stream name", 400, "invalid_event", "/streams//events", json=one(type="A")),
    bad(
        "an overlong stream name", 400, "invalid_event", events_path("s" * 256), json=one(type="A")
    ),
    bad(
        "a stream name with a control character",
        400,
        "invalid_event",
        events_path("order\x01"),
        json=one(type="A"),
    ),
    bad(
        "a stream name with a line break",
        400,
        "invalid_event",
        events_path("order\n1"),
        json=one(type="A"),
    ),
    bad(
        "a stream name with a tab",
        400,
        "invalid_event",
        events_path("order\t1"),
        json=one(type="A"),
    ),
    bad(
        "a stream name with NUL",
        400,
        "invalid_input",
        events_path("order\x001"),
        json=one(type="A"),
    ),
    # -- expected versions
    bad(
        "expected_version -1",
        400,
        "invalid_expected_version",
        json={**one(type="A"), "expected_version": -1},
    ),
    bad(
        "expected_version nope",
        400,
        "invalid_expected_version",
        json={**one(type="A"), "expected_version": "nope"},
    ),
    bad(
        "expected_version empty",
        400,
        "invalid_expected_version",
        json={**one(type="A"), "expected_version": ""},
    ),
    bad(
        "expected_version true",
        422,
        "validation_error",
        json={**one(type="A"), "expected_version": True},
    ),
    bad(
        "expected_version 1.5",
        422,
        "validation_error",
        json={**one(type="A"), "expected_version": 1.5},
    ),
    bad(
        "expected_version a list",
        422,
        "validation_error",
        json={**one(type="A"), "expected_version": [0]},
    ),
    bad(
        "expected_version past every version",
        409,
        "wrong_expected_version",
        json={**one(type="A"), "expected_version": 2**70},
    ),
    # -- size and media type
    bad(
        "a body over the limit, with Content-Length",
        413,
        "payload_too_large",
        content=b" " * (LIMIT + 1),
    ),
    bad(
        "text/plain",
        415,
        "unsupported_media_type",
        content=b'{"events":[{"type":"A"}]}',
        headers={"content-type": "text/plain"},
    ),
    bad(
        "a form",
        415,
        "unsupported_media_type",
        content=b"events=A",
        headers={"content-type": "application/x-www-form-urlencoded"},
    ),
    bad(
        "multipart",
        415,
        "unsupported_media_type",
        content=b"--x--",
        headers={"content-type": "multipart/form-data; boundary=x"},
    ),
    # -- transactions
    bad("a transaction of no appends", 400, "invalid_event", "/transactions", json=tx()),
    bad("appends not a list", 422, "validation_error", "/transactions", json={"appends": {}}),
    bad("a transaction without appends", 422, "validation_error", "/transactions", json={}),
    bad(
        "an append without a stream",
        422,
        "validation_error",
        "/transactions",
        json=tx({"events": [new()]}),
    ),
    bad(
        "an append with no events",
        400,
        "invalid_event",
        "/transactions",
        json=tx({"stream": "order-2", "events": []}),
    ),
    bad(
        "an append to an empty name",
        400,
        "invalid_event",
        "/transactions",
        json=tx({"stream": "", "events": [new()]}),
    ),
    bad(
        "an unknown field in an append",
        422,
        "validation_error",
        "/transactions",
        json=tx({"stream": "order-2", "events": [new()], "expect": 1}),
    ),
    bad(
        "a bad expected_version in an append",
        400,
        "invalid_expected_version",
        "/transactions",
        json=tx({"stream": "order-2", "events": [new()], "expected_version": -1}),
    ),
    bad(
        "an audit without a user",
        422,
        "validation_error",
        "/transactions",
        json=tx({"stream": "order-2", "events": [new()]}, audit={}),
    ),
    bad(
        "an audit user that is a number",
        422,
        "validation_error",
        "/transactions",
        json=tx({"stream": "order-2", "events": [new()]}, audit={"user": 1}),
    ),
    bad(
        "audit extra that is a list",
        422,
        "validation_error",
        "/transactions",
        json=tx({"stream": "order-2", "events": [new()]}, audit={"user": "al", "extra": []}),
    ),
    bad(
        "an unknown field in the audit",
        422,
        "validation_error",
        "/transactions",
        json=tx({"stream": "order-2", "events": [new()]}, audit={"user": "al", "ip": "x"}),
    ),
    bad(
        "an audit user with NUL",
        400,
        "invalid_event",
        "/transactions",
        json=tx({"stream": "order-2", "events": [new()]}, audit={"user": "a\x00l"}),
    ),
    bad(
        "audit extra with NUL",
        400,
        "invalid_event",
        "/transactions",
        json=tx(
            {"stream": "order-2", "events": [new()]}, audit={"user": "al", "extra": {"ip": "\x00"}}
        ),
    ),
    bad(
        "a transaction as text/plain",
        415,
        "unsupported_media_type",
        "/transactions",
        content=b"{}",
        headers={"content-type": "text/plain"},
    ),
    # -- query parameters
    bad("from_position=-1", 422, "validation_error", "/events", params={"from_position": -1}),
    bad("from_position=abc", 422, "validation_error", "/events", params={"from_position": "abc"}),
    bad(
        "from_position past int64",
        422,
        "validation_error",
        "/events",
        params={"from_position": 2**63},
    ),
    bad("from_position=1.5", 422, "validation_error", "/events", params={"from_position": "1.5"}),
    bad("limit=abc", 422, "validation_error", "/events", params={"limit": "abc"}),
    bad("limit=-1", 422, "validation_error", "/events", params={"limit": -1}),
    bad("category= empty", 400, "invalid_input", "/events", params={"category": ""}),
    bad(
        "one category empty of two",
        400,
        "invalid_input",
        "/events",
        params=[("category", "order"), ("category", "")],
    ),
    bad("type= empty", 400, "invalid_input", "/events", params={"type": ""}),
    bad("stream_pattern=(", 400, "invalid_input", "/events", params={"stream_pattern": "("}),
    bad("stream_pattern=[a-", 400, "invalid_input", "/events", params={"stream_pattern": "[a-"}),
    bad("category with NUL", 400, "invalid_input", "/events", params={"category": "or\x00der"}),
    bad("type with NUL", 400, "invalid_input", "/events", params={"type": "\x00"}),
    bad(
        "stream_prefix with NUL", 400, "invalid_input", "/events", params={"stream_prefix": "\x00"}
    ),
    bad("direction=sideways", 422, "validation_error", ORDER, params={"direction": "sideways"}),
    bad("from_version=-1", 422, "validation_error", ORDER, params={"from_version": -1}),
    bad("from_version past int64", 422, "validation_error", ORDER, params={"from_version": 2**63}),
    bad("a stream read with NUL", 400, "invalid_input", events_path("order\x00")),
    bad("a stream version with NUL", 400, "invalid_input", "/streams/order%00"),
    bad("streams limit=-5", 422, "validation_error", "/streams", params={"limit": -5}),
    bad("streams prefix with NUL", 400, "invalid_input", "/streams", params={"prefix": "\x00"}),
    bad("streams after with NUL", 400, "invalid_input", "/streams", params={"after": "a\x00"}),
    bad("an audit position that is no int", 422, "validation_error", "/events/abc/audit"),
    bad("head at_least=-1", 422, "validation_error", "/head", params={"at_least": -1}),
    bad("head wait=61", 422, "validation_error", "/head", params={"at_least": 9, "wait": 61}),
    bad("head wait=soon", 422, "validation_error", "/head", params={"wait": "soon"}),
    # -- live reads refused before they stream
    bad(
        "Last-Event-ID: abc", 400, "invalid_input", "/events/live", headers={"Last-Event-ID": "abc"}
    ),
    bad("Last-Event-ID: -1", 400, "invalid_input", "/events/live", headers={"Last-Event-ID": "-1"}),
    bad(
        "Last-Event-ID past int64",
        400,
        "invalid_input",
        "/events/live",
        headers={"Last-Event-ID": str(2**63)},
    ),
    bad("last_event_id=x", 400, "invalid_input", "/events/live", params={"last_event_id": "x"}),
    bad(
        "live from_position=-1",
        422,
        "validation_error",
        "/events/live",
        params={"from_position": -1},
    ),
    bad(
        "live stream_pattern=(",
        400,
        "invalid_input",
        "/events/live",
        params={"stream_pattern": "("},
    ),
    bad("live category= empty", 400, "invalid_input", "/events/live", params={"category": ""}),
    # -- positions past what any backend holds (SQLite raised OverflowError, a 500)
    bad(
        "an event stream's initial_position 2**63",
        422,
        "validation_error",
        "/eventstreams",
        json={"name": "big", "type": "websocket", "initial_position": 2**63},
    ),
    bad(
        "a subscription's start 2**63",
        422,
        "validation_error",
        "/subscriptions",
        json={"name": "big", "start": 2**63},
    ),
    bad(
        "a redelivery to_position 2**63",
        422,
        "validation_error",
        "/eventstreams/none/redeliver",
        json={"from_position": 1, "to_position": 2**63},
    ),
    bad(
        "a stream's Last-Event-ID: abc",
        400,
        "invalid_input",
        "/streams/order-1/events/live",
        headers={"Last-Event-ID": "abc"},
    ),
]


async def written(store: tidings.EventStore) -> tuple[int, list[tidings.StreamInfo]]:
    """What the store holds: its head and its streams."""
    return await store.head(), [s async for s in store.list_streams()]


@pytest.fixture
async def seeded(store: tidings.EventStore) -> tuple[int, list[tidings.StreamInfo]]:
    """One event in order-1: what the store holds before the test. (On a store that
    ``refusing_store`` shares, the same append again replays the first: still one.)"""
    await store.append("order-1", [tidings.NewEvent("Placed", {"n": 1}, id=uuid.UUID(SAME_ID))])
    return await written(store)


@pytest.mark.parametrize(("method", "path", "request_", "status", "code"), BAD_REQUESTS)
async def test_a_bad_request_gets_its_status_and_code_and_writes_nothing(
    client: httpx.AsyncClient,
    refusing_store: tidings.EventStore,
    seeded: tuple[int, list[tidings.StreamInfo]],
    method: str,
    path: str,
    request_: dict[str, Any],
    status: int,
    code: str,
) -> None:
    kwargs = {k: v for k, v in request_.items() if v is not None and v is not NOTHING}
    async with asyncio.timeout(30):  # a live read that is not refused would never end
        answer = await client.request(method, path, **kwargs)
    body = error_of(answer, status, code)
    if status == 413:
        assert body["limit"] == LIMIT
    assert await written(refusing_store) == seeded


async def _chunks(total: int, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    yield b'{"events":[{"type":"A","data":"'
    sent = 0
    while sent < total:
        yield b"x" * size
        sent += size
    yield b'"}]}'


@pytest.mark.parametrize("path", [ORDER, "/transactions"])
async def test_a_chunked_body_over_the_limit_is_413_without_content_length(
    client: httpx.AsyncClient,
    store: tidings.EventStore,
    seeded: tuple[int, list[tidings.StreamInfo]],
    path: str,
) -> None:
    answer = await client.post(
        path, content=_chunks(LIMIT + 1), headers={"content-type": "application/json"}
    )
    assert "content-length" not in answer.request.headers
    assert answer.request.headers["transfer-encoding"] == "chunked"
    body = error_of(answer, 413, "payload_too_large")
    assert body["limit"] == LIMIT
    assert await written(store) == seeded


async def test_a_chunked_body_within_the_limit_is_read_whole(
    client: httpx.AsyncClient, store: tidings.EventStore
) -> None:
    answer = await client.post(
        ORDER, content=_chunks(512 * 1024), headers={"content-type": "application/json"}
    )
    assert answer.status_code == 201, answer.text
    [event] = [e async for e in store.read_stream("order-1")]
    assert event.data == "x" * (512 * 1024)


TRANSACTIONS_THAT_FAIL_LATE = [
    pytest.param(
        {"stream": "order-1", "events": [new("Paid")], "expected_version": "no_stream"},
        409,
        "wrong_expected_version",
        id="the second append expects no stream",
    ),
    pytest.param(
        {"stream": "order-1", "events": [new("Paid")], "expected_version": 5},
        409,
        "wrong_expected_version",
        id="the second append expects another version",
    ),
    pytest.param(
        {"stream": "order-3", "events": [new("Other", id=SAME_ID)]},
        409,
        "duplicate_event_id",
        id="the second append reuses a stored id",
    ),
    pytest.param(
        {"stream": "order-3", "events": [new("Bad\x01Type")]},
        400,
        "invalid_event",
        id="the second append is invalid",
    ),
]


@pytest.mark.parametrize(("second", "status", "code"), TRANSACTIONS_THAT_FAIL_LATE)
async def test_a_transaction_whose_second_append_fails_writes_nothing_of_the_first(
    client: httpx.AsyncClient,
    store: tidings.EventStore,
    seeded: tuple[int, list[tidings.StreamInfo]],
    second: dict[str, Any],
    status: int,
    code: str,
) -> None:
    first = {"stream": "order-2", "events": [new("Placed"), new("Paid")]}
    answer = await client.post("/transactions", json=tx(first, second, audit={"user": "al"}))
    body = error_of(answer, status, code)
    if code == "wrong_expected_version":
        assert body["stream"] == "order-1"
        assert body["actual"] == 0
    error_of(await client.get("/streams/order-2"), 404, "not_found")
    assert (await client.get("/streams/order-2/events")).json()["events"] == []
    assert (await client.get("/events/2/audit")).status_code == 404
    assert await written(store) == seeded
