"""The remote store: ``tidings.connect("http://host:port")`` speaks to a tidings server."""

from __future__ import annotations

from typing import Any

from tidings.errors import ConfigurationError
from tidings.store import url_options
from tidings.store.base import check_types

__all__ = ["open_remote"]


async def open_remote(url: str, **options: Any) -> Any:
    """A ``RemoteStore`` for the server at ``url`` (``token=`` for auth, ``timeout=``,
    ``types=`` a ``tidings.Types`` applied on this side: the server stores what it is sent)."""
    try:
        from tidings.client.store import RemoteStore
    except ImportError as exc:  # aiohttp missing
        raise ConfigurationError(
            "the remote store needs aiohttp: pip install 'tidings[client]'"
        ) from exc
    opts = url_options(url, options)
    poll_interval = opts.pop("poll_interval", None)
    types = check_types(opts.pop("types", None))
    try:
        if "timeout" in opts:
            opts["timeout"] = float(opts["timeout"])
        store = RemoteStore(url, **opts)
        store.types = types
        if poll_interval is not None:
            store.poll_interval = float(poll_interval)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"bad option for {url}: {exc}") from exc
    return store
