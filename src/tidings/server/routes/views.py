"""State views over HTTP: the latest value per key, and the position it reflects."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Query
from starlette.responses import Response

from tidings.server.auth import Caller
from tidings.server.body import reply
from tidings.server.errors import ApiError
from tidings.server.openapi import responses
from tidings.server.routes.store import NodeDep

router = APIRouter()


class ViewValues(msgspec.Struct):
    """A view's values for the keys asked (absent keys have no value) and their position."""

    view: str
    position: int
    values: dict[str, Any]


class ViewInfo(msgspec.Struct):
    """A view the server folds."""

    name: str
    category: str
    position: int
    reducer: str | None


class ViewList(msgspec.Struct):
    """Every view the server folds."""

    views: list[ViewInfo]


@router.get("/views", summary="The state views", responses=responses(ViewList))
async def list_views(node: NodeDep, who: Caller) -> Response:
    """Every view the server folds (those of categories the caller may read)."""
    shown = [
        ViewInfo(v.name, v.category, v.position, _reducer_of(node, v.name))
        for v in node.views.values()
        if who.may("read", v.category)
    ]
    return reply(ViewList(shown))


@router.get(
    "/views/{name}",
    summary="A state view's values",
    responses=responses(ViewValues, errors=(400, 404, 422, 503)),
)
async def read_view(
    name: str,
    node: NodeDep,
    who: Caller,
    keys: Annotated[
        list[str] | None, Query(description="keys to read (repeat or comma-separate); all if none")
    ] = None,
    at_least: Annotated[
        int | None, Query(ge=0, description="wait until the view reflects this position")
    ] = None,
    wait: Annotated[float, Query(ge=0, le=30, description="seconds to wait for at_least")] = 5.0,
) -> Response:
    """The values of ``keys`` and the position they reflect; with ``at_least`` (an
    append's position) the answer reflects at least that position: read-your-writes."""
    view = node.views.get(name)
    if view is None:
        raise ApiError(404, "not_found", f"there is no view named {name!r}")
    who.require("read", view.category)
    wanted = None if keys is None else [k for part in keys for k in part.split(",") if k]
    try:
        values, position = await view.get_at(wanted, at_least=at_least, timeout=wait)
    except TimeoutError:
        raise ApiError(
            503,
            "view_behind",
            f"view {name!r} has not reached position {at_least} within {wait} s",
            {"Retry-After": "1"},
        ) from None
    return reply(ViewValues(name, position, values))


def _reducer_of(node: Any, name: str) -> str | None:
    for item in node.settings.views:
        if item.name == name:
            reducer: str | None = item.reducer
            return reducer
    return None
