"""CORS: the allowlist holds on every route, the fast append routes included."""

from __future__ import annotations

import httpx

import tidings
from tidings.server import Settings, create_app

ALLOWED = "https://app.example"


async def test_allowed_origins_get_cors_headers_on_appends_reads_and_preflights() -> None:
    store = await tidings.connect("memory://")
    app = create_app(store, Settings(cors_origins=[ALLOWED]))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        body = {"events": [{"type": "A"}]}
        appended = await c.post("/streams/o-1/events", json=body, headers={"Origin": ALLOWED})
        read = await c.get("/streams/o-1/events", headers={"Origin": ALLOWED})
        preflight = await c.options(
            "/streams/o-1/events",
            headers={"Origin": ALLOWED, "Access-Control-Request-Method": "POST"},
        )
        stranger = await c.post(
            "/streams/o-1/events", json=body, headers={"Origin": "https://evil.example"}
        )
        conflict = await c.post(
            "/transactions",
            json={"appends": [{"stream": "o-1", "expected_version": 7, "events": [{"type": "B"}]}]},
            headers={"Origin": ALLOWED},
        )
    await store.close()
    assert appended.status_code == 201
    assert appended.headers["access-control-allow-origin"] == ALLOWED
    assert read.headers["access-control-allow-origin"] == ALLOWED
    assert preflight.status_code == 200
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert stranger.status_code == 201  # CORS is the browser's check; the server only omits
    assert "access-control-allow-origin" not in stranger.headers
    assert conflict.status_code == 409  # errors on the fast path keep the one error body
    assert conflict.json()["error"] == "wrong_expected_version"
    assert conflict.json()["actual"] == 1  # o-1 holds two events
    assert conflict.headers["access-control-allow-origin"] == ALLOWED
