"""Credentials, origins and scopes on ``GET /ws`` (docs/protocol.md, "Connecting", "Tokens
and liveness"), against a real ``tidings serve`` with API keys and HS256 JWTs."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import jwt as pyjwt
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.gateway.conftest import (
    ADMIN_KEY,
    ALLOWED_ORIGIN,
    NARROW_CATEGORY,
    NARROW_KEY,
    Client,
    append,
    category,
    connect,
    http_client,
    token,
)
from tests.served import Served

pytestmark = pytest.mark.timeout(60)


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def route(way: str, credential: str) -> dict[str, Any]:
    """The ``connect`` arguments that carry ``credential`` by ``way``."""
    if way == "bearer":
        return {"headers": bearer(credential)}
    if way == "x_api_key":
        return {"headers": {"X-API-Key": credential}}
    if way == "subprotocol":
        return {"subprotocols": ["tidings.v1", f"tidings.token.{credential}"]}
    assert way == "query"
    return {"query": f"?access_token={credential}"}


WAYS = ["bearer", "x_api_key", "subprotocol", "query"]


async def refused_at_once(client: Client) -> None:
    """The connection is closed with 1008 and a reason before any message."""
    try:
        message = await client.recv(wait=3)
    except ConnectionClosed:
        pass
    else:
        raise AssertionError(f"{message} came before the close")
    assert client.close_code == 1008
    assert client.close_reason


def exp_of(jwt: str) -> float:
    exp: float = pyjwt.decode(jwt, options={"verify_signature": False})["exp"]
    return exp


# -- the first-message auth ------------------------------------------------------------


async def test_a_first_message_auth_with_a_key_gets_ready_with_its_id(auth_server: Served) -> None:
    async with connect(auth_server) as client:
        await client.send({"type": "auth", "id": "a1", "token": ADMIN_KEY})
        ready = await client.ready()
        assert set(ready) == {"type", "id", "protocol", "address", "user", "expires", "store"}
        assert ready["id"] == "a1"
        assert ready["protocol"] == "tidings.v1"
        assert set(ready["address"]) == {"node", "connection"}
        assert ready["user"] is None and ready["expires"] is None  # an API key
        await client.subscribe("s", **{"from": "end"})


async def test_a_first_message_auth_with_a_jwt_gets_ready_with_its_user(
    auth_server: Served,
) -> None:
    jwt = token("carol")
    async with connect(auth_server) as client:
        await client.send({"type": "auth", "id": 7, "token": jwt})
        ready = await client.ready()
        assert ready["id"] == 7
        assert ready["user"] == "carol"
        assert ready["expires"] == exp_of(jwt)


async def test_no_auth_message_within_auth_timeout_closes_with_4001(auth_server: Served) -> None:
    async with connect(auth_server) as client:  # auth_timeout is 1 s
        started = time.monotonic()
        messages = await client.closed()
        waited = time.monotonic() - started
        assert client.close_code == 4001
        assert [m["type"] for m in messages] == ["closing"], messages
        assert messages[0]["code"] == 4001 and messages[0]["reason"], messages
        assert 0.8 <= waited < 4, waited


@pytest.mark.parametrize(
    "first",
    [
        {"type": "ping", "id": 1},
        {"type": "subscribe", "id": 1, "sub": "s"},
        {"type": "refresh", "id": 1, "token": ADMIN_KEY},
    ],
    ids=["ping", "subscribe", "refresh"],
)
async def test_a_first_message_other_than_auth_closes_with_1008(
    auth_server: Served, first: dict[str, Any]
) -> None:
    async with connect(auth_server) as client:
        await client.send(first)
        messages = await client.closed()
        assert [m["type"] for m in messages] == ["closing"], messages  # no reply to it
        assert messages[0]["code"] == 1008 and messages[0]["reason"], messages
        assert client.close_code == 1008


@pytest.mark.parametrize(
    "first",
    [
        pytest.param("{not json"),
        pytest.param('{"type": "nope", "id": 1}'),
        pytest.param('{"type": "auth", "id": 1}'),
        pytest.param('{"type": "auth", "id": 1, "token": "k", "extra": 1}'),
    ],
    ids=["invalid_json", "unknown_type", "auth_without_token", "auth_with_unknown_field"],
)
async def test_a_first_message_that_is_not_a_valid_auth_closes_with_1008(
    auth_server: Served, first: str
) -> None:
    async with connect(auth_server) as client:
        await client.send(first)
        messages = await client.closed(only=("closing",))  # no error reply
        assert [m["type"] for m in messages] == ["closing"], messages
        assert client.close_code == 1008


async def test_the_auth_deadline_is_not_pushed_back_by_other_messages(
    auth_server: Served,
) -> None:
    async with connect(auth_server) as client:  # auth_timeout is 1 s
        with contextlib.suppress(ConnectionClosed):
            for _ in range(3):
                await client.send("{not json")
                await asyncio.sleep(0.6)
            await client.send({"type": "auth", "id": 1, "token": ADMIN_KEY})
        with contextlib.suppress(ConnectionClosed):
            while True:
                message = await client.recv()
                assert message["type"] != "ready", message
        assert client.close_code in (1008, 4001)


@pytest.mark.parametrize("bad", ["not-a-key", "expired"], ids=["unknown_key", "expired_jwt"])
async def test_a_first_message_auth_with_bad_credentials_closes_with_1008(
    auth_server: Served, bad: str
) -> None:
    credential = token(expires_in=-30) if bad == "expired" else bad
    async with connect(auth_server) as client:
        await client.send({"type": "auth", "id": 1, "token": credential})
        messages = await client.closed()
        # nothing but, at most, the closing message that comes before every close
        assert [m["type"] for m in messages] in ([], ["closing"]), messages
        assert all(m["code"] == 1008 for m in messages), messages
        assert client.close_code == 1008
        assert client.close_reason


# -- credentials in the handshake ------------------------------------------------------


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("bad", ["unknown_key", "expired_jwt", "bad_signature"])
async def test_bad_credentials_in_the_handshake_close_with_1008_before_anything(
    auth_server: Served, way: str, bad: str
) -> None:
    credential = {
        "unknown_key": "not-a-key-0123456789",
        "expired_jwt": token(expires_in=-30),
        "bad_signature": token()[:-4] + "AAAA",
    }[bad]
    async with connect(auth_server, **route(way, credential)) as client:
        await refused_at_once(client)


async def test_a_malformed_authorization_header_closes_with_1008(auth_server: Served) -> None:
    async with connect(auth_server, headers={"Authorization": f"Basic {ADMIN_KEY}"}) as client:
        await refused_at_once(client)


@pytest.mark.parametrize(
    ("way", "kind"),
    [(way, kind) for way in WAYS for kind in ("key", "jwt") if (way, kind) != ("x_api_key", "jwt")],
)
async def test_good_credentials_in_the_handshake_are_accepted(
    auth_server: Served, way: str, kind: str
) -> None:
    credential = ADMIN_KEY if kind == "key" else token("dave")
    c = category()
    async with (
        http_client(auth_server, ADMIN_KEY) as http,
        connect(auth_server, **route(way, credential)) as client,
    ):
        assert client.ws.subprotocol == "tidings.v1"
        ready = await client.ready()
        assert "id" not in ready
        assert ready["user"] == (None if kind == "key" else "dave")
        assert ready["expires"] == (None if kind == "key" else exp_of(credential))
        await client.subscribe("s", filter={"categories": [c]}, ack="auto")
        await append(http, f"{c}-1", 2)
        assert len(await client.events("s", 2)) == 2


def sub_token(credential: str) -> list[str]:
    return ["tidings.v1", f"tidings.token.{credential}"]


@pytest.mark.parametrize(
    ("given", "accepted"),
    [
        ({"headers": bearer(ADMIN_KEY), "query": "?access_token=bad"}, True),
        ({"headers": bearer("bad"), "query": f"?access_token={ADMIN_KEY}"}, False),
        ({"subprotocols": sub_token(ADMIN_KEY), "query": "?access_token=bad"}, True),
        ({"subprotocols": sub_token("bad"), "query": f"?access_token={ADMIN_KEY}"}, False),
        pytest.param(
            {"headers": bearer(ADMIN_KEY), "subprotocols": sub_token("bad")},
            True,
        ),
        pytest.param(
            {"headers": bearer("bad"), "subprotocols": sub_token(ADMIN_KEY)},
            False,
        ),
    ],
    ids=[
        "good_header_then_bad_query",
        "bad_header_then_good_query",
        "good_subprotocol_then_bad_query",
        "bad_subprotocol_then_good_query",
        "good_header_then_bad_subprotocol",
        "bad_header_then_good_subprotocol",
    ],
)
async def test_the_first_credential_present_is_the_one_used(
    auth_server: Served, given: dict[str, Any], accepted: bool
) -> None:
    """The order: the Authorization header, a token subprotocol, ``?access_token=``."""
    async with connect(auth_server, **given) as client:
        if accepted:
            await client.ready()
            await client.still_open()
        else:
            await refused_at_once(client)


async def test_auth_after_handshake_credentials_is_already_authenticated(
    auth_server: Served,
) -> None:
    async with connect(auth_server, headers=bearer(ADMIN_KEY)) as client:
        await client.ready()
        message = {"type": "auth", "id": "again", "token": ADMIN_KEY}
        reply = await client.error(message, "already_authenticated")
        assert reply["id"] == "again"


async def test_a_second_auth_message_is_already_authenticated(auth_server: Served) -> None:
    async with connect(auth_server) as client:
        await client.send({"type": "auth", "id": 1, "token": ADMIN_KEY})
        await client.ready()
        reply = await client.error(
            {"type": "auth", "id": 2, "token": ADMIN_KEY}, "already_authenticated"
        )
        assert reply["id"] == 2


# -- origins ---------------------------------------------------------------------------


async def test_a_foreign_origin_has_its_handshake_refused_with_403(auth_server: Served) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(auth_server, headers=bearer(ADMIN_KEY), origin="https://evil.example"):
            pass
    assert refused.value.response.status_code == 403


@pytest.mark.parametrize("which", ["allowed", "same"])
async def test_an_allowed_or_the_servers_own_origin_is_accepted(
    auth_server: Served, which: str
) -> None:
    origin = ALLOWED_ORIGIN if which == "allowed" else auth_server.url
    async with connect(auth_server, headers=bearer(ADMIN_KEY), origin=origin) as client:
        await client.ready()
        await client.still_open()


# -- scopes ----------------------------------------------------------------------------


async def test_a_category_outside_the_callers_scopes_is_forbidden(auth_server: Served) -> None:
    mine, theirs = category(), category()
    async with connect(auth_server, headers=bearer(token(scope=f"subscribe:{mine}"))) as client:
        await client.ready()
        for categories in ([theirs], [mine, theirs]):
            message = {
                "type": "subscribe",
                "id": 1,
                "sub": "s",
                "filter": {"categories": categories},
            }
            reply = await client.error(message, "forbidden")
            assert reply["id"] == 1
        await client.subscribe("s", filter={"categories": [mine]})


async def test_read_scopes_do_not_let_a_caller_subscribe(auth_server: Served) -> None:
    c = category()
    async with connect(auth_server, headers=bearer(token(scope="read:* append:*"))) as client:
        await client.ready()
        message = {"type": "subscribe", "id": 1, "sub": "s", "filter": {"categories": [c]}}
        await client.error(message, "forbidden")


@pytest.mark.parametrize(
    "given",
    [None, {}, {"types": ["T"]}],
    ids=["no_filter", "empty_filter", "types_only"],
)
async def test_a_subscription_naming_no_category_is_narrowed_to_the_allowed_ones(
    auth_server: Served, given: dict[str, Any] | None
) -> None:
    mine, theirs = category(), category()
    jwt = token(scope=[f"subscribe:{mine}", "read:*"])
    fields = {} if given is None else {"filter": given}
    async with (
        http_client(auth_server, ADMIN_KEY) as http,
        connect(auth_server, headers=bearer(jwt)) as client,
    ):
        await client.ready()
        await client.subscribe("s", ack="auto", **{"from": "end"}, **fields)
        await append(http, f"{theirs}-1", 3)
        await append(http, f"{mine}-1", 2)
        await append(http, f"{theirs}-2", 3)
        await append(http, f"{mine}-2", 1, fence=True)
        got: list[dict[str, Any]] = []
        while not got or not got[-1]["data"].get("fence"):
            got.extend((await client.batch("s"))["events"])
        assert [e["stream"] for e in got] == [f"{mine}-1", f"{mine}-1", f"{mine}-2"]
        await client.quiet()


async def test_an_api_keys_scopes_narrow_its_subscriptions(auth_server: Served) -> None:
    other = category()
    async with (
        http_client(auth_server, ADMIN_KEY) as http,
        connect(auth_server, headers=bearer(NARROW_KEY)) as client,
    ):
        await client.ready()
        message = {"type": "subscribe", "id": 1, "sub": "s", "filter": {"categories": [other]}}
        await client.error(message, "forbidden")
        await client.subscribe("s", ack="auto", **{"from": "end"})
        await append(http, f"{other}-1", 2)
        await append(http, f"{NARROW_CATEGORY}-1", 1)
        got = await client.events("s", 1)
        assert got[0]["stream"] == f"{NARROW_CATEGORY}-1"
        await client.quiet()


# -- token expiry and refresh ----------------------------------------------------------


async def test_a_jwt_that_expires_while_connected_closes_with_1008_after_closing(
    auth_server: Served,
) -> None:
    jwt = token(expires_in=1.5)
    async with connect(auth_server, headers=bearer(jwt)) as client:
        ready = await client.ready()
        assert ready["user"] == "alice" and ready["expires"] == exp_of(jwt)
        subscribed = await client.subscribe("s", **{"from": "end"})
        messages = await client.closed(wait=6)
        closed_at = time.time()
        assert [m["type"] for m in messages] == ["closing"], messages
        assert messages[0]["code"] == 1008
        assert isinstance(messages[0]["reason"], str) and messages[0]["reason"]
        assert set(messages[0]["resume"]) == {"s"}
        assert messages[0]["resume"]["s"] >= subscribed["position"]
        assert client.close_code == 1008
        assert closed_at >= ready["expires"] - 0.1  # not before it expired


async def test_a_refresh_with_a_later_token_keeps_the_connection_open(
    auth_server: Served,
) -> None:
    first, later = token("erin", expires_in=1.5), token("erin", expires_in=60)
    async with connect(auth_server, headers=bearer(first)) as client:
        ready = await client.ready()
        reply = await client.request({"type": "refresh", "id": 3, "token": later})
        assert reply["type"] == "refreshed" and reply["id"] == 3, reply
        assert reply["expires"] == exp_of(later)
        await asyncio.sleep(max(0.0, ready["expires"] - time.time()) + 1.0)
        await client.still_open()


@pytest.mark.parametrize(
    ("fresh", "code"),
    [
        (lambda: token("mallory", expires_in=60), "forbidden"),
        (lambda: "not-a-token", "unauthorized"),
        (lambda: token("frank", expires_in=-30), "unauthorized"),
    ],
    ids=["another_subject", "bad_token", "expired_token"],
)
async def test_a_refused_refresh_keeps_the_old_token(
    auth_server: Served, fresh: Any, code: str
) -> None:
    first = token("frank", expires_in=1.5)
    async with connect(auth_server, headers=bearer(first)) as client:
        await client.ready()
        reply = await client.error({"type": "refresh", "id": "r", "token": fresh()}, code)
        assert reply["id"] == "r"
        messages = await client.closed(wait=6)  # the old token still expires
        assert [m["type"] for m in messages] == ["closing"], messages
        assert client.close_code == 1008
