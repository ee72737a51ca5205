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

from tests.gateway.harness import Follower, Server, log_positions, write_all

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
    nodes = [Server(pg_url, {"TIDINGS_WS__BATCH_EVENTS": "40"}, "--notify", notify)]
    nodes += [Server(pg_url, {"TIDINGS_WS__BATCH_EVENTS": "40"}, "--notify", notify) for _ in "ab"]
    tag = uuid.uuid4().hex[:6]
    followers = [
        Follower(nodes, f"a{tag}", random.Random(rng.random()), cut_chance=1.0) for _ in range(6)
    ]
    target: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    try:
        writers = [
            asyncio.create_task(
                write_all(nodes[i:] + nodes[:i], tag, random.Random(rng.random()),
                          count=PER_WRITER, first=i * PER_WRITER)
            )
            for i in range(3)
        ]  # fmt: skip
        follows = [asyncio.create_task(f.run(target)) for f in followers]
        await asyncio.sleep(1.0 + rng.random())
        victim = rng.choice(nodes)
        await asyncio.to_thread(victim.stop, signal.SIGKILL)
        await asyncio.sleep(1.0 + rng.random())
        await asyncio.to_thread(victim.start)
        await asyncio.wait_for(asyncio.gather(*writers), 150)
        want = await log_positions(nodes[0], f"a{tag}")
        target.set_result(len(want))
        await asyncio.wait_for(asyncio.gather(*follows), 60)
    finally:
        for node in nodes:
            await asyncio.to_thread(node.stop, signal.SIGTERM)
    assert len(want) > PER_WRITER  # about half of the 4,500 events
    for follower in followers:
        assert follower.positions == want, f"seed {seed}"
        assert len(follower.nodes) >= 2, f"seed {seed}: a follower stayed on one node"
