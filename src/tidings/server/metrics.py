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
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.responses import PlainTextResponse, Response

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
        self.node: Node | None = None
        self.registry.register(_Live(self))

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


@router.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
async def metrics(request: Request, node: NodeDep, who: Caller) -> Response:
    """The server's metrics in Prometheus' text format (admin only when auth is on)."""
    who.require_admin()
    server: ServerMetrics = request.app.state.metrics
    with contextlib.suppress(Exception):  # lag is best effort: a scrape outlives the store
        await server.refresh(node.store)  # type: ignore[arg-type]
    return Response(generate_latest(server.registry), media_type=CONTENT_TYPE_LATEST)
