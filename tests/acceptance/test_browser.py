"""A real browser follows the live log: headless Chromium (Debian's package) driven by
Playwright opens an ``EventSource`` on a tidings server from a page of another origin
(CORS), and rides out two restarts of the server, a SIGTERM and a SIGKILL, resuming
by its own ``Last-Event-ID``: every event once, in position order.

Under CI=true a missing browser or Playwright fails the test; elsewhere it is skipped.
``scripts/browser.sh`` installs Chromium when it is missing."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from typing import Any

import pytest

from tests.acceptance.sse_tools import Server, make_batch, read_store, write_all

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>tidings live</title></head>
<body><pre id="log"></pre>
<script>
  window.seen = [];
  window.opens = 0;
  window.errors = [];
  const base = new URLSearchParams(location.search).get("base");
  const source = new EventSource(base + "/events/live");
  source.onopen = () => { window.opens += 1; };
  source.onerror = () => { window.errors.push(source.readyState); };
  source.onmessage = (message) => {
    const event = JSON.parse(message.data);
    window.seen.push(event.position);
    window.lastId = message.lastEventId;
    document.getElementById("log").textContent = window.seen.length + " events";
  };
</script></body></html>
"""


async def seen_by(page: Any) -> list[int]:
    """The positions the page has received so far."""
    found: list[int] = await page.evaluate("window.seen")
    return found


async def until_seen(page: Any, count: int, within: float) -> list[int]:
    """Wait until the page holds ``count`` events; what it holds."""
    end = time.monotonic() + within
    while len(seen := await seen_by(page)) < count:
        if time.monotonic() > end:
            state = await page.evaluate("({opens: window.opens, errors: window.errors})")
            raise AssertionError(f"the page has {len(seen)} of {count} events; {state}")
        await asyncio.sleep(0.05)
    return seen


@pytest.mark.slow
async def test_a_browser_eventsource_resumes_across_restarts_by_last_event_id(
    browser: Any, page_origin: str, sqlite_url: str
) -> None:
    """The page's EventSource gets each event once, in order, though the server is
    stopped twice mid-stream (SIGTERM, then SIGKILL) and started again on the same
    port: the browser reconnects by itself with the id it last saw."""
    env = {"TIDINGS_CORS_ORIGINS": f'["{page_origin}"]', "TIDINGS_SSE_RETRY_MS": "200"}
    server = Server(sqlite_url, env)
    try:
        context = await browser.new_context()
        page = await context.new_page()
        await page.goto(f"{page_origin}/?base={server.url}")
        await page.wait_for_function("window.opens >= 1", timeout=10_000)

        batches = [make_batch(f"cart-{n % 8}", 4, b=n) for n in range(150)]
        await write_all(server.url, batches[:25])
        await until_seen(page, 100, 10)
        writer = asyncio.create_task(write_all(server.url, batches[25:], pause=0.01))
        try:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                before = len(await seen_by(page))
                await until_seen(page, before + 40, 10)  # the stream is moving
                code = await asyncio.to_thread(server.stop, sig)
                assert code == (0 if sig == signal.SIGTERM else -signal.SIGKILL), server.output
                await asyncio.sleep(0.3)
                await asyncio.to_thread(server.restart)
            await asyncio.wait_for(writer, 40)
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer

        stored = [e["position"] for e in await read_store(server.url)]
        assert len(stored) == 600
        seen = await until_seen(page, len(stored), 20)
        await asyncio.sleep(0.3)  # a repeat would come now
        seen = await seen_by(page)
        assert seen == stored
        assert await page.evaluate("window.opens") >= 3  # it reconnected after each stop
        assert await page.evaluate("window.lastId") == str(stored[-1])
        await context.close()
    finally:
        server.close()
