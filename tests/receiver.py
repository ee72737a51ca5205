"""A webhook receiver for tests: a real aiohttp server on loopback that records every
request and answers from a script (statuses, headers, delays), then 200."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Answer:
    """One scripted reply."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    body: str = "ok"


@dataclass
class Received:
    """One request as the receiver saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    answered: int

    @property
    def batch(self) -> dict[str, Any]:
        """The decoded JSON body."""
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


class Receiver:
    """Records requests; ``script`` holds the next answers (200 when it runs out)."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.script: list[Answer] = []
        self.url = ""
        self.arrived = asyncio.Event()
        self.connections = 0

    def answer(self, *answers: Answer) -> None:
        """Queue answers for the next requests."""
        self.script.extend(answers)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        answer = self.script.pop(0) if self.script else Answer()
        self.requests.append(
            Received(
                request.method, request.path, dict(request.headers), body, time.monotonic(),
                answer.status,
            )
        )  # fmt: skip
        self.arrived.set()
        if answer.delay:
            await asyncio.sleep(answer.delay)
        return web.Response(status=answer.status, headers=answer.headers, text=answer.body)

    def delivered(self) -> list[Received]:
        """The requests answered with a 2xx."""
        return [r for r in self.requests if 200 <= r.answered < 300]

    def positions(self) -> list[int]:
        """Positions of the events in delivered batches, in arrival order."""
        return [e["position"] for r in self.delivered() for e in r.batch["events"]]

    async def wait_for(self, count: int, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Until ``count`` events were delivered."""
        async with asyncio.timeout(timeout):
            while len(self.positions()) < count:
                self.arrived.clear()
                await self.arrived.wait()


@asynccontextmanager
async def receiving(path: str = "/hook") -> AsyncIterator[Receiver]:
    """A receiver listening on 127.0.0.1 at a free port; ``receiver.url`` is its URL."""
    receiver = Receiver()
    app = web.Application()
    app.router.add_route("*", path, receiver.handle)
    app.router.add_route("*", "/{tail:.*}", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    receiver.url = f"http://127.0.0.1:{port}{path}"
    try:
        yield receiver
    finally:
        await runner.cleanup()
