"""Liveness and readiness."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from starlette.responses import Response

from tidings.server.body import reply
from tidings.server.routes.store import NodeDep
from tidings.wire import ErrorBody

router = APIRouter()


@router.get("/healthz", summary="The process is up")
async def healthz() -> Response:
    """Always 200 while the process serves requests."""
    return reply({"status": "ok"})


@router.get("/readyz", summary="The store answers")
async def readyz(node: NodeDep) -> Response:
    """200 when the store answers within two seconds and the notifier (if any) is
    connected, else 503."""
    if node.stopping.is_set():
        return reply(ErrorBody("unavailable", "the server is stopping"), 503)
    try:
        async with asyncio.timeout(2):
            head = await node.store.head()
    except Exception:
        return reply(ErrorBody("store_unavailable", "the event store does not answer"), 503)
    notifier = getattr(node.store, "notifier", None)
    if notifier is not None and getattr(notifier, "connected", True) is False:
        return reply(ErrorBody("notifier_unavailable", "the notifier is not connected"), 503)
    return reply({"status": "ready", "head": head, "live_clients": node.sse_clients})
