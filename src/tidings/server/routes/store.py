"""Streams, the global log, transactions, audit and head: the store over HTTP."""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response
from starlette.routing import Route

from tidings.errors import InvalidInput
from tidings.events import AppendResult, Audit, AuditRecord, Filter, category_of
from tidings.server.auth import caller, readable
from tidings.server.body import decode_body, reply
from tidings.server.errors import ApiError
from tidings.server.node import Node, node_in, node_of
from tidings.server.openapi import body_of, responses
from tidings.types import Types
from tidings.wire import (
    MAX_POSITION,
    AppendBody,
    CheckpointInfo,
    Head,
    LogPage,
    StreamPage,
    StreamsPage,
    StreamVersion,
    TransactionBody,
    TransactionResult,
    expected_from_wire,
)

router = APIRouter()

Upcast = Annotated[
    bool,
    Query(
        description="events renamed and upcast to their types' current versions by the "
        "server's type registry (its `types` setting); stored events are not changed"
    ),
]


def registry(node: Node, upcast: bool) -> Types | None:
    """The registry an ``upcast`` read applies; 400 when the server has none."""
    if not upcast:
        return None
    if node.types is None:
        raise ApiError(400, "invalid_input", "upcast=true: the server has no type registry")
    return node.types


NodeDep = Annotated[Node, Depends(node_of)]
# The store's routes take the request and call node_in / caller themselves: FastAPI's
# dependency solving costs ~20% of a small append's time on the server.
Limit = Annotated[int | None, Query(ge=0, description="the most items to return")]


def page_limit(node: Node, limit: int | None) -> int:
    """The page size a read asked for, capped at the server's ``max_page``."""
    return node.settings.max_page if limit is None else min(limit, node.settings.max_page)


def log_filter(
    category: list[str] | None,
    type: list[str] | None,
    stream_prefix: str | None,
    stream_pattern: str | None,
) -> Filter | None:
    """The log filter a query string asks for (None: everything)."""
    for what, names in (("category", category), ("type", type)):
        if names is not None and not all(names):
            raise InvalidInput(f"{what} must not be empty")
    found = Filter(category, stream_prefix, type, stream_pattern)
    return None if found.is_empty else found


@router.post(
    "/streams/{stream:stream}/events",
    status_code=201,
    summary="Append events to a stream",
    openapi_extra=body_of(AppendBody),
    responses=responses(AppendResult, 201, errors=(400, 409, 413, 415, 422, 503)),
)
async def append(stream: str, request: Request) -> Response:
    """Append events atomically if the stream is at ``expected_version`` (default: any).

    Idempotent by event id: the same ids with the same content return the first result.
    """
    node, who = node_in(request), await caller(request)
    who.require("append", category_of(stream))
    body = await decode_body(request, AppendBody, node.settings.max_body_bytes)
    expected = expected_from_wire(body.expected_version)
    result = await node.store.append(stream, body.events, expected)
    return reply(result, 201)


@router.get(
    "/streams/{stream:stream}/events",
    summary="Read a stream",
    responses=responses(StreamPage, errors=(400, 422, 503)),
)
async def read_stream(
    stream: str,
    request: Request,
    from_version: Annotated[int | None, Query(ge=0, le=MAX_POSITION)] = None,
    limit: Limit = None,
    direction: Literal["forward", "backward"] = "forward",
    upcast: Upcast = False,
) -> Response:
    """A page of a stream's events from ``from_version``, forwards or backwards."""
    node, who = node_in(request), await caller(request)
    who.require("read", category_of(stream))
    size = page_limit(node, limit)
    backwards = direction == "backward"
    types = registry(node, upcast)
    events = [
        e
        async for e in node.store.read_stream(stream, from_version, limit=size, backwards=backwards)
    ]
    if types is not None:
        events = types.read(events)
    following: int | None = None
    if size and len(events) == size:
        last = events[-1].version
        following = (last - 1 if last > 0 else None) if backwards else last + 1
    return reply(StreamPage(stream, events, following))


@router.get(
    "/streams/{stream:stream}",
    summary="A stream's last version",
    responses=responses(StreamVersion, errors=(404, 503)),
)
async def stream_version(stream: str, request: Request) -> Response:
    """The stream's last version; 404 when it has no events."""
    node, who = node_in(request), await caller(request)
    who.require("read", category_of(stream))
    version = await node.store.stream_version(stream)
    if version is None:
        raise ApiError(404, "not_found", f"stream {stream!r} does not exist", stream=stream)
    return reply(StreamVersion(stream, version))


@router.get(
    "/streams",
    summary="List streams",
    responses=responses(StreamsPage, errors=(422, 503)),
)
async def list_streams(
    request: Request,
    prefix: str | None = None,
    after: Annotated[str | None, Query(description="the last name of the previous page")] = None,
    limit: Limit = None,
) -> Response:
    """Streams in name order with their last version, a page at a time (only those of
    categories the caller may read)."""
    node, who = node_in(request), await caller(request)
    size = page_limit(node, limit)
    found = [s async for s in node.store.list_streams(prefix=prefix, after=after, limit=size)]
    following = found[-1].name if size and len(found) == size else None
    if who.categories("read") is not None:
        found = [s for s in found if who.may("read", category_of(s.name))]
    return reply(StreamsPage(found, following))


