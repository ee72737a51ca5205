"""Prometheus metrics for an embedded tidings: appends, head, lag, notifier, outbox.

Give it your own registry and watch what you run::

    metrics = tidings.metrics.Metrics(registry)      # prometheus_client.CollectorRegistry
    metrics.watch_store(store)                       # events appended, append sizes, head
    metrics.watch_notifier(notifier)                 # connects, disconnects (reconnects)
    metrics.watch_relay(relay)                       # the outbox backlog and failures
    metrics.watch_satellite(satellite)               # online, pending, conflicts, position
    await metrics.refresh(store)                     # lag per subscription (before a scrape)

Values that already live in tidings' objects (the head, notifier and relay counts)
are read when the registry is scraped, so watching costs nothing on the hot path; an
append costs one counter increment and one histogram observation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from tidings.errors import ConfigurationError
from tidings.store import StoreFront

try:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - the extra is missing
    raise ConfigurationError(
        "tidings.metrics needs prometheus-client: pip install 'tidings[server]'"
    ) from exc

APPEND_SIZES = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000)


class _Read(Collector):
    """A collector whose samples are read from live objects at scrape time."""

    def __init__(self, read: Callable[[], Iterable[Any]]) -> None:
        self._read = read

    def collect(self) -> Iterator[Any]:
        yield from self._read()


class Metrics:
    """tidings' metrics in one registry (``prometheus_client.REGISTRY`` by default)."""

    def __init__(self, registry: CollectorRegistry | None = None, namespace: str = "tidings"):
        from prometheus_client import REGISTRY

        self.registry = REGISTRY if registry is None else registry
        self.namespace = namespace
        self.events_appended = Counter(
            "events_appended",
            "Events in acknowledged appends (an idempotent replay counts again)",
            ["store"],
            namespace=namespace,
            registry=self.registry,
        )
        self.append_size = Histogram(
            "append_size_events",
            "Events per acknowledged append",
            ["store"],
            buckets=APPEND_SIZES,
            namespace=namespace,
            registry=self.registry,
        )
        self.subscription_lag = Gauge(
            "subscription_lag_events",
            "Events between a subscription's checkpoint and the head (at the last refresh)",
            ["subscription"],
            namespace=namespace,
            registry=self.registry,
        )
        self._stores: dict[str, StoreFront] = {}
        self._notifiers: dict[str, Any] = {}
        self._relays: dict[str, Any] = {}
        self._satellites: dict[str, Any] = {}
        self.registry.register(_Read(self._read_live))

    def watch_store(self, store: StoreFront, name: str | None = None) -> None:
        """Count ``store``'s appends and expose its head (labelled ``name`` or its URL)."""
        label = name or _shown(store.url)
        counter = self.events_appended.labels(label)
        sizes = self.append_size.labels(label)

        def observe(count: int) -> None:
            counter.inc(count)
            sizes.observe(count)

        store.append_observers.append(observe)
        self._stores[label] = store

    def watch_notifier(self, notifier: Any, name: str | None = None) -> None:
        """Expose a notifier's connects and disconnects (a reconnect is one of each)."""
        self._notifiers[name or _shown(getattr(notifier, "url", "notifier"))] = notifier

    def watch_relay(self, relay: Any, name: str = "outbox") -> None:
        """Expose an outbox relay's backlog (rows left pending) and failed publishes."""
        self._relays[name] = relay

    def watch_satellite(self, satellite: Any, name: str | None = None) -> None:
        """Expose a satellite's standing as of its last sync round: online, pending
        transactions, conflicts, replicated position, last sync time."""
        self._satellites[name or str(getattr(satellite, "satellite_id", "satellite"))] = satellite

    async def refresh(self, store: StoreFront) -> None:
        """Read every subscription's lag from ``store`` into the lag gauge."""
        found = await store.subscriptions()
        names = {info.name for info in found}
        for info in found:
            self.subscription_lag.labels(info.name).set(info.lag)
        for labels in list(self.subscription_lag._metrics):  # forget deleted subscriptions
            if labels[0] not in names:
                self.subscription_lag.remove(*labels)

    def _read_live(self) -> Iterator[Any]:
        ns = self.namespace
        head = GaugeMetricFamily(
            f"{ns}_head_position", "The last committed position known here", labels=["store"]
        )
        for label, store in self._stores.items():
            head.add_metric([label], store.known_head)
        yield head
        connects = CounterMetricFamily(
            f"{ns}_notifier_connects", "Notifier connections made", labels=["notifier"]
        )
        drops = CounterMetricFamily(
            f"{ns}_notifier_disconnects", "Notifier connections lost", labels=["notifier"]
        )
        for label, notifier in self._notifiers.items():
            connects.add_metric([label], getattr(notifier, "connects", 0))
            drops.add_metric([label], getattr(notifier, "disconnects", 0))
        yield connects
        yield drops
        backlog = GaugeMetricFamily(
            f"{ns}_outbox_backlog", "Outbox rows left pending by the last round", labels=["relay"]
        )
        failed = CounterMetricFamily(
            f"{ns}_outbox_failed", "Outbox publishes that failed", labels=["relay"]
        )
        for label, relay in self._relays.items():
            stats = relay.stats()
            backlog.add_metric([label], stats.pending)
            failed.add_metric([label], stats.failed)
        yield backlog
        yield failed
        yield from self._read_satellites()

    def _read_satellites(self) -> Iterator[Any]:
        ns = self.namespace
        families = {
            "online": GaugeMetricFamily(
                f"{ns}_satellite_online",
                "1 if the last sync round reached the server",
                labels=["satellite"],
            ),
            "pending": GaugeMetricFamily(
                f"{ns}_satellite_pending",
                "Local transactions not confirmed yet",
                labels=["satellite"],
            ),
            "conflicts": GaugeMetricFamily(
                f"{ns}_satellite_conflicts",
                "Local transactions the server refused",
                labels=["satellite"],
            ),
            "position": GaugeMetricFamily(
                f"{ns}_satellite_position",
                "The server position replicated up to",
                labels=["satellite"],
            ),
            "last_sync": GaugeMetricFamily(
                f"{ns}_satellite_last_sync_seconds",
                "When a sync round last reached the server (Unix time)",
                labels=["satellite"],
            ),
        }
        for label, satellite in self._satellites.items():
            status = getattr(satellite, "last_status", None)
            if status is None:
                continue
            families["online"].add_metric([label], 1.0 if status.online else 0.0)
            families["pending"].add_metric([label], status.pending)
            families["conflicts"].add_metric([label], status.conflicts)
            families["position"].add_metric([label], status.position)
            if status.last_sync is not None:
                families["last_sync"].add_metric([label], status.last_sync.timestamp())
        yield from families.values()


def _shown(url: str) -> str:
    from tidings.store import redact

    return redact(url).split("?", 1)[0]
