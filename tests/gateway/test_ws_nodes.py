"""Many nodes: three ``tidings serve`` on one PostgreSQL and one notifier (NATS, then
Redis), writers and WebSocket followers on every node, one node SIGKILLed mid-run.
Every follower gets every event of its category once, in order, from several nodes."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import time
import uuid

import pytest

from tests.gateway.harness import Follower, Server, Tally, log_positions, write_all

log = logging.getLogger(__name__)
pytestmark = [pytest.mark.slow, pytest.mark.postgres]

PER_WRITER = 1_500


@pytest.mark.parametrize("notifier", ["nats", pytest.param("redis", marks=pytest.mark.redis)])
@pytest.mark.timeout(240)
async def test_followers_on_any_node_get_every_event_once_while_a_node_is_killed(
    pg_url: str, notifier: str, request: pytest.FixtureRequest
) -> None:
    notify = request.getfixturevalue(f"{notifier}_url")
    seed = int(os.environ.get("TIDINGS_TEST_SEED", time.time_ns() % 1_000_000))
    log.warning("seed %d (TIDINGS_TEST_SEED=%d repeats this run)", seed, seed)
    rng = random.Random(seed)
    settings = {"TIDINGS_WS__BATCH_EVENTS": "40"}
    nodes = [Server(pg_url, settings, "--notify", notify)]  # it migrates the store alone
    nodes += await asyncio.gather(
        *(asyncio.to_thread(Server, pg_url, settings, "--notify", notify) for _ in "ab")
    )
    tag = uuid.uuid4().hex[:6]
    followers = [
        Follower(nodes, f"a{tag}", random.Random(rng.random()), cut_chance=1.0) for _ in range(6)
    ]
    target: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    tally = Tally()
    total = 3 * PER_WRITER
    try:
        writers = [
            asyncio.create_task(
                write_all(nodes[i:] + nodes[:i], tag, random.Random(rng.random()),
                          count=PER_WRITER, first=i * PER_WRITER, tally=tally)
            )
            for i in range(3)
        ]  # fmt: skip
        follows = [asyncio.create_task(f.run(target)) for f in followers]
        # The kill comes mid-stream (a random point between 20 % and 50 % of the
        # writing), and the node stays down while another 20 % goes through the others.
        await tally.reached(round(total * (0.2 + 0.3 * rng.random())))
        victim = rng.choice(nodes)
        handled = [f.handled for f in followers]
        log.info(
            "killing %d: %d events written, followers at %s", victim.port, tally.count, handled
        )
        await asyncio.to_thread(victim.stop, signal.SIGKILL)
        await tally.reached(tally.count + round(total * 0.2))
        log.info("restarting %d: %d events written", victim.port, tally.count)
        await asyncio.to_thread(victim.start)
        log.info("restarted: %d events written", tally.count)
        await asyncio.wait_for(asyncio.gather(*writers), 150)
        want = await log_positions(nodes[0], f"a{tag}")
        target.set_result(len(want))
        await asyncio.wait_for(asyncio.gather(*follows), 60)
    finally:
        await asyncio.gather(*(asyncio.to_thread(n.stop, signal.SIGTERM) for n in nodes))
    assert len(want) > PER_WRITER  # about half of the 4,500 events
    for follower in followers:
        assert follower.positions == want, f"seed {seed}"
        assert len(follower.nodes) >= 2, f"seed {seed}: a follower stayed on one node"