@router.get(
    "/events",
    summary="Read the global log",
    responses=responses(LogPage, errors=(400, 422, 503)),
)
async def read_log(
    request: Request,
    from_position: Annotated[
        int, Query(ge=0, le=MAX_POSITION, description="read events after this")
    ] = 0,
    limit: Limit = None,
    category: Annotated[list[str] | None, Query()] = None,
    type: Annotated[list[str] | None, Query()] = None,
    stream_prefix: str | None = None,
    stream_pattern: Annotated[str | None, Query(description="a regular expression")] = None,
    upcast: Upcast = False,
) -> Response:
    """Events with a position above ``from_position`` that pass the filters.

    ``next`` is the ``from_position`` to read on from: past every event of this page, and
    past the stretch the filters dropped.
    """
    node, who = node_in(request), await caller(request)
    found = readable(who, log_filter(category, type, stream_prefix, stream_pattern))
    size = page_limit(node, limit)
    types = registry(node, upcast)
    if types is not None:
        found = types.read_filter(found)  # a type's old names are that type too
    head = await node.store.head()
    events = [e async for e in node.store.read_all(from_position, found, limit=size)]
    if types is not None:
        events = types.read(events)
    if events:
        head = max(head, events[-1].position)  # a commit may land between the two reads
    if size == 0:
        following = from_position  # nothing was read: skip nothing
    elif len(events) == size:
        following = events[-1].position
    else:
        following = max(head, from_position)  # past the stretch the filters dropped
    return reply(LogPage(events, following, head))


@router.get(
    "/events/{position}/audit",
    summary="The audit record of an event's transaction",
    responses=responses(AuditRecord, errors=(404, 422, 503)),
)
async def audit(position: int, request: Request) -> Response:
    """The audit record of the transaction that wrote the event at ``position``."""
    node, who = node_in(request), await caller(request)
    if not 1 <= position <= MAX_POSITION:
        raise ApiError(404, "not_found", f"no event at position {position}")
    if who.categories("read") is not None:
        found = [e async for e in node.store.read_all(position - 1, limit=1)]
        if not found or found[0].position != position:
            raise ApiError(404, "not_found", f"no event at position {position}")
        who.require("read", found[0].category)
    record = await node.store.audit(position)
    if record is None:
        raise ApiError(404, "not_found", f"no audit record for position {position}")
    return reply(record)


@router.get("/head", summary="The last committed position", responses=responses(Head))
async def head(
    request: Request,
    at_least: Annotated[
        int | None, Query(ge=0, description="wait until the head reaches this position")
    ] = None,
    wait: Annotated[float, Query(ge=0, le=60, description="seconds to wait for at_least")] = 0,
) -> Response:
    """The last committed position (0 when the store is empty). With ``at_least``, a long
    poll: answers as soon as the head reaches it, or with the head as it is after ``wait``."""
    node = node_in(request)
    await caller(request)  # any caller may know the head
    identity = node.store.identity
    if at_least is not None and wait > 0 and not node.stopping.is_set():
        # A stopping server answers at once: a long poll must not hold up its shutdown.
        reached = asyncio.ensure_future(node.store.wait_for(at_least, timeout=wait))
        stopping = asyncio.ensure_future(node.stopping.wait())
        try:
            await asyncio.wait({reached, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            reached.cancel()
        if reached.done() and not reached.cancelled() and reached.exception() is None:
            return reply(Head(reached.result(), identity))
    return reply(Head(await node.store.head(), identity))


@router.post(
    "/transactions",
    status_code=201,
    summary="Append to several streams atomically",
    openapi_extra=body_of(TransactionBody),
    responses=responses(TransactionResult, 201, errors=(400, 409, 413, 415, 422, 503)),
)
async def transaction(request: Request) -> Response:
    """All the appends land or none does, with one audit record."""
    node, who = node_in(request), await caller(request)
    body = await decode_body(request, TransactionBody, node.settings.max_body_bytes)
    for part in body.appends:
        who.require("append", category_of(part.stream))
    if body.checkpoint is not None:
        who.require("append", category_of(body.checkpoint.name))
    audit = None if body.audit is None else Audit(body.audit.user, body.audit.extra)
    tx = node.store.transaction(audit)
    for part in body.appends:
        tx.append(part.stream, part.events, expected_from_wire(part.expected_version))
    if body.checkpoint is not None:
        tx.move_checkpoint(body.checkpoint.name, body.checkpoint.position)
    return reply(TransactionResult(await tx.commit()), 201)


@router.get(
    "/checkpoints/{name}",
    summary="Where a named checkpoint stands",
    responses=responses(CheckpointInfo, errors=(400, 403, 503)),
)
async def checkpoint(name: str, request: Request) -> Response:
    """The position a named checkpoint stands at (null: no transaction has moved it).
    Transactions move it (``checkpoint`` in ``POST /transactions``); reading it needs
    read access to the category its name starts with, as a stream's would."""
    node, who = node_in(request), await caller(request)
    who.require("read", category_of(name))
    return reply(CheckpointInfo(name, await node.store.checkpoint(name)))


async def _append_fast(request: Request) -> Response:
    return await append(request.path_params["stream"], request)


FAST_ROUTES = [
    Route("/streams/{stream:stream}/events", _append_fast, methods=["POST"]),
    Route("/transactions", transaction, methods=["POST"]),
]
"""The append routes as plain Starlette routes, answered by ``FastApp`` before FastAPI's
stack: the same functions, without its layers and per-request dependency solving."""
