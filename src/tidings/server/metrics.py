"""``/metrics``: requests by route and status with latencies, live clients, the store's own."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.responses import PlainTextResponse, Response

from tidings.delivery.records import StreamInfo
from tidings.delivery.streams import MAX_PAGE
from tidings.metrics import Metrics
from tidings.server.auth import Caller
from tidings.server.node import Node
from tidings.server.routes.store import NodeDep

router = APIRouter()
LATENCIES = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)


class ServerMetrics(Metrics):
    """The library's metrics plus the server's: requests, latencies, live clients."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(CollectorRegistry() if registry is None else registry)
        self.requests = Counter(
            "http_requests",
            "HTTP requests answered, by route and status",
            ["method", "route", "status"],
            namespace=self.namespace,
            registry=self.registry,
        )
        self.latency = Histogram(
            "http_request_seconds",
            "Time to answer an HTTP request (to the start of the body, for live streams)",
            ["method", "route"],
            buckets=LATENCIES,
            namespace=self.namespace,
            registry=self.registry,
        )
        self.sync_verdicts = Counter(
            "sync_verdicts",
            "Satellite transactions pushed, by verdict",
            ["verdict"],
            namespace=self.namespace,
            registry=self.registry,
        )
        self.node: Node | None = None
        self.eventstreams: list[StreamInfo] = []
        """The event streams as the last scrape read them."""
        self.registry.register(_Live(self))
        self.registry.register(_EventStreams(self))

    async def refresh_eventstreams(self, node: Node) -> None:
        """Read every event stream's statistics (before a scrape)."""
        streams = node.streams()
        if streams is None:
            return
        found: list[StreamInfo] = []
        after = ""
        while True:
            page = await streams.list(after=after, limit=MAX_PAGE)
            found.extend(page)
            if len(page) < MAX_PAGE:
                break
            after = page[-1].name
        self.eventstreams = found

    def attach(self, node: Node) -> None:
        """Watch the node's store and notifier."""
        self.node = node
        self.watch_store(node.store, "server")  # type: ignore[arg-type]
        notifier = getattr(node.store, "notifier", None)
        if notifier is not None:
            self.watch_notifier(notifier, "server")


class _Live(Collector):
    def __init__(self, metrics: ServerMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Any]:
        node = self._metrics.node
        clients = GaugeMetricFamily("tidings_sse_clients", "Live (SSE) clients connected now")
        clients.add_metric([], 0 if node is None else node.sse_clients)
        yield clients
        sockets = GaugeMetricFamily("tidings_ws_connections", "WebSocket connections open now")
        sockets.add_metric([], 0 if node is None else len(node.ws_connections))
        yield sockets


class _EventStreams(Collector):
    """Each event stream's statistics, from the last scrape's read."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Any]:
        found = self._metrics.eventstreams
        labels = ["stream"]
        families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {
            "lag": GaugeMetricFamily(
                "tidings_eventstream_lag_events",
                "Events between the checkpoint and the head",
                labels=labels,
            ),
            "parked": GaugeMetricFamily(
                "tidings_eventstream_parked_events",
                "Events the stream parked (skip)",
                labels=labels,
            ),
            "delivered": CounterMetricFamily(
                "tidings_eventstream_delivered_events", "Events delivered", labels=labels
            ),
            "batches": CounterMetricFamily(
                "tidings_eventstream_batches", "Batches delivered or parked", labels=labels
            ),
            "attempts": CounterMetricFamily(
                "tidings_eventstream_attempts", "Delivery attempts", labels=labels
            ),
            "failures": CounterMetricFamily(
                "tidings_eventstream_failures", "Failed delivery attempts", labels=labels
            ),
        }
        running = GaugeMetricFamily(
            "tidings_eventstream_up",
            "1 for a started stream, 0 for a stopped one, by its dispatch status",
            labels=["stream", "type", "status"],
        )
        last = GaugeMetricFamily(
            "tidings_eventstream_last_dispatch_timestamp_seconds",
            "When a batch last landed (Unix time)",
            labels=labels,
        )
        for info in found:
            stats = info.stats
            name = [info.name]
            families["lag"].add_metric(name, stats.lag)
            families["parked"].add_metric(name, stats.parked)
            families["delivered"].add_metric(name, stats.delivered)
            families["batches"].add_metric(name, stats.batches)
            families["attempts"].add_metric(name, stats.attempts)
            families["failures"].add_metric(name, stats.failures)
            running.add_metric(
                [info.name, info.type, stats.status], 1 if info.status == "started" else 0
            )
            if stats.last_dispatch is not None:
                last.add_metric(name, stats.last_dispatch.timestamp())
        yield from families.values()
        yield running
        yield last


@router.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
async def metrics(request: Request, node: NodeDep, who: Caller) -> Response:
    """The server's metrics in Prometheus' text format (admin only when auth is on)."""
    who.require_admin()
    server: ServerMetrics = request.app.state.metrics
    with contextlib.suppress(Exception):  # lag is best effort: a scrape outlives the store
        await server.refresh(node.store)  # type: ignore[arg-type]
    with contextlib.suppress(Exception):
        await server.refresh_eventstreams(node)
    return Response(generate_latest(server.registry), media_type=CONTENT_TYPE_LATEST)
