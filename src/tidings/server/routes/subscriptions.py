"""Durable pull consumers over HTTP: define, long-poll, ack, reset, delete.

The work is ``tidings.subscriptions.pull``'s; this module checks scopes and turns its
answers into wire bodies. Every route needs ``subscribe:<category>`` for each category
of the subscription's filter (``subscribe:*`` for a filter without categories); the
listing shows only the subscriptions the caller could read.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from tidings.errors import InvalidInput
from tidings.events import Filter
from tidings.server.auth import Caller, Principal
from tidings.server.body import decode_body, reply
from tidings.server.errors import ApiError
from tidings.server.node import Node, node_in
from tidings.server.openapi import body_of, responses
from tidings.server.routes.store import NodeDep
from tidings.store.base import StoreFront
from tidings.subscriptions.pull import (
    MAX_WAIT,
    PullConflict,
    PullConsumers,
    PullDefinition,
    PullInfo,
)
from tidings.wire_subscriptions import (
    AckBody,
    AckResult,
    FilterBody,
    PullPage,
    ResetBody,
    SubscriptionBody,
    SubscriptionDefinition,
    SubscriptionOut,
    SubscriptionsPage,
)

router = APIRouter(tags=["subscriptions"])


async def consumers_of(request: Request) -> PullConsumers:
    """The pull consumers of the node's store (a FastAPI dependency; made once per store)."""
    node: Node = node_in(request)
    found: PullConsumers | None = getattr(request.app.state, "pull_consumers", None)
    if found is None or found.store is not node.store:
        if not isinstance(node.store, StoreFront):
            raise ApiError(400, "invalid_input", "pull subscriptions need a local store")
        found = request.app.state.pull_consumers = PullConsumers(node.store)
    return found


Consumers = Annotated[PullConsumers, Depends(consumers_of)]


@contextlib.contextmanager
def answers() -> Iterator[None]:
    """Turn the library's conflicts into 409s with their codes (no such subscription is
    404 by the one error table)."""
    try:
        yield
    except PullConflict as exc:
        raise ApiError(409, exc.code, str(exc), limit=exc.limit) from None


def may_subscribe(who: Principal, definition: PullDefinition) -> bool:
    """Whether the caller may subscribe to every category the definition reads."""
    if definition.categories is None:
        return who.may("subscribe", "*")
    return all(who.may("subscribe", c) for c in definition.categories)


def require_subscribe(who: Principal, definition: PullDefinition) -> None:
    """403 unless the caller may subscribe to every category the definition reads."""
    for category in definition.categories or ("*",):
        who.require("subscribe", category)


def definition_of(body: SubscriptionBody) -> PullDefinition:
    """The library definition a body asks for; 400 ``invalid_filter`` for a bad filter."""
    given = body.filter
    try:
        found = (
            None
            if given is None
            else Filter(given.categories, given.stream_prefix, given.types, given.stream_pattern)
        )
        return PullDefinition.of(found, body.start, body.partitions, body.lease_ttl)
    except (InvalidInput, TypeError) as exc:
        raise ApiError(400, "invalid_filter", f"bad filter: {exc}", field="filter") from None


def out(info: PullInfo) -> SubscriptionOut:
    """The wire form of a pull consumer's info."""
    d = info.definition
    names = {"categories": d.categories, "types": d.types}
    wire_filter = FilterBody(
        **{k: None if v is None else list(v) for k, v in names.items()},
        stream_prefix=d.stream_prefix,
        stream_pattern=d.stream_pattern,
    )
    return SubscriptionOut(
        info.name,
        SubscriptionDefinition(wire_filter, d.start, d.partitions, d.lease_ttl),
        info.checkpoint,
        info.head,
        info.lag,
        info.state,
        info.last_error,
        info.updated,
        info.parked,
        info.handed_out,
        info.grouped,
        info.members,
    )


def _has_body(request: Request) -> bool:
    headers = request.headers
    return headers.get("content-length", "0") != "0" or "transfer-encoding" in headers


def _also(status: int, type_: Any) -> dict[int | str, dict[str, Any]]:
    return {status: responses(type_, status, errors=(), public=True)[status]}


def _no_content(errors: tuple[int, ...]) -> dict[int | str, dict[str, Any]]:
    found = responses(AckResult, errors=errors)
    found.pop(200)
    return {204: {"description": "Deleted"}, **found}


_RESET_BODY = body_of(ResetBody)
_RESET_BODY["requestBody"]["required"] = False


