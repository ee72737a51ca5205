"""A Hypothesis state machine over a real SQLite satellite and a real server: local
appends, another client's appends, the network going and coming back, syncs, and
crashes at named points (before a push, after the server decided but before its reply
is recorded, in the middle of a pull); the invariants I1-I8 of docs/satellites.md are
checked after every step."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import uuid
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import tidings
from tests.integration.tcp_proxy import TcpProxy
from tests.served import served
from tidings import ANY, NO_STREAM, NewEvent
from tidings.errors import Offline, StoreUnavailable, WrongExpectedVersion
from tidings.satellite import PENDING, Satellite

T = TypeVar("T")
STREAMS = 3


class Crash(Exception):
    """Stands for the satellite process dying at a named point."""


class SatelliteMachine(RuleBasedStateMachine):
    """One satellite, one other writer, a network that fails, and crashes."""

    server_port: ClassVar[int] = 0

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.tag = "m" + uuid.uuid4().hex[:10]
        self.dir = Path(tempfile.mkdtemp())
        self.net = True
        self.committed: list[uuid.UUID] = []  # local events whose append returned
        self.seen: set[uuid.UUID] = set()
        self.run(self._start())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(asyncio.wait_for(coro, 60))

    async def _start(self) -> None:
        self.proxy = await TcpProxy("127.0.0.1", self.server_port).start()
        self.direct = await tidings.connect(f"http://127.0.0.1:{self.server_port}")
        self.sat = await self._open()

    async def _open(self) -> Satellite:
        sat = Satellite(
            f"sqlite:///{self.dir / 'sat.db'}",
            f"http://127.0.0.1:{self.proxy.port}",
            [self.tag],
            satellite_id=self.tag,
            timeout=2.0,
        )
        await sat.open()
        sat._sync.pull_page = 3  # pulls of several pages: room to crash between them
        return sat

    def teardown(self) -> None:
        async def stop() -> None:
            await self.sat.close()
            await self.direct.close()
            await self.proxy.close()

        try:
            self.run(stop())
        finally:
            self.loop.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- steps ------------------------------------------------------------------------

    @rule(stream=st.integers(0, STREAMS - 1), exact=st.booleans(), n=st.integers(1, 3))
    def local_append(self, stream: int, exact: bool, n: int) -> None:
        async def go() -> None:
            name = f"{self.tag}-{stream}"
            expected: Any = ANY
            if exact:
                version = await self.sat.stream_version(name)
                expected = NO_STREAM if version is None else version
            events = [NewEvent("Did", {"k": k}, id=uuid.uuid4()) for k in range(n)]
            try:
                await self.sat.append(name, events, expected)
            except (WrongExpectedVersion, Offline):
                return  # refused at once (online conflict): nothing was committed locally
            self.committed += [e.id for e in events if e.id is not None]

        self.run(go())

    @rule(stream=st.integers(0, STREAMS - 1))
    def server_append(self, stream: int) -> None:
        self.run(self.direct.append(f"{self.tag}-{stream}", [NewEvent("Other", {})]))

    @rule()
    def go_offline(self) -> None:
        self.net = False
        self.proxy.refuse(True)
        self.proxy.cut()

    @rule()
    def go_online(self) -> None:
        self.net = True
        self.proxy.refuse(False)

    @rule()
    def sync(self) -> None:
        async def go() -> None:
            if not self.net:
                with pytest.raises(StoreUnavailable):
                    await self.sat.sync(timeout=30)
                return
            status = await self.sat.sync(timeout=30)
            assert status.pending == 0, status  # I8: the queue drains once online
            await self._converged()

        self.run(go())

    @rule(point=st.sampled_from(["push", "pushed", "pulled", "anywhere"]))
    def crash(self, point: str) -> None:
        async def go() -> None:
            if point != "anywhere":  # a crash in the sync that follows a reconnect
                self.go_online()

                def fault(at: str) -> None:
                    if at == point:
                        raise Crash(at)

                self.sat._sync.fault = fault
                with contextlib.suppress(Crash):
                    await self.sat.sync(timeout=30)
            await self.sat.close()  # close writes nothing: the file is as a kill leaves it
            self.sat = await self._open()

        self.run(go())

    # -- invariants -----------------------------------------------------------------

    async def _converged(self) -> None:
        """I5: after a sync with nothing new, the confirmed events are the server's."""
        server = [e async for e in self.direct.read_all(filter=tidings.Filter([self.tag]))]
        local = [e async for e in self.sat.read_all()]
        assert [(e.position, e.id, e.version, e.data, e.time) for e in local] == [
            (e.position, e.id, e.version, e.data, e.time) for e in server
        ]

    @invariant()
    def invariants_hold(self) -> None:
        self.run(self._check())

    async def _check(self) -> None:
        # The sync loop runs while this reads: each read comes after the ones it is
        # checked against (what a later read misses, an earlier one saw).
        cursor = (await self.sat.status()).position
        local = [(e.position, e.id) async for e in self.sat.read_all()]
        visible: set[uuid.UUID] = set()
        for stream in range(STREAMS):
            shown = [e async for e in self.sat.read_stream(f"{self.tag}-{stream}")]
            assert [e.version for e in shown] == list(range(len(shown)))  # stacked, no gap
            assert len({e.id for e in shown}) == len(shown)  # nothing shown twice
            for event in shown:
                assert (PENDING in event.metadata) == (event.position == 0)
                visible.add(event.id)
        conflicts = await self.sat.conflicts()
        conflicted = {e.id for c in conflicts for a in c.appends for e in a.events}
        verdicts = [e async for e in self.direct.read_stream(f"$sync-{self.tag}")]
        server = [e async for e in self.direct.read_all(filter=tidings.Filter([self.tag]))]
        server_ids = [e.id for e in server]
        # I2: each seq decided once, in order; each local event at most once on the server
        assert [v.data["seq"] for v in verdicts] == list(range(1, len(verdicts) + 1))
        assert len(set(server_ids)) == len(server_ids)
        # I1: every local commit is pending, accepted or a recorded conflict
        lost = set(self.committed) - set(server_ids) - visible - conflicted
        assert not lost, lost
        # I3: accepted ones keep their local order
        landed = set(server_ids)
        mine = set(self.committed)
        assert [i for i in server_ids if i in mine] == [i for i in self.committed if i in landed]
        # I4: a conflict is never also applied, and is listed once
        assert not conflicted & landed
        assert len({c.seq for c in conflicts}) == len(conflicts)
        # I6: the replica is the server's log from its start, nothing skipped or repeated,
        # and holds everything up to the cursor it had
        assert local == [(e.position, e.id) for e in server[: len(local)]]
        assert len(local) >= sum(1 for e in server if e.position <= cursor)
        # I7: what was visible stays visible (pending, then confirmed) unless refused
        assert not (self.seen - visible - conflicted)
        self.seen = visible


@pytest.fixture(scope="module")
def machine_server() -> Iterator[int]:
    """One server for every example (each uses its own category and satellite id)."""
    directory = Path(tempfile.mkdtemp())
    try:
        with served(f"sqlite:///{directory / 'server.db'}") as server:
            port = urlsplit(server.url).port
            assert port is not None
            yield port
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.slow
def test_satellite_invariants_hold_through_faults(machine_server: int) -> None:
    SatelliteMachine.server_port = machine_server
    run = SatelliteMachine.TestCase
    run.settings = settings(
        max_examples=15,
        stateful_step_count=20,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    run().runTest()
