"""``POST /gateway/send`` (a message to a WebSocket client on any node, admin) and
``POST /channels/{channel}`` (a channel notification, for clients without a socket)."""

from __future__ import annotations

from typing import Any

import msgspec
from fastapi import APIRouter, Request
from starlette.responses import Response

from tidings.errors import PayloadTooLarge
from tidings.server.auth import caller
from tidings.server.body import decode_body, reply
from tidings.server.errors import ApiError
from tidings.server.node import node_in
from tidings.server.openapi import body_of, responses
from tidings.wire import PublishBody, Published

router = APIRouter()


class Address(msgspec.Struct, forbid_unknown_fields=True):
    """A connection's address, as its ``ready`` message gave it."""

    node: str
    connection: str


class SendBody(msgspec.Struct, forbid_unknown_fields=True):
    """What to send (any JSON), and to whom: one connection, or every connection of a user."""

    data: Any
    connection: Address | None = None
    user: str | None = None


class Sent(msgspec.Struct):
    """The message was handed to the notifier (delivery is at most once)."""

    sent: bool = True


@router.post(
    "/gateway/send",
    status_code=202,
    summary="Send a message to a WebSocket client on any node",
    openapi_extra=body_of(SendBody),
    responses=responses(Sent, 202, errors=(400, 413, 415, 422, 503)),
)
async def send(request: Request) -> Response:
    """The client gets ``{"type": "message", "from": <sender>, "data": ...}`` if it is
    connected now, on whichever node."""
    node, who = node_in(request), await caller(request)
    who.require_admin()
    given = await decode_body(request, SendBody, node.settings.max_body_bytes)
    address = None if given.connection is None else msgspec.structs.asdict(given.connection)
    try:
        await node.gateway.send(given.data, who.subject, address, given.user)
    except PayloadTooLarge as exc:
        raise ApiError(413, "payload_too_large", str(exc)) from None
    return reply(Sent(), 202)


@router.post(
    "/channels/{channel}",
    status_code=202,
    summary="Publish a notification on a channel (every node's listeners get it)",
    openapi_extra=body_of(PublishBody),
    responses=responses(Published, 202, errors=(400, 413, 415, 422, 503)),
)
async def publish(channel: str, request: Request) -> Response:
    """The channel's WebSocket listeners get ``{"type": "notification", "channel",
    "key", "value"}``: at most once, as over the WebSocket's ``publish``."""
    node, who = node_in(request), await caller(request)
    if not who.may("publish", channel):
        raise ApiError(403, "forbidden", f"{who.subject} may not publish on {channel!r}")
    given = await decode_body(request, PublishBody, node.settings.max_body_bytes)
    try:
        await node.gateway.publish(channel, tuple(given.key), given.value)
    except PayloadTooLarge as exc:
        raise ApiError(413, "payload_too_large", str(exc)) from None
    return reply(Published(channel), 202)
