"""``POST /sync/push`` and ``GET /sync/pull``: satellites' transactions, exactly once,
and the replication of their categories."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from tidings.satellite.ledger import Ledger
from tidings.server.auth import Principal, caller
from tidings.server.body import decode_body, reply
from tidings.server.errors import ApiError
from tidings.server.node import node_in
from tidings.server.openapi import body_of, responses
from tidings.wire import MAX_POSITION
from tidings.wire_sync import SATELLITE_ID_PATTERN, PushBody, PushResult, SyncPage

router = APIRouter()


def _as_satellite(who: Principal, satellite_id: str) -> None:
    """403 unless the caller may sync as ``satellite_id`` (scope ``sync:<id>``)."""
    if not who.may("sync", satellite_id):
        raise ApiError(
            403, "forbidden", f"{who.subject} may not sync as satellite {satellite_id!r}"
        )


@router.post(
    "/sync/push",
    summary="Push a satellite's local transactions",
    openapi_extra=body_of(PushBody),
    responses=responses(PushResult, errors=(400, 403, 413, 415, 422, 503)),
)
async def push(request: Request) -> Response:
    """Decide each transaction in order, each in its own database transaction with its
    verdict: ``accepted``, ``conflict``, ``rejected``, ``duplicate`` (decided before: the
    stored verdict, nothing applied twice) or ``out_of_order``. One failing transaction
    never stops the ones after it. Needs ``sync:<satellite_id>``, and ``append`` on the
    categories each transaction writes (else that one is ``rejected``)."""
    node, who = node_in(request), await caller(request)
    body = await decode_body(request, PushBody, node.settings.max_body_bytes)
    _as_satellite(who, body.satellite_id)
    user = who.user or who.subject
    verdicts, last = await Ledger(node.store).push(
        body.satellite_id, body.transactions, lambda category: who.may("append", category), user
    )
    counts = request.app.state.metrics.sync_verdicts
    for verdict in verdicts:
        counts.labels(verdict.verdict).inc()
    return reply(PushResult(body.satellite_id, verdicts, last))


@router.get(
    "/sync/pull",
    summary="Pull a satellite's categories, with its verdicts",
    responses=responses(SyncPage, errors=(400, 403, 422, 503)),
)
async def pull(
    request: Request,
    satellite_id: Annotated[
        str,
        Query(
            min_length=1,
            max_length=100,
            pattern=SATELLITE_ID_PATTERN,
            description="the satellite pulling",
        ),
    ],
    categories: Annotated[
        str,
        Query(
            pattern=r"^[^,]+(,[^,]+)*$",
            description="the categories it replicates, comma-separated",
        ),
    ],
    cursor: Annotated[int, Query(ge=0, le=MAX_POSITION, description="pull events after this")] = 0,
    limit: Annotated[int | None, Query(ge=1, description="the most events to return")] = None,
    seq_after: Annotated[
        int, Query(ge=0, description="return the verdicts of the seqs after this")
    ] = 0,
) -> Response:
    """The next page of the categories' events after ``cursor`` (a server transaction
    with an audit record is never cut in two), the ``cursor`` to pull on from, the
    satellite's ``last_seq`` and its verdicts after ``seq_after``. Needs
    ``sync:<satellite_id>`` and ``read`` on each category."""
    node, who = node_in(request), await caller(request)
    _as_satellite(who, satellite_id)
    names = categories.split(",")
    for name in names:
        who.require("read", name)
    size = node.settings.max_page if limit is None else min(limit, node.settings.max_page)
    page = await Ledger(node.store).pull(satellite_id, names, cursor, size, seq_after)
    return reply(page)
