"""The tidings server: the store over HTTP, live reads over SSE (``create_app``, ``serve``)."""

from __future__ import annotations

from tidings.server.app import create_app
from tidings.server.settings import Settings

__all__ = ["Settings", "create_app"]
