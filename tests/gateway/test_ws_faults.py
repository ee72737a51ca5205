"""WebSocket subscriptions under faults: cuts from the client and from the server
(SIGKILL, SIGTERM), resumed from the positions the client holds; a client that stops
acking or stops reading. Every event exactly once, in order; the server bounded."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import signal
import socket
import time
import uuid
from pathlib import Path

import httpx
import pytest
import websockets

from tests.gateway.harness import EVENTS, Follower, Server, Tally, log_positions, write_all

log = logging.getLogger(__name__)
pytestmark = pytest.mark.slow


@pytest.mark.timeout(240)
async def test_cut_and_resumed_subscriptions_get_every_event_once_in_order(
    tmp_path: Path,
) -> None:
    seed = int(os.environ.get("TIDINGS_TEST_SEED", time.time_ns() % 1_000_000))
    log.warning("seed %d (TIDINGS_TEST_SEED=%d repeats this run)", seed, seed)
    rng = random.Random(seed)
    server = Server(f"sqlite:///{tmp_path / 'faults.db'}", {"TIDINGS_WS__BATCH_EVENTS": "50"})
    tag = uuid.uuid4().hex[:6]
    written = asyncio.Event()
    followers = [Follower(server, f"a{tag}", random.Random(rng.random())) for _ in range(3)]
    target: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    tally = Tally()
    try:
        writer = asyncio.create_task(
            write_all(server, tag, random.Random(rng.random()), written, tally=tally)
        )
        follows = [asyncio.create_task(f.run(target)) for f in followers]
        # The server's own cuts, each at a random point of its third of the writing, so
        # that every one comes mid-stream: requests and batches in flight.
        for k, sig in enumerate((signal.SIGKILL, signal.SIGTERM, signal.SIGKILL)):
            await tally.reached(round(EVENTS * (k + 0.2 + 0.6 * rng.random()) / 3))
            handled = [f.handled for f in followers]
            log.info(
                "stopping with %s: %d events written, followers at %s", sig, tally.count, handled
            )
            await asyncio.to_thread(server.stop, sig)
            log.info("stopped")
            await asyncio.sleep(rng.random() * 0.5)
            await asyncio.to_thread(server.start)
            log.info("started")
        await asyncio.wait_for(writer, 120)
        log.info("written")
        # The log's own record is the truth: every one of its events, once, in order.
        want = await log_positions(server, f"a{tag}")
        target.set_result(len(want))
        await asyncio.wait_for(asyncio.gather(*follows), 60)
    finally:
        await asyncio.to_thread(server.stop, signal.SIGTERM)
    for follower in followers:
        assert follower.positions == want, f"seed {seed}"
        assert follower.cuts >= 4
    # A SIGTERM is announced: 1012's closing message names where to resume, and a client
    # that handled everything it got stands exactly there.
    # (Whether a follower was connected at that instant is up to the random cuts;
    # test_protocol checks the closing message on SIGTERM every time.)
    for closing in (c for f in followers for c in f.closings if c["code"] == 1012):
        assert closing["resume"]["s"] >= closing["handled"], f"seed {seed}"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.timeout(120)
async def test_a_client_that_stops_acking_costs_a_bounded_queue_and_loses_nothing(
    tmp_path: Path,
) -> None:
    server = Server(
        f"sqlite:///{tmp_path / 'slow.db'}",
        {"TIDINGS_WS__LIVE_QUEUE_EVENTS": "200", "TIDINGS_WS__BATCH_EVENTS": "20"},
    )
    tag = uuid.uuid4().hex[:6]
    try:
        async with websockets.connect(server.ws) as ws:
            await ws.recv()
            await ws.send(json.dumps({"type": "subscribe", "sub": "s", "from": "end"}))
            assert json.loads(await ws.recv())["type"] == "subscribed"
            # 4 batches in flight, then nothing is acked while ~1,000 events/s flow for 5 s.
            payload = {"events": [{"type": "T", "data": {"pad": "x" * 2000}}] * 10}
            async with httpx.AsyncClient(timeout=5) as client:
                before = rss_kib(server.pid())
                for i in range(500):
                    r = await client.post(
                        f"{server.http}/streams/s{tag}-{i % 9}/events", json=payload
                    )
                    assert r.status_code == 201
                    await asyncio.sleep(0.008)
                after = rss_kib(server.pid())
            got: list[int] = []
            for _ in range(4):
                message = json.loads(await asyncio.wait_for(ws.recv(), 5))
                assert message["type"] == "events"
                got += [e["position"] for e in message["events"]]
            with pytest.raises(TimeoutError):  # nothing past the 4 batches in flight
                await asyncio.wait_for(ws.recv(), 0.5)
            # The live queue was bounded (200 events), so 5,000 events of ~2 KB did not
            # pile up in the server: far less than their 10 MB.
            assert after - before < 6_000, (before, after)
            # Acks resume it: the rest comes from the store, none skipped, none twice.
            batch = 4
            await ws.send(json.dumps({"type": "ack", "sub": "s", "batch": batch}))
            while len(got) < 5_000:
                message = json.loads(await asyncio.wait_for(ws.recv(), 10))
                got += [e["position"] for e in message["events"]]
                await ws.send(json.dumps({"type": "ack", "sub": "s", "batch": message["batch"]}))
        assert got == sorted(set(got)) and len(got) == 5_000
        assert got[-1] - got[0] == 4_999  # the only writer: contiguous positions
    finally:
        server.stop(signal.SIGTERM)


@pytest.mark.timeout(60)
async def test_a_client_that_reads_nothing_is_dropped_and_others_are_not_held_up(
    tmp_path: Path,
) -> None:
    server = Server(
        f"sqlite:///{tmp_path / 'stuck.db'}",
        {"TIDINGS_WS__SEND_TIMEOUT": "2", "TIDINGS_WS__QUEUE_BYTES": "65536"},
    )
    tag = uuid.uuid4().hex[:6]
    try:
        tiny = socket.socket()
        tiny.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # no room to hide in
        tiny.connect(("127.0.0.1", server.port))
        stuck = await websockets.connect(server.ws, sock=tiny, max_queue=1, compression=None)
        await stuck.send(json.dumps({"type": "subscribe", "sub": "s", "ack": "auto"}))
        stuck.transport.pause_reading()  # reads nothing from here on
        async with websockets.connect(server.ws) as healthy:
            await healthy.recv()
            await healthy.send(json.dumps({"type": "subscribe", "sub": "s", "ack": "auto"}))
            pad = os.urandom(1000).hex()  # frames that do not shrink if compressed
            payload = {"events": [{"type": "T", "data": {"pad": pad}}] * 50}
            async with httpx.AsyncClient(timeout=5) as client:
                for i in range(120):  # ~12 MB: far more than the socket buffers hold
                    r = await client.post(f"{server.http}/streams/k{tag}-{i}/events", json=payload)
                    assert r.status_code == 201
            received = 0
            while received < 6_000:
                message = json.loads(await asyncio.wait_for(healthy.recv(), 10))
                if message["type"] == "events":
                    received += len(message["events"])
            assert received == 6_000
            # The stuck client is let go after send_timeout: the server holds no
            # connection for it (the healthy one is the only one left).
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                r = await asyncio.to_thread(httpx.get, f"{server.http}/metrics")
                if "tidings_ws_connections 1.0" in r.text:
                    break
                await asyncio.sleep(0.5)
            else:
                shown = [x for x in r.text.splitlines() if "ws_conn" in x]
                raise AssertionError(f"the stuck connection was not dropped: {shown}")
        stuck.transport.abort()
    finally:
        server.stop(signal.SIGTERM)


@pytest.mark.timeout(60)
def test_the_ws_follow_example_follows_and_resumes_across_a_restart(tmp_path: Path) -> None:
    import subprocess
    import sys

    server = Server(f"sqlite:///{tmp_path / 'example.db'}", {})
    example = Path(__file__).resolve().parents[2] / "examples" / "ws_follow.py"
    try:
        with httpx.Client(base_url=server.http) as client:
            for i in range(3):
                client.post(f"/streams/order-{i}/events", json={"events": [{"type": "Placed"}]})
            client.post("/streams/user-1/events", json={"events": [{"type": "Joined"}]})
        follower = subprocess.Popen(
            [sys.executable, str(example), server.ws, "--category", "order", "--count", "5"],
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.5)
        server.stop(signal.SIGTERM)  # the example reconnects and resumes by itself
        server.start()
        with httpx.Client(base_url=server.http) as client:
            for i in range(3, 5):
                client.post(f"/streams/order-{i}/events", json={"events": [{"type": "Placed"}]})
        out, _ = follower.communicate(timeout=30)
    finally:
        server.stop(signal.SIGTERM)
    assert follower.returncode == 0
    assert out.splitlines() == [
        "1 order-0 Placed",
        "2 order-1 Placed",
        "3 order-2 Placed",
        "5 order-3 Placed",
        "6 order-4 Placed",
    ]
