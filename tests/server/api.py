"""Helpers for the HTTP API suites: paths, appends and the one error body."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx


def events_path(stream: str) -> str:
    """``/streams/{stream}/events`` with the name percent-encoded whole."""
    return f"/streams/{quote(stream, safe='')}/events"


def new(type_: str = "Happened", data: Any = None, **fields: Any) -> dict[str, Any]:
    """A new event as JSON."""
    return {"type": type_, "data": data, **fields}


async def append(
    client: httpx.AsyncClient, stream: str, *events: dict[str, Any], **body: Any
) -> dict[str, Any]:
    """POST the events (default: one) to ``stream``; the 201 body."""
    answer = await client.post(
        events_path(stream), json={"events": list(events or [new()]), **body}
    )
    assert answer.status_code == 201, answer.text
    result: dict[str, Any] = answer.json()
    return result


def error_of(answer: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The error body of ``answer``, which must be ``status`` with ``code``, as JSON."""
    assert answer.status_code == status, (answer.status_code, answer.text)
    assert answer.headers["content-type"].startswith("application/json"), answer.headers
    body: dict[str, Any] = answer.json()
    assert body["error"] == code, body
    assert isinstance(body["message"], str) and body["message"], body
    return body
