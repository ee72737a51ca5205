"""The store layer: the EventStore protocol, its backends, and ``connect`` by URL."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tidings.errors import ConfigurationError, InvalidInput
from tidings.store.base import EventStore, StoreFront, Transaction, check_types

__all__ = ["EventStore", "StoreFront", "Transaction", "connect", "redact"]

_INT_OPTIONS = {
    "max_event_bytes",
    "page_size",
    "min_size",
    "max_size",
    "statement_cache_size",
    "busy_timeout_ms",
    "max_batch_events",
    "writers",
}


def redact(url: str) -> str:
    """The URL with its password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def url_options(url: str, options: dict[str, Any]) -> dict[str, Any]:
    """Options from the URL's query string, overridden by keyword options, typed."""
    merged: dict[str, Any] = dict(parse_qsl(urlsplit(url).query))
    merged.update(options)
    for key in _INT_OPTIONS & merged.keys():
        try:
            merged[key] = int(merged[key])
        except (TypeError, ValueError):
            raise ConfigurationError(
                f"option {key} must be an integer, not {merged[key]!r}"
            ) from None
    return merged


async def connect(url: str, **options: Any) -> StoreFront:
    """Open the store at ``url``: ``memory://``, ``sqlite:///path`` or ``postgresql://...``.

    Options come from the URL's query string or as keywords (keywords win), e.g.
    ``max_event_bytes``, ``poll_interval`` (seconds between head polls of a live
    reader that hears nothing, 1), ``synchronous`` (SQLite), ``schema`` and ``max_size``
    (PostgreSQL), ``types`` (a ``tidings.Types`` registry: typed appends, upcast reads;
    kept as ``store.types``). This opens the store alone; ``tidings.connect`` also
    attaches a notifier.
    """
    if not isinstance(url, str):
        raise ConfigurationError(f"store URL must be a string, not {type(url).__name__}")
    scheme = urlsplit(url).scheme
    opts = url_options(url, options)
    poll_interval = opts.pop("poll_interval", None)
    types = check_types(opts.pop("types", None))
    store = await _open(scheme, url, opts)
    store.types = types
    if poll_interval is not None:
        try:
            store.poll_interval = float(poll_interval)
        except (TypeError, ValueError, InvalidInput) as exc:
            await store.close()
            raise ConfigurationError(
                f"poll_interval must be seconds > 0, not {poll_interval!r}"
            ) from exc
    return store


async def _open(scheme: str, url: str, opts: dict[str, Any]) -> StoreFront:
    if scheme == "memory":
        from tidings.store.memory import MemoryStore

        return MemoryStore(url, **_only(opts, {"max_event_bytes", "page_size"}, url))
    if scheme == "sqlite":
        from tidings.store.sqlite import SQLiteStore

        return await SQLiteStore.open(url, **opts)
    if scheme in ("postgresql", "postgres"):
        try:
            from tidings.store.postgres import PostgresStore
        except ImportError as exc:  # asyncpg missing
            raise ConfigurationError(
                "the PostgreSQL backend needs asyncpg: pip install 'tidings[postgres]'"
            ) from exc
        return await PostgresStore.open(url, **opts)
    raise ConfigurationError(
        f"unknown store URL scheme {scheme!r} in {redact(url)}: "
        "use memory://, sqlite:///path or postgresql://"
    )


def _only(opts: dict[str, Any], allowed: set[str], url: str) -> dict[str, Any]:
    unknown = opts.keys() - allowed
    if unknown:
        raise ConfigurationError(f"unknown option(s) {sorted(unknown)} for {redact(url)}")
    return opts
