"""What the gateway's fault tests share: a restartable server, an idempotent writer, a
follower that resumes from the positions it holds, and the log's own record."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import signal
import socket
import time
import uuid
from typing import Any

import httpx
import websockets

from tests.served import Served, start_server

log = logging.getLogger(__name__)
__all__ = [
    "EVENTS",
    "Follower",
    "Server",
    "Tally",
    "free_port",
    "log_positions",
    "signal",
    "write_all",
]

EVENTS = 10_000
QUIET = 0.3  # how long a follower that has everything watches for anything more


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Server:
    """A ``tidings serve`` that can be killed and started again on the same port and file."""

    def __init__(self, store: str, env: dict[str, str], *args: str) -> None:
        self.store = store
        self.env = env
        self.args = args
        self.port = free_port()
        self.process: Served | None = None
        self.start()

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self) -> None:
        for _ in range(50):  # the port can stay taken for a moment after a kill
            try:
                self.process = start_server(self.store, *self.args, env=self.env, port=self.port)
                return
            except RuntimeError:
                time.sleep(0.2)
        raise RuntimeError("the server did not start again")

    def stop(self, sig: int) -> None:
        assert self.process is not None
        self.process.stop(sig)

    def pid(self) -> int:
        assert self.process is not None
        return self.process.process.pid


class Tally:
    """How many events the writers sharing it have stored so far, to time faults by:
    ``await tally.reached(n)`` returns once ``n`` are stored (a TimeoutError after
    60 s: a writer that died or stalled fails the test, it does not hang it)."""

    def __init__(self) -> None:
        self.count = 0
        self._grew = asyncio.Condition()

    async def add(self, n: int) -> None:
        async with self._grew:
            self.count += n
            self._grew.notify_all()

    async def reached(self, n: int) -> None:
        async with asyncio.timeout(60), self._grew:
            await self._grew.wait_for(lambda: self.count >= n)


async def write_all(
    servers: Server | list[Server],
    tag: str,
    rng: random.Random,
    done: asyncio.Event | None = None,
    count: int = EVENTS,
    first: int = 0,
    tally: Tally | None = None,
) -> None:
    """Append ``count`` events with ids (retried until stored: idempotent) to streams of
    categories ``a<tag>`` and ``b<tag>``, in batches of random sizes, through any of
    ``servers`` (the next one when one is down); each stored batch counts in ``tally``."""
    nodes = servers if isinstance(servers, list) else [servers]
    n = first
    turn = 0
    async with httpx.AsyncClient(timeout=5) as client:
        while n < first + count:
            size = min(rng.randint(1, 60), first + count - n)
            category = f"a{tag}" if rng.random() < 0.5 else f"b{tag}"
            stream = f"{category}-{n % 7}"
            events = [
                {"id": str(uuid.uuid5(uuid.NAMESPACE_OID, f"{tag}-{n + i}")), "type": "T"}
                for i in range(size)
            ]
            while True:
                node = nodes[turn % len(nodes)]
                try:
                    r = await client.post(
                        f"{node.http}/streams/{stream}/events", json={"events": events}
                    )
                    if r.status_code == 201:
                        break
                except httpx.HTTPError:
                    pass
                turn += 1  # that node is down or restarting: the next one
                await asyncio.sleep(0.05)
            n += size
            if tally is not None:
                await tally.add(size)
            await asyncio.sleep(rng.random() * 0.004)
    if done is not None:
        done.set()


async def log_positions(server: Server, category: str) -> list[int]:
    """The positions of ``category``'s events in the whole log, read over HTTP."""
    found: list[int] = []
    after = 0
    async with httpx.AsyncClient(timeout=10) as client:
        while True:
            r = await client.get(
                f"{server.http}/events",
                params={"from_position": after, "category": category, "limit": 1000},
            )
            page = r.json()
            found += [e["position"] for e in page["events"]]
            if not page["events"] or page.get("next") is None:
                return found
            after = page["next"]


class Follower:
    """A client that subscribes, handles and acks batches, and resumes after any cut
    from the last position it handled."""

    def __init__(
        self,
        servers: Server | list[Server],
        category: str,
        rng: random.Random,
        cut_chance: float = 0.7,
    ) -> None:
        self.servers = servers if isinstance(servers, list) else [servers]
        self.cut_chance = cut_chance
        self.turn = rng.randrange(len(self.servers))
        self.nodes: set[int] = set()  # the ports of the nodes it got events from
        self.category = category
        self.rng = rng
        self.handled = 0
        self.positions: list[int] = []
        self.cuts = 0
        self.closings: list[dict[str, Any]] = []

    def complete(self, target: asyncio.Future[int]) -> bool:
        """Whether it has got as many events as ``target`` (once known) says."""
        return target.done() and len(self.positions) >= target.result()

    async def receive(self, ws: websockets.ClientConnection, target: asyncio.Future[int]) -> Any:
        """The next message; None once the follower is complete and nothing more came
        for ``QUIET`` s (anything that does come is handled: a duplicate or a stray event
        fails the test). 30 s of silence before that is a TimeoutError."""
        for _ in range(round(30 / QUIET)):
            complete = self.complete(target)  # before the wait: a whole QUIET after it
            try:
                return json.loads(await asyncio.wait_for(ws.recv(), QUIET))
            except TimeoutError:
                if complete:
                    return None
        raise TimeoutError

    async def session(self, cut_after: int | None, target: asyncio.Future[int]) -> None:
        """One connection: until it is cut (by us after ``cut_after`` batches, or by the
        server) or the follower is complete, handling each batch whole."""
        self.turn += 1
        server = self.servers[self.turn % len(self.servers)]  # any node will do
        async with websockets.connect(
            server.ws, subprotocols=[websockets.Subprotocol("tidings.v1")], open_timeout=5
        ) as ws:
            await ws.recv()  # ready
            await ws.send(
                json.dumps(
                    {
                        "type": "subscribe",
                        "sub": "s",
                        "filter": {"categories": [self.category]},
                        "from_position": self.handled,
                    }
                )
            )
            batches = 0
            while True:
                message = await self.receive(ws, target)
                if message is None:
                    return  # complete, and nothing more came
                if message["type"] == "closing":
                    self.closings.append({**message, "handled": self.handled})
                    continue
                if message["type"] != "events":
                    continue
                positions = [e["position"] for e in message["events"]]
                assert positions == sorted(positions) and positions[0] > self.handled
                assert message["last_position"] == positions[-1]
                self.positions += positions
                self.handled = message["last_position"]
                self.nodes.add(server.port)
                await ws.send(json.dumps({"type": "ack", "sub": "s", "batch": message["batch"]}))
                batches += 1
                if cut_after is not None and batches >= cut_after:
                    if self.rng.random() < 0.5:
                        ws.transport.abort()  # an unclean cut
                    else:
                        await ws.close()
                    return

    async def run(self, target: asyncio.Future[int]) -> None:
        """Follow, with random cuts, until ``target`` (the count to get) is known and got."""
        while True:
            cut = self.rng.random() < self.cut_chance
            cut_after = self.rng.randint(1, 40) if cut else None
            try:
                await self.session(cut_after, target)
            except (
                OSError,
                websockets.ConnectionClosed,
                websockets.InvalidHandshake,
                TimeoutError,
            ) as exc:
                log.info("session ended: %r", exc)
            self.cuts += 1
            log.info("cut %d: %d events, at %d", self.cuts, len(self.positions), self.handled)
            if target.done() and len(self.positions) >= target.result():
                return
            await asyncio.sleep(0.02)
