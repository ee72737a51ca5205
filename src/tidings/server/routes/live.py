"""Live reads over Server-Sent Events: the log, or one stream, as events commit."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request

from tidings.errors import InvalidInput
from tidings.events import Filter, category_of
from tidings.server.auth import caller, readable
from tidings.server.errors import ApiError
from tidings.server.node import Node, node_in
from tidings.server.routes.store import log_filter
from tidings.server.sse import LiveStream
from tidings.wire import MAX_POSITION

router = APIRouter()

_SSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "text/event-stream: `id:` is the position, `data:` a RecordedEvent",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    },
    400: {"description": "Bad resume position or filter"},
    503: {"description": "Too many live clients (see Retry-After)"},
}


def resume_point(
    last_event_id: str | None, query_last: str | None, from_position: int | None
) -> int:
    """Where a live read starts: ``Last-Event-ID`` wins, then the query's positions."""
    for what, value in (("Last-Event-ID", last_event_id), ("last_event_id", query_last)):
        if value is not None and value.strip():
            text = value.strip()
            if not text.isdigit() or int(text) > MAX_POSITION:
                raise InvalidInput(f"{what} must be a position (an int >= 0), not {value!r}")
            return int(text)
    return from_position or 0


def open_stream(node: Node, cursor: int, filter: Filter | None, stream: str | None) -> LiveStream:
    """A live response, or 503 when the server has all the live clients it may."""
    if node.stopping.is_set():
        raise ApiError(503, "unavailable", "the server is stopping", {"Retry-After": "1"})
    if node.sse_clients >= node.settings.sse_max_clients:
        raise ApiError(
            503, "too_many_clients", "too many live clients; retry later", {"Retry-After": "5"}
        )
    return LiveStream(node, cursor, filter, stream)


@router.get("/events/live", summary="Follow the global log live (SSE)", responses=_SSE)
async def follow_log(
    request: Request,
    from_position: Annotated[int | None, Query(ge=0, le=MAX_POSITION)] = None,
    last_event_id: str | None = None,
    category: Annotated[list[str] | None, Query()] = None,
    type: Annotated[list[str] | None, Query()] = None,
    stream_prefix: str | None = None,
    stream_pattern: str | None = None,
    last_event_id_header: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> LiveStream:
    """Events after the resume point, then each new one as it commits, in order."""
    node, who = node_in(request), await caller(request)
    cursor = resume_point(last_event_id_header, last_event_id, from_position)
    found = readable(who, log_filter(category, type, stream_prefix, stream_pattern))
    return open_stream(node, cursor, found, None)


@router.get(
    "/streams/{stream:stream}/events/live", summary="Follow one stream live (SSE)", responses=_SSE
)
async def follow_stream(
    stream: str,
    request: Request,
    from_position: Annotated[int | None, Query(ge=0, le=MAX_POSITION)] = None,
    last_event_id: str | None = None,
    last_event_id_header: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> LiveStream:
    """The stream's events after the resume point (a global position), then live."""
    node, who = node_in(request), await caller(request)
    who.require("read", category_of(stream))
    cursor = resume_point(last_event_id_header, last_event_id, from_position)
    return open_stream(node, cursor, None, stream)
