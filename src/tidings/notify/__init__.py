"""The notify layer: ephemeral pub/sub between processes, and ``connect`` by URL.

notifier = await tidings.notify.connect("redis://127.0.0.1:6379/0")
async with notifier, notifier.subscribe("orders") as sub:
    await notifier.publish("orders", b'{"id": 1}')
    async for message in sub:
        ...
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from tidings.errors import ConfigurationError
from tidings.notify.base import (
    DEFAULT_MAXSIZE,
    Message,
    Notice,
    Notifier,
    NotifierBase,
    Overflow,
    Subscription,
    check_channel,
)
from tidings.notify.supervised import SupervisedNotifier
from tidings.store import redact

__all__ = [
    "DEFAULT_MAXSIZE",
    "Message",
    "Notice",
    "Notifier",
    "NotifierBase",
    "Overflow",
    "Subscription",
    "check_channel",
    "connect",
]

_FLOAT_OPTIONS = {
    "keepalive",
    "keepalive_timeout",
    "backoff",
    "backoff_max",
    "connect_timeout",
    "publish_timeout",
}
_EXTRA = {"postgresql": "postgres", "redis": "redis", "nats": "nats"}


async def connect(url: str, **options: Any) -> NotifierBase:
    """Open the notifier at ``url``: ``memory://``, ``postgresql://``, ``redis://`` or
    ``nats://``, connected and supervised.

    Options (URL query or keywords, keywords win): ``keepalive`` (seconds between
    pings, 5), ``keepalive_timeout``, ``backoff`` and ``backoff_max`` (reconnect
    delays, 0.05 and 5), ``connect_timeout`` (5), ``publish_timeout`` (how long a
    publish waits for a reconnect, 2) and, for memory and Redis, ``max_payload``.
    Raises ``NotifierUnavailable`` when the server cannot be reached.
    """
    if not isinstance(url, str):
        raise ConfigurationError(f"notifier URL must be a string, not {type(url).__name__}")
    parts = urlsplit(url)
    scheme = "postgresql" if parts.scheme == "postgres" else parts.scheme
    ours, theirs = _split_options(url, options)
    dsn = parts._replace(query=urlencode(theirs)).geturl()
    if scheme == "memory":
        from tidings.notify.memory import MemoryNotifier

        unknown = ours.keys() - {"max_payload"}
        if unknown:
            raise ConfigurationError(f"unknown option(s) {sorted(unknown)} for {url}")
        return MemoryNotifier(url, **ours)
    if scheme not in _EXTRA:
        raise ConfigurationError(
            f"unknown notifier URL scheme {parts.scheme!r} in {redact(url)}: "
            "use memory://, postgresql://, redis:// or nats://"
        )
    if "max_payload" in ours and scheme != "redis":
        raise ConfigurationError(f"the {scheme} notifier's payload limit is the server's own")
    notifier: SupervisedNotifier = _backend(scheme)(url, dsn, **ours)
    await notifier.start()
    return notifier


def _backend(scheme: str) -> Any:
    try:
        if scheme == "postgresql":
            from tidings.notify.postgres import PostgresNotifier

            return PostgresNotifier
        if scheme == "redis":
            from tidings.notify.redis import RedisNotifier

            return RedisNotifier
        from tidings.notify.nats import NatsNotifier

        return NatsNotifier
    except ImportError as exc:
        extra = _EXTRA[scheme]
        raise ConfigurationError(
            f"the {scheme} notifier needs its client library: pip install 'tidings[{extra}]'"
        ) from exc


def _split_options(url: str, options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Split the URL query and keywords into tidings' options and the driver's own."""
    ours: dict[str, Any] = {}
    theirs: dict[str, str] = {}
    for key, value in [*parse_qsl(urlsplit(url).query), *options.items()]:
        if key in _FLOAT_OPTIONS or key == "max_payload":
            ours[key] = value
        elif key in options:
            raise ConfigurationError(f"unknown notifier option {key!r}")
        else:
            theirs[key] = value
    for key in _FLOAT_OPTIONS & ours.keys():
        try:
            ours[key] = float(ours[key])
        except (TypeError, ValueError):
            raise ConfigurationError(f"option {key} must be a number, not {ours[key]!r}") from None
        if ours[key] <= 0:
            raise ConfigurationError(f"option {key} must be above 0, not {ours[key]!r}")
    if "max_payload" in ours:
        try:
            ours["max_payload"] = int(ours["max_payload"])
        except (TypeError, ValueError):
            raise ConfigurationError(
                f"max_payload must be an int, not {ours['max_payload']!r}"
            ) from None
    return ours, theirs
