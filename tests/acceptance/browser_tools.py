"""What the browser tests share: headless Debian Chromium through Playwright, a page
served from an origin of its own, and failing rather than skipping under CI=true."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web

CHROMIUM = os.environ.get("TIDINGS_TEST_CHROMIUM", "/usr/bin/chromium")
IN_CI = os.environ.get("CI") == "true"


def need(problem: str) -> None:
    """Skip for ``problem``, or fail under CI=true (where the browser must be there)."""
    if IN_CI:
        pytest.fail(f"{problem} (CI=true: the browser test must run; see scripts/browser.sh)")
    pytest.skip(problem)


@asynccontextmanager
async def serve_page(html: str) -> AsyncIterator[str]:
    """A tiny static site on another port serving ``html``: its origin."""
    app = web.Application()

    async def index(request: web.Request) -> web.Response:
        return web.Response(text=html, content_type="text/html")

    app.router.add_get("/", index)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    """Headless Chromium from /usr/bin/chromium (never a downloaded build)."""
    try:
        from playwright.async_api import async_playwright
    except ImportError as exc:
        need(f"playwright is not installed ({exc}): pip install playwright")
    if not os.access(CHROMIUM, os.X_OK):
        need(f"no Chromium at {CHROMIUM}: apt-get install -y chromium")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox"], headless=True
        )
        try:
            yield launched
        finally:
            await launched.close()
