"""Managed event streams over HTTP: ``/eventstreams`` and its verbs.

The work is ``tidings.delivery.streams``'; this module decodes bodies and checks that
the caller is an admin (a stream's webhook sends the log out of the server, and its
definition may hold credentials in headers). Refusals take their status from the one
error table (``tidings.wire.ERRORS``): 404 for no such stream, 409 ``already_exists``
for a taken name, 400 for a definition the checks refuse; 422 for one of the wrong
shape.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from tidings.delivery.definitions import Definition, is_id
from tidings.delivery.records import Attempt, Parked, StreamInfo
from tidings.delivery.streams import EventStreams
from tidings.errors import NotFound
from tidings.server.auth import Caller
from tidings.server.body import decode_body, reply
from tidings.server.errors import ApiError
from tidings.server.node import Node, node_in
from tidings.server.openapi import body_of, responses
from tidings.server.routes.store import NodeDep
from tidings.wire import MAX_POSITION

router = APIRouter(tags=["eventstreams"])
Limit = Annotated[int, Query(ge=1, le=1000, description="the most items")]


async def streams_of(request: Request, who: Caller) -> EventStreams:
    """The node's event streams (a FastAPI dependency), for admins only."""
    who.require_admin()
    node: Node = node_in(request)
    found = node.streams()
    if found is None:
        raise ApiError(400, "invalid_input", "event streams need a local store")
    return found


Streams = Annotated[EventStreams, Depends(streams_of)]


class StreamCreated(StreamInfo):
    """A stream as created: its info and, once only, the secret that signs its webhook
    deliveries (keep it: it is never shown again)."""

    secret: str | None = None


class StreamsPage(msgspec.Struct):
    """``GET /eventstreams``: streams by name; ``next`` is the ``after`` of the next page."""

    items: list[StreamInfo]
    next: str | None


class AttemptsPage(msgspec.Struct):
    """``GET /eventstreams/{name_or_id}/attempts``: newest first; ``next`` is the
    ``before`` of the next page."""

    items: list[Attempt]
    next: int | None


class ParkedPage(msgspec.Struct):
    """``GET /eventstreams/{name_or_id}/parked``: by position; ``next`` is the
    ``after`` of the next page."""

    items: list[Parked]
    next: int | None


class RedeliverBody(msgspec.Struct, forbid_unknown_fields=True):
    """``POST .../redeliver``: the range to send again (both ends included); with
    ``parked``, the parked events in it, which are parked no more once they land."""

    from_position: Annotated[int, msgspec.Meta(ge=1, le=MAX_POSITION)]
    to_position: Annotated[int, msgspec.Meta(ge=1, le=MAX_POSITION)]
    parked: bool = False


class ResetBody(msgspec.Struct, forbid_unknown_fields=True):
    """``POST .../reset``: the new checkpoint; without it, the initial position."""

    position: Annotated[int, msgspec.Meta(ge=0, le=MAX_POSITION)] | None = None


def _created(info: StreamInfo, secret: str | None) -> StreamCreated:
    return StreamCreated(**msgspec.structs.asdict(info), secret=secret)


_CHANGES = (400, 401, 403, 404, 413, 415, 422, 503)
_MERGE_PATCH = {
    "requestBody": {
        "required": True,
        "content": {
            media: {"schema": {"type": "object", "description": "fields of a definition"}}
            for media in ("application/merge-patch+json", "application/json")
        },
    }
}


def _errors(codes: tuple[int, ...]) -> dict[int | str, dict[str, Any]]:
    found = responses(StreamInfo, errors=codes)
    found.pop(200)
    return found


@router.post(
    "/eventstreams",
    status_code=201,
    summary="Create an event stream",
    openapi_extra=body_of(Definition),
    responses=responses(StreamCreated, 201, errors=(400, 401, 403, 409, 413, 415, 422, 503)),
)
async def create(request: Request, node: NodeDep, streams: Streams) -> Response:
    """Store a stream and start it; 409 ``already_exists`` when the name is taken. The
    answer holds the webhook's signing secret, shown this once."""
    definition = await decode_body(request, Definition, node.settings.max_body_bytes)
    made = await streams.create(definition)
    return reply(_created(made.stream, made.secret), 201)


@router.get(
    "/eventstreams",
    summary="List event streams",
    responses=responses(StreamsPage, errors=(400, 401, 403, 422, 503)),
)
async def list_streams(
    streams: Streams,
    name: Annotated[str | None, Query(description="only the stream of this name")] = None,
    status: Annotated[Literal["started", "stopped"] | None, Query()] = None,
    type: Annotated[Literal["webhook", "websocket"] | None, Query()] = None,
    after: Annotated[str, Query(description="the name the page starts after")] = "",
    limit: Limit = 100,
) -> Response:
    """Streams by name, ``limit`` at a time."""
    found = await streams.list(name, status, type, after, limit)
    more = found[-1].name if len(found) == limit else None
    return reply(StreamsPage(found, more))


@router.get(
    "/eventstreams/{name_or_id}",
    summary="An event stream with its statistics",
    responses=responses(StreamInfo, errors=(401, 403, 404, 503)),
)
async def get_stream(name_or_id: str, streams: Streams) -> Response:
    """The definition as set, the status, and FireFly's statistics plus lag."""
    return reply(await streams.get(name_or_id))


