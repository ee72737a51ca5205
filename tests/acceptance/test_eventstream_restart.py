"""Managed event streams across restarts of a real ``tidings serve``: a webhook stream
created over HTTP goes on delivering after the server is stopped (SIGTERM) or killed
(SIGKILL) while the receiver holds a batch and a new server starts on the same store,
with no call to start it again; every event arrives at least once, in order, and a
batch sent again is the same batch (``webhook-id``, number, events). A stream stopped
over HTTP stays stopped across a restart. On SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import standardwebhooks

from tests.receiver import Answer, Received, Receiver, receiving
from tests.served import Served, start_server

pytestmark = [pytest.mark.slow]

LEASE_TTL = 1.5
ENV = {
    "TIDINGS_EVENTSTREAMS__ALLOW": '["127.0.0.0/8"]',  # the receiver is on loopback
    "TIDINGS_EVENTSTREAMS__LEASE_TTL": str(LEASE_TTL),
    "TIDINGS_EVENTSTREAMS__BATCH_TIMEOUT": "0.02",
}
BATCH = 2
"""The stream's batch_size: an append of several events makes full batches, sent
straight after the one before lands (its hand-out written while it is posted)."""
HOLD = 1.0
"""Seconds the receiver keeps the batch in flight at the stop before answering 200:
well within the 5 s a stopping server gives a batch being posted."""


class Servers:
    """The ``tidings serve`` processes of a test, all on one store; each is stopped at
    the end of the test."""

    def __init__(self, store: str) -> None:
        self.store = store
        self.started: list[Served] = []

    async def start(self) -> Served:
        """A new server on the store, listening."""
        server = await asyncio.to_thread(start_server, self.store, env=ENV)
        self.started.append(server)
        return server

    def close(self) -> None:
        for server in self.started:
            if server.process.poll() is not None:
                server.release()
                continue
            try:
                server.stop(signal.SIGTERM, 15)
            except subprocess.TimeoutExpired:
                server.stop(signal.SIGKILL, 15)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest) -> str:
    """A SQLite file in tmp_path, or a fresh PostgreSQL schema (dropped afterwards)."""
    url: str = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")
    return url


@pytest.fixture
def servers(store: str) -> Iterator[Servers]:
    """Servers on ``store``, stopped before the store is dropped."""
    made = Servers(store)
    yield made
    made.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as client:
        yield client


async def call(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    body: Any = None,
    status: int = 200,
) -> Any:
    """One HTTP call; its decoded JSON answer, which must have ``status``."""
    async with session.request(method, url, json=body) as response:
        text = await response.text()
        assert response.status == status, f"{method} {url}: {response.status} {text}"
        return json.loads(text) if text else None


async def create_stream(
    session: aiohttp.ClientSession, server: Served, receiver: Receiver
) -> dict[str, Any]:
    """``POST /eventstreams``: a webhook stream "orders" of every event to the receiver."""
    definition = {
        "name": "orders",
        "type": "webhook",
        "batch_size": BATCH,
        "webhook": {"url": receiver.url},
    }
    created: dict[str, Any] = await call(
        session, "POST", f"{server.url}/eventstreams", definition, 201
    )
    assert created["status"] == "started"
    assert created["secret"].startswith("whsec_")
    return created


async def stream(session: aiohttp.ClientSession, server: Served) -> dict[str, Any]:
    """``GET /eventstreams/orders``."""
    info: dict[str, Any] = await call(session, "GET", f"{server.url}/eventstreams/orders")
    return info


async def append(session: aiohttp.ClientSession, server: Served, name: str, count: int) -> int:
    """Append ``count`` events to ``name`` in one call; the last position."""
    events = [{"type": "Placed", "data": {"n": n}} for n in range(count)]
    body = {"events": events}
    result = await call(session, "POST", f"{server.url}/streams/{name}/events", body, 201)
    position: int = result["position"]
    return position


async def log_positions(session: aiohttp.ClientSession, server: Served) -> list[int]:
    """The positions of every event in the global log, in order."""
    page = await call(session, "GET", f"{server.url}/events?limit=1000")
    return [e["position"] for e in page["events"]]


async def until(check: Callable[[], bool], timeout: float, what: str) -> None:  # noqa: ASYNC109
    """Poll ``check`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout} s: {what}")
        await asyncio.sleep(0.02)


async def node_of(session: aiohttp.ClientSession, server: Served) -> str:
    """The node running the stream, once one holds its lease."""
    node: str | None = None
    deadline = time.monotonic() + 10
    while node is None:
        assert time.monotonic() < deadline, "no node took the stream up"
        node = (await stream(session, server))["stats"]["node"]
        if node is None:
            await asyncio.sleep(0.05)
    return node


def header(request: Received, name: str) -> str:
    return {k.lower(): v for k, v in request.headers.items()}[name]


def positions(request: Received) -> list[int]:
    return [e["position"] for e in request.batch["events"]]


def received(receiver: Receiver) -> set[int]:
    """Every position that reached the receiver, whatever it answered."""
    return {p for r in receiver.requests for p in positions(r)}


def check_at_least_once_in_order(requests: list[Received], log: list[int], secret: str) -> None:
    """Each request is signed with the stream's secret, its ``webhook-id`` is its
    ``batch_id``; a request either brings the next new batch (numbered one more than
    the last new one) or sends an earlier batch again, exactly as first sent; the new
    batches together are the log, each event once, in order; and the batch numbers go
    on in order from any batch sent again."""
    verifier = standardwebhooks.Webhook(secret)
    first: dict[str, Received] = {}
    new: list[Received] = []
    numbers: list[int] = []
    for request in requests:
        verifier.verify(request.body, request.headers)
        batch = request.batch
        webhook_id = header(request, "webhook-id")
        assert webhook_id == batch["batch_id"]
        assert positions(request) == sorted(positions(request)) and positions(request)
        if webhook_id in first:
            # sent again: the same batch number and events as its first sending
            assert batch == first[webhook_id].batch, (batch, first[webhook_id].batch)
        else:
            first[webhook_id] = request
            new.append(request)
        number = batch["batch_number"]
        # the next batch, the same one again, or a resend from an earlier one on
        assert not numbers or number <= numbers[-1] or number == numbers[-1] + 1, numbers
        numbers.append(number)
    assert [r.batch["batch_number"] for r in new] == list(range(1, len(new) + 1))
    # no event came under two webhook-ids, none is missing, and they came in log order
    assert [p for r in new for p in positions(r)] == log


async def until_checkpoint(session: aiohttp.ClientSession, server: Served, position: int) -> None:
    """Until the stream's checkpoint reached ``position`` (a batch's checkpoint is
    written just after its answer)."""
    deadline = time.monotonic() + 10
    while (checkpoint := (await stream(session, server))["stats"]["checkpoint"]) < position:
        assert time.monotonic() < deadline, f"checkpoint {checkpoint}, not {position}"
        await asyncio.sleep(0.05)


@dataclass
class Restart:
    """What ``restart_while_a_batch_is_held`` did."""

    secret: str
    old: Served
    old_node: str
    exit_code: int
    signalled: float
    held: Received
    new: Served


async def restart_while_a_batch_is_held(
    servers: Servers, session: aiohttp.ClientSession, receiver: Receiver, sig: int
) -> Restart:
    """Create the stream and deliver; stop the server with ``sig`` while the receiver
    holds a batch, with events queued behind it; start a new server on the same store
    and append more there. Nothing starts the stream again."""
    old = await servers.start()
    created = await create_stream(session, old, receiver)
    await append(session, old, "order-1", 3)
    await receiver.wait_for(3)
    old_node = await node_of(session, old)
    receiver.answer(Answer(), Answer(delay=HOLD))  # the 2nd batch of the next append waits
    held = len(receiver.requests) + 1
    await append(session, old, "order-2", 3 * BATCH)
    await until(lambda: len(receiver.requests) > held, 10, "the batch to hold")
    await append(session, old, "order-3", 3)  # behind the batch in flight
    signalled = time.monotonic()
    code = await asyncio.to_thread(old.stop, sig, 15)
    new = await servers.start()
    await append(session, new, "order-4", 3)
    return Restart(created["secret"], old, old_node, code, signalled, receiver.requests[held], new)


async def delivered_everything(
    session: aiohttp.ClientSession, receiver: Receiver, restart: Restart
) -> tuple[dict[str, Any], list[int]]:
    """Wait until every event of the log reached the receiver and the new server's
    checkpoint is at the head; the stream as the new server shows it, and the log."""
    log = await log_positions(session, restart.new)
    await until(lambda: received(receiver) >= set(log), 10, "every event after the restart")
    await until_checkpoint(session, restart.new, log[-1])
    return await stream(session, restart.new), log


async def test_a_started_stream_resumes_by_itself_after_a_graceful_restart(
    servers: Servers, session: aiohttp.ClientSession
) -> None:
    """SIGTERM while the receiver holds a batch: the server stops cleanly (exit 0). The
    new server on the same store runs the stream, still ``started``, with no call to
    start it: the events queued before the stop and those appended after it arrive,
    each at least once, in order, signed with the secret given at creation, and a batch
    that came twice came with the same webhook-id and number."""
    async with receiving() as receiver:
        restart = await restart_while_a_batch_is_held(servers, session, receiver, signal.SIGTERM)
        assert restart.exit_code == 0, restart.old.output
        info, log = await delivered_everything(session, receiver, restart)
        requests = list(receiver.requests)

    assert info["status"] == "started" and info["reason"] is None, info
    assert info["stats"]["node"] not in (None, restart.old_node), info["stats"]
    assert len(log) == 3 + 3 * BATCH + 3 + 3
    check_at_least_once_in_order(requests, log, restart.secret)


async def test_a_started_stream_is_taken_over_after_sigkill_once_the_lease_runs_out(
    servers: Servers, session: aiohttp.ClientSession
) -> None:
    """SIGKILL while the receiver holds a batch, so its answer reaches no one. The new
    server on the same store takes the stream up once the dead server's lease has run
    out, without any call to start it, and sends the held batch again first, with the
    same webhook-id, number and events; then the rest: every event at least once, in
    order."""
    async with receiving() as receiver:
        restart = await restart_while_a_batch_is_held(servers, session, receiver, signal.SIGKILL)
        assert restart.exit_code == -signal.SIGKILL
        info, log = await delivered_everything(session, receiver, restart)
        requests = list(receiver.requests)

    assert info["status"] == "started" and info["reason"] is None, info
    assert info["stats"]["node"] not in (None, restart.old_node), info["stats"]
    held_id = header(restart.held, "webhook-id")
    later = requests[requests.index(restart.held) + 1 :]
    again = [r for r in later if header(r, "webhook-id") == held_id]
    assert again, "the batch whose answer was lost never came again"
    assert again[0].batch == restart.held.batch
    assert again[0] is later[0]  # before any other batch
    # a lease, a round of the new server's (a third of one), and slack for its start-up
    # and a busy machine
    taken_over = again[0].at - restart.signalled
    assert taken_over < LEASE_TTL + LEASE_TTL / 3 + 3.0, taken_over
    check_at_least_once_in_order(requests, log, restart.secret)


async def test_a_stopped_stream_stays_stopped_across_a_restart(
    servers: Servers, session: aiohttp.ClientSession
) -> None:
    """A stream stopped over HTTP is still ``stopped`` on the server started after a
    restart, and nothing reaches its receiver while events are appended there; started
    over HTTP, it goes on from its checkpoint with what was appended meanwhile."""
    async with receiving() as receiver:
        old = await servers.start()
        created = await create_stream(session, old, receiver)
        await append(session, old, "order-1", 3)
        await receiver.wait_for(3)
        await until_checkpoint(session, old, 3)
        stopped = await call(session, "POST", f"{old.url}/eventstreams/orders/stop")
        assert stopped["status"] == "stopped"
        assert await asyncio.to_thread(old.stop, signal.SIGTERM, 15) == 0, old.output

        new = await servers.start()
        sent = len(receiver.requests)
        for name in ("order-2", "order-3", "order-4"):
            await append(session, new, name, 2)
            await asyncio.sleep(0.35)
        info = await stream(session, new)
        after_restart = receiver.requests[sent:]

        started = await call(session, "POST", f"{new.url}/eventstreams/orders/start")
        log = await log_positions(session, new)
        await until(lambda: received(receiver) >= set(log), 10, "the events after the start")
        requests = list(receiver.requests)

    assert after_restart == []
    assert info["status"] == "stopped", info
    assert info["stats"]["checkpoint"] == 3
    assert info["stats"]["lag"] == 6
    assert started["status"] == "started"
    assert sorted({p for r in requests[sent:] for p in positions(r)}) == log[3:]
    check_at_least_once_in_order(requests, log, created["secret"])
