"""Fixtures of the browser tests: a module's ``PAGE`` served from an origin of its own,
and headless Chromium (see browser_tools)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.acceptance.browser_tools import chromium, serve_page


@pytest.fixture
async def page_origin(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """The test module's ``PAGE``, served from an origin other than the servers'."""
    async with serve_page(request.module.PAGE) as origin:
        yield origin


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """Headless Chromium from /usr/bin/chromium (never a downloaded build)."""
    async with chromium() as launched:
        yield launched