@router.put(
    "/eventstreams/{name_or_id}",
    summary="Replace (or create) an event stream",
    openapi_extra=body_of(Definition),
    responses={
        **responses(StreamCreated, 201, errors=_CHANGES),
        200: responses(StreamInfo)[200],
    },
)
async def put_stream(
    name_or_id: str, request: Request, node: NodeDep, streams: Streams
) -> Response:
    """Replace the definition (200), or create the stream when there is none of that
    name (201, with its secret). A new webhook ``secret`` rotates the signing key."""
    definition = await decode_body(request, Definition, node.settings.max_body_bytes)
    if not is_id(name_or_id) and definition.name != name_or_id:
        raise ApiError(
            400, "invalid_input", f"the body names {definition.name!r}, the path {name_or_id!r}"
        )
    try:
        return reply(await streams.replace(name_or_id, definition))
    except NotFound:
        if is_id(name_or_id):
            raise
    made = await streams.create(definition, upsert=True)
    status = 201 if made.created else 200
    return reply(_created(made.stream, made.secret), status)


@router.patch(
    "/eventstreams/{name_or_id}",
    summary="Change some fields of an event stream",
    openapi_extra=_MERGE_PATCH,
    responses=responses(StreamInfo, errors=_CHANGES),
)
async def patch_stream(
    name_or_id: str, request: Request, node: NodeDep, streams: Streams
) -> Response:
    """A JSON merge patch of the definition: given fields replace, ``null`` ones go back
    to the server's default. The stream goes on from its checkpoint with them."""
    changes = await decode_body(request, dict[str, Any], node.settings.max_body_bytes)
    return reply(await streams.update(name_or_id, changes))


@router.delete(
    "/eventstreams/{name_or_id}",
    status_code=204,
    summary="Stop and delete an event stream",
    responses={204: {"description": "Deleted"}, **_errors((401, 403, 404, 503))},
)
async def delete_stream(name_or_id: str, streams: Streams) -> Response:
    """Stop the stream, then delete it with its attempts and parked events."""
    await streams.delete(name_or_id)
    return Response(status_code=204)


@router.post(
    "/eventstreams/{name_or_id}/start",
    summary="Start an event stream",
    responses=responses(StreamInfo, errors=(401, 403, 404, 503)),
)
async def start_stream(name_or_id: str, streams: Streams) -> Response:
    """Start delivering from the checkpoint."""
    return reply(await streams.start(name_or_id))


@router.post(
    "/eventstreams/{name_or_id}/stop",
    summary="Stop an event stream",
    responses=responses(StreamInfo, errors=(401, 403, 404, 503)),
)
async def stop_stream(name_or_id: str, streams: Streams) -> Response:
    """Stop delivering; the checkpoint stays."""
    return reply(await streams.stop(name_or_id))


@router.post(
    "/eventstreams/{name_or_id}/reset",
    summary="Move an event stream's checkpoint",
    openapi_extra=body_of(ResetBody),
    responses=responses(StreamInfo, errors=_CHANGES),
)
async def reset_stream(
    name_or_id: str, request: Request, node: NodeDep, streams: Streams
) -> Response:
    """Move the checkpoint to ``position``, or without one to the initial position."""
    body = ResetBody()
    if request.headers.get("content-length", "0") != "0":
        body = await decode_body(request, ResetBody, node.settings.max_body_bytes)
    return reply(await streams.reset(name_or_id, body.position))


@router.post(
    "/eventstreams/{name_or_id}/redeliver",
    status_code=202,
    summary="Send a range of an event stream again",
    openapi_extra=body_of(RedeliverBody),
    responses=responses(StreamInfo, 202, errors=_CHANGES),
)
async def redeliver_stream(
    name_or_id: str, request: Request, node: NodeDep, streams: Streams
) -> Response:
    """Queue the range (of events delivered already, or of parked ones) to be sent again
    without moving the checkpoint; the stream's runner sends it before going on."""
    body = await decode_body(request, RedeliverBody, node.settings.max_body_bytes)
    found = await streams.redeliver(name_or_id, body.from_position, body.to_position, body.parked)
    return reply(found, 202)


@router.get(
    "/eventstreams/{name_or_id}/attempts",
    summary="Delivery attempts of an event stream",
    responses=responses(AttemptsPage, errors=(401, 403, 404, 422, 503)),
)
async def list_attempts(
    name_or_id: str,
    streams: Streams,
    before: Annotated[int | None, Query(ge=0, description="an attempt id to page on")] = None,
    limit: Limit = 100,
) -> Response:
    """Every attempt (time, batch, positions, status code, duration, error, the start
    of the answer), newest first, for the retention window."""
    found = await streams.attempts(name_or_id, before, limit)
    return reply(AttemptsPage(found, found[-1].id if len(found) == limit else None))


@router.get(
    "/eventstreams/{name_or_id}/parked",
    summary="Events an event stream parked",
    responses=responses(ParkedPage, errors=(401, 403, 404, 422, 503)),
)
async def list_parked(
    name_or_id: str,
    streams: Streams,
    after: Annotated[int, Query(ge=0, description="the position the page starts after")] = 0,
    limit: Limit = 100,
) -> Response:
    """Events ``skip`` set aside, by position."""
    found = await streams.parked(name_or_id, after, limit)
    return reply(ParkedPage(found, found[-1].position if len(found) == limit else None))
