"""The node's event streams: the API object and the dispatcher, built from the settings."""

from __future__ import annotations

import ipaddress

from tidings.delivery.definitions import Defaults, TlsConfig
from tidings.delivery.dispatcher import Dispatcher
from tidings.delivery.streams import EventStreams
from tidings.errors import ConfigurationError
from tidings.server.settings import EventStreamSettings
from tidings.server.ws.firefly import Consumers
from tidings.store.base import StoreFront


def defaults_of(settings: EventStreamSettings) -> Defaults:
    """The delivery defaults the settings give."""
    return Defaults(
        batch_size=settings.batch_size,
        batch_timeout=settings.batch_timeout,
        retry_timeout=settings.retry_timeout,
        blocked_retry_delay=settings.blocked_retry_delay,
        error_handling=settings.error_handling,
        disable_after=settings.disable_after,
        webhook_timeout=settings.webhook_timeout,
        ack_timeout=settings.ack_timeout,
        allow_private=settings.allow_private,
        lease_ttl=settings.lease_ttl,
        attempt_retention=settings.attempt_retention,
        secret_overlap=settings.secret_overlap,
    )


def open_eventstreams(store: object, settings: EventStreamSettings) -> EventStreams | None:
    """The event-stream API on ``store`` (None for a store without a database of its
    own here, such as a remote one)."""
    if not isinstance(store, StoreFront):
        return None
    try:
        allow = tuple(ipaddress.ip_network(n, strict=False) for n in settings.allow)
    except ValueError as exc:
        raise ConfigurationError(f"eventstreams.allow: {exc}") from None
    tls = {
        name: TlsConfig(t.ca_file, t.cert_file, t.key_file, t.verify)
        for name, t in settings.tls.items()
    }
    return EventStreams(store, defaults_of(settings), tls, allow, settings.proxies)


async def start_dispatcher(
    streams: EventStreams | None,
    settings: EventStreamSettings,
    node_id: str,
    consumers: Consumers | None = None,
) -> Dispatcher | None:
    """Run the started streams on this node, unless disabled; websocket streams go to
    ``consumers`` attached here."""
    if streams is None or not settings.enabled:
        return None
    dispatcher = Dispatcher(streams, node_id=f"node-{node_id}", consumers=consumers)
    if consumers is not None:
        consumers.on_attach = dispatcher.poke
    await dispatcher.start()
    return dispatcher