@router.post(
    "/subscriptions",
    status_code=201,
    summary="Define a pull subscription (idempotent)",
    openapi_extra=body_of(SubscriptionBody),
    responses={
        **responses(SubscriptionOut, 201, errors=(400, 409, 413, 415, 422, 503)),
        **_also(200, SubscriptionOut),
    },
)
async def create(request: Request, node: NodeDep, pull: Consumers, who: Caller) -> Response:
    """Create the subscription (201), or find it with the same definition (200); 409 when
    the name is taken by another definition."""
    body = await decode_body(request, SubscriptionBody, node.settings.max_body_bytes)
    definition = definition_of(body)
    require_subscribe(who, definition)
    with answers():
        info, created = await pull.create(body.name, definition)
    return reply(out(info), 201 if created else 200)


@router.get(
    "/subscriptions",
    summary="List pull subscriptions",
    responses=responses(SubscriptionsPage),
)
async def list_subscriptions(pull: Consumers, who: Caller) -> Response:
    """Every pull subscription the caller may subscribe to, by name."""
    found = [out(i) for i in await pull.list_all() if may_subscribe(who, i.definition)]
    return reply(SubscriptionsPage(found))


@router.get(
    "/subscriptions/{name}",
    summary="A pull subscription's definition, checkpoint, lag and state",
    responses=responses(SubscriptionOut, errors=(404, 503)),
)
async def get_subscription(name: str, pull: Consumers, who: Caller) -> Response:
    """The definition, checkpoint, head, lag, state and parked count."""
    with answers():
        info = await pull.info(name)
    require_subscribe(who, info.definition)
    return reply(out(info))


@router.get(
    "/subscriptions/{name}/next",
    summary="Long-poll the next batch",
    responses=responses(PullPage, errors=(400, 404, 409, 422, 503)),
)
async def next_batch(
    name: str,
    node: NodeDep,
    pull: Consumers,
    who: Caller,
    max_events: Annotated[int, Query(alias="max", ge=1, description="the most events")] = 100,
    wait: Annotated[
        float, Query(ge=0, le=MAX_WAIT, description="seconds to wait for an event")
    ] = 0.0,
    member: Annotated[
        str | None, Query(min_length=1, max_length=200, description="join the consumer group")
    ] = None,
) -> Response:
    """Up to ``max`` events after the checkpoint (capped at the server's page size); the
    same batch comes again until acked. Waits up to ``wait`` seconds for one."""
    limit = min(max_events, node.settings.max_page)
    with answers():
        require_subscribe(who, await pull.definition(name))
        batch = await pull.next(name, limit, wait, member, stop=node.stopping)
    return reply(PullPage(batch.events, batch.last_position, batch.checkpoint))


@router.post(
    "/subscriptions/{name}/ack",
    summary="Move the checkpoint",
    openapi_extra=body_of(AckBody),
    responses=responses(AckResult, errors=(400, 404, 409, 413, 415, 422, 503)),
)
async def ack(name: str, request: Request, node: NodeDep, pull: Consumers, who: Caller) -> Response:
    """Move the checkpoint to ``position``: an older ack changes nothing (200 with the
    checkpoint), one past what was handed out is 409 ``ack_beyond_handed_out``."""
    with answers():
        require_subscribe(who, await pull.definition(name))
        body = await decode_body(request, AckBody, node.settings.max_body_bytes)
        checkpoint = await pull.ack(name, body.position, body.member)
    return reply(AckResult(checkpoint))


@router.post(
    "/subscriptions/{name}/reset",
    summary="Move the checkpoint anywhere",
    openapi_extra=_RESET_BODY,
    responses=responses(SubscriptionOut, errors=(400, 404, 413, 415, 422, 503)),
)
async def reset(
    name: str, request: Request, node: NodeDep, pull: Consumers, who: Caller
) -> Response:
    """Move the checkpoint (every partition's, for a group) to ``position`` (default 0)."""
    with answers():
        require_subscribe(who, await pull.definition(name))
        body = ResetBody()
        if _has_body(request):
            body = await decode_body(request, ResetBody, node.settings.max_body_bytes)
        await pull.reset(name, body.position)
        return reply(out(await pull.info(name)))


@router.delete(
    "/subscriptions/{name}",
    status_code=204,
    summary="Delete a pull subscription",
    responses=_no_content((404, 503)),
)
async def delete(name: str, pull: Consumers, who: Caller) -> Response:
    """Remove the definition, checkpoint, parked events and group rows."""
    with answers():
        require_subscribe(who, await pull.definition(name))
        await pull.delete(name)
    return Response(status_code=204)
