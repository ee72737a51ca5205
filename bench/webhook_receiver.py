"""A webhook receiver for ``bench/eventstreams.py``, in a process of its own.

Usage::

    python bench/webhook_receiver.py [--host 127.0.0.1] [--port 0]

An aiohttp server (on uvloop when installed) that prints ``listening on http://HOST:PORT``
once it listens, then:

``POST /hook/{name}``
    A batch, ``{"stream", "batch_id", "batch_number", "events": [{"position", ...}]}``:
    answered ``200 ok`` at once. Per ``name`` it counts batches and events, the events
    whose position is not above the last one seen (out of order or repeated), and the
    ``time.time()`` of the first and last arrival. While latencies are tracked, each
    event's ``data.t`` (the sender's ``time.time()`` at the append) gives its latency:
    arrival minus ``t``.
``POST /reset?latency=0|1``
    Forget everything; track latencies or not (decoding ``data`` costs a little).
    Answers this process's CPU seconds so far.
``GET /stats?latencies=0|1``
    What came, as JSON: per name, totals, this process's CPU seconds, and with
    ``latencies=1`` every ``[t, latency_ms]`` pair.
``GET /wait?events=N&timeout=S``
    ``/stats`` once N events in all have come since the reset, or after S seconds.

Every answer to a hook is the same small ``ok``, so a raw client and tidings' sender
cost the receiver the same.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from typing import Any

import msgspec
from aiohttp import web


class _Data(msgspec.Struct):
    t: float | None = None


class _Event(msgspec.Struct):
    position: int


class _TimedEvent(msgspec.Struct):
    position: int
    data: _Data | None = None


class _Batch(msgspec.Struct):
    events: list[_Event]


class _TimedBatch(msgspec.Struct):
    events: list[_TimedEvent]


_decode = msgspec.json.Decoder(_Batch).decode
_decode_timed = msgspec.json.Decoder(_TimedBatch).decode


class Hook:
    """What one path received."""

    __slots__ = ("batches", "disordered", "events", "first_position", "last_position")

    def __init__(self) -> None:
        self.batches = 0
        self.events = 0
        self.disordered = 0
        self.first_position: int | None = None
        self.last_position = 0

    def to_json(self, first_at: float, last_at: float) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "events": self.events,
            "disordered": self.disordered,
            "first_position": self.first_position,
            "last_position": self.last_position,
            "first_at": first_at,
            "last_at": last_at,
        }


class Receiver:
    """Counts what comes, per path."""

    def __init__(self) -> None:
        self.reset(latency=False)
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def reset(self, latency: bool) -> None:
        self.latency = latency
        self.hooks: dict[str, Hook] = {}
        self.first_at: dict[str, float] = {}
        self.last_at: dict[str, float] = {}
        self.total = 0
        self.latencies: list[tuple[float, float]] = []

    async def hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        now = time.time()
        name = request.match_info["name"]
        hook = self.hooks.get(name)
        if hook is None:
            hook = self.hooks[name] = Hook()
            self.first_at[name] = now
        self.last_at[name] = now
        events = (_decode_timed if self.latency else _decode)(body).events
        hook.batches += 1
        hook.events += len(events)
        last = hook.last_position
        if hook.first_position is None and events:
            hook.first_position = events[0].position
        for event in events:
            if event.position <= last:
                hook.disordered += 1
            last = max(last, event.position)
        hook.last_position = last
        if self.latency:
            for event in events:
                t = event.data.t if event.data is not None else None  # type: ignore[attr-defined]
                if t is not None:
                    self.latencies.append((t, (now - t) * 1000))
        self.total += len(events)
        if self._waiters:
            self._wake()
        return web.Response(text="ok")

    def _wake(self) -> None:
        still = []
        for want, future in self._waiters:
            if self.total >= want:
                if not future.done():
                    future.set_result(None)
            else:
                still.append((want, future))
        self._waiters = still

    def stats(self, latencies: bool) -> dict[str, Any]:
        found: dict[str, Any] = {
            "total": self.total,
            "cpu_seconds": time.process_time(),
            "hooks": {
                name: hook.to_json(self.first_at[name], self.last_at[name])
                for name, hook in self.hooks.items()
            },
        }
        if latencies:
            found["latencies"] = self.latencies
        return found

    async def reset_handler(self, request: web.Request) -> web.Response:
        self.reset(latency=request.query.get("latency") == "1")
        return web.json_response({"ok": True, "cpu_seconds": time.process_time()})

    async def stats_handler(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats(request.query.get("latencies") == "1"))

    async def wait_handler(self, request: web.Request) -> web.Response:
        want = int(request.query["events"])
        timeout = float(request.query.get("timeout", "60"))
        if self.total < want:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append((want, future))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(future, timeout)
        return web.json_response(self.stats(request.query.get("latencies") == "1"))


def app() -> web.Application:
    receiver = Receiver()
    application = web.Application(client_max_size=256 * 1024 * 1024)
    application.router.add_post("/hook/{name}", receiver.hook)
    application.router.add_post("/reset", receiver.reset_handler)
    application.router.add_get("/stats", receiver.stats_handler)
    application.router.add_get("/wait", receiver.wait_handler)
    return application


async def serve(host: str, port: int) -> None:
    runner = web.AppRunner(app(), access_log=None, handle_signals=True)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    server = site._server
    assert server is not None
    bound = server.sockets[0].getsockname()  # type: ignore[union-attr]
    print(f"listening on http://{bound[0]}:{bound[1]}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    with contextlib.suppress(KeyboardInterrupt):
        runner(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
