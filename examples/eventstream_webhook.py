"""A managed event stream delivering to a webhook, all in one process.

A tiny aiohttp receiver on 127.0.0.1 checks each delivery's Standard Webhooks
signature; a SQLite store in a temporary folder holds the log and the stream; a
``Dispatcher`` runs the stream. Three events are appended and the script waits until
they arrive. See docs/eventstreams.md.

Run it with ``python examples/eventstream_webhook.py`` (it needs aiohttp, the
``delivery`` extra, and the ``standardwebhooks`` package).
"""

from __future__ import annotations

import asyncio
import ipaddress
import sys
import tempfile
from pathlib import Path
from typing import Any

import standardwebhooks
from aiohttp import web

import tidings
from tidings.delivery.definitions import Definition, StreamFilter, Webhook
from tidings.delivery.dispatcher import Dispatcher
from tidings.delivery.streams import EventStreams
from tidings.store.base import StoreFront

TIMEOUT = 20.0


class Receiver:
    """Verifies each delivery and keeps its events. Delivery is at least once, so an
    event that comes again (a retried batch whose first answer was lost) is dropped
    by its id."""

    def __init__(self) -> None:
        self.verifier: standardwebhooks.Webhook | None = None
        self.events: list[dict[str, Any]] = []
        self.seen: set[str] = set()
        self.arrived = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.verifier is None:
            return web.Response(status=503)  # not ready: tidings retries
        try:
            batch = self.verifier.verify(body, dict(request.headers))
        except standardwebhooks.WebhookVerificationError:
            return web.Response(status=400, text="bad signature")
        for event in batch["events"]:
            if event["id"] not in self.seen:
                self.seen.add(event["id"])
                self.events.append(event)
        self.arrived.set()
        return web.Response(status=204)  # any 2xx: delivered


async def main(folder: Path) -> int:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        store = await tidings.connect(f"sqlite:///{folder / 'events.db'}")
        assert isinstance(store, StoreFront)  # event streams need a local store
        async with store:
            # The SSRF guard refuses loopback (and private, link-local, metadata...)
            # addresses by default: a webhook must not make the server call itself.
            # ``allow`` opens these networks for this demo's receiver; a server does
            # the same with ``allow = ["127.0.0.0/8"]`` under ``[eventstreams]``.
            streams = EventStreams(store, allow=(ipaddress.ip_network("127.0.0.0/8"),))
            created = await streams.create(
                Definition(
                    name="orders",
                    type="webhook",
                    filter=StreamFilter(categories=["order"]),
                    webhook=Webhook(url=f"http://127.0.0.1:{port}/hook"),
                )
            )
            # The signing secret is returned once, by the create; keep it.
            assert created.secret is not None
            receiver.verifier = standardwebhooks.Webhook(created.secret)

            async with Dispatcher(streams):  # runs the started streams of this node
                await store.append(
                    "order-42",
                    [
                        tidings.NewEvent("Placed", {"total": 10}),
                        tidings.NewEvent("Paid", {"amount": 10}),
                    ],
                )
                await store.append("invoice-7", [tidings.NewEvent("Issued", {})])  # filtered out
                await store.append("order-42", [tidings.NewEvent("Shipped", {"carrier": "ups"})])
                async with asyncio.timeout(TIMEOUT):
                    while len(receiver.events) < 3:
                        receiver.arrived.clear()
                        await receiver.arrived.wait()
            info = await streams.get("orders")
    finally:
        await runner.cleanup()

    positions = [e["position"] for e in receiver.events]
    types = [e["type"] for e in receiver.events]
    if positions != sorted(positions) or types != ["Placed", "Paid", "Shipped"]:
        print(f"unexpected deliveries: {list(zip(positions, types, strict=True))}")
        return 1
    print(f"received {len(types)} events in order, signatures valid: {', '.join(types)}")
    print(f"checkpoint {info.stats.checkpoint}, delivered {info.stats.delivered}")
    return 0


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as folder:
        sys.exit(asyncio.run(main(Path(folder))))
