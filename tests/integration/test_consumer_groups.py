"""Consumer groups on SQLite and PostgreSQL: the streams split between live members,
each event handled once while all are healthy, per-stream order kept, a member's share
taken over when it leaves or is killed."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

import tidings
from tidings.subscriptions import Subscription, reset_subscription, subscribe, subscriptions

pytestmark = pytest.mark.durable

STREAMS = 20
SCRIPT = Path(__file__).with_name("group_member.py")


class Record:
    """What every member of a group handled: (member, position, stream), in time order."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, int, str]] = []
        self.active: set[str] = set()
        self.overlaps: list[str] = []

    def handler(self, member: str) -> Callable[[list[tidings.RecordedEvent]], object]:
        async def handle(events: list[tidings.RecordedEvent]) -> None:
            streams = {e.stream for e in events}
            if streams & self.active:  # another member works on the same stream right now
                self.overlaps.extend(streams & self.active)
            self.active |= streams
            try:
                self.lines.extend((member, e.position, e.stream) for e in events)
                await asyncio.sleep(0.002)
            finally:
                self.active -= streams

        return handle

    def positions(self) -> Counter[int]:
        return Counter(p for _, p, _ in self.lines)

    def by_member(self) -> Counter[str]:
        return Counter(m for m, _, _ in self.lines)

    async def until_all(self, head: int) -> None:
        await eventually(lambda: set(self.positions()) == set(range(1, head + 1)), 20)


async def eventually(check: Callable[[], bool], timeout: float = 10) -> None:  # noqa: ASYNC109
    """Poll ``check`` (it looks at other members, tasks or processes) until it holds."""
    async with asyncio.timeout(timeout):
        while not check():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


def assert_per_stream_order(lines: Sequence[tuple[str, int, str]]) -> None:
    streams: dict[str, list[int]] = defaultdict(list)
    for _, position, stream in lines:
        streams[stream].append(position)
    for stream, positions in streams.items():
        assert positions == sorted(positions), stream


async def append_live(store: tidings.EventStore, rounds: int, start: int = 0) -> None:
    for r in range(start, start + rounds):
        await asyncio.gather(
            *(
                store.append(f"order-{s}", [tidings.NewEvent("Placed", {"r": r})])
                for s in range(STREAMS)
            )
        )
        await asyncio.sleep(0.03)


def member(store: tidings.EventStore, record: Record, name: str) -> Subscription:
    return subscribe(
        store,
        "crew",
        record.handler(name),
        member=name,
        partitions=16,
        lease_ttl=1.0,
        batch_size=20,
    )


async def until_owning(subs: Sequence[Subscription]) -> None:
    """Wait until the members hold every partition between them, each some."""
    await eventually(
        lambda: all(s.owned for s in subs) and sum(len(s.owned) for s in subs) == subs[0].partitions
    )


async def test_three_members_share_the_streams_once_in_order_and_take_over_a_leaver(
    store_url: str,
) -> None:
    store = await tidings.connect(store_url)
    record = Record()
    subs = [member(store, record, name) for name in "abc"]
    async with store:
        await append_live(store, 5)  # some history to catch up on
        for sub in subs:
            await sub.start_background()
        await until_owning(subs)
        await append_live(store, 15, start=5)
        await record.until_all(await store.head())
        assert all(record.by_member()[name] > 0 for name in "abc"), record.by_member()
        assert max(record.positions().values()) == 1  # no event handled twice
        assert not record.overlaps
        assert_per_stream_order(record.lines)

        await subs[0].stop()  # a leaves cleanly: b and c take its partitions over
        await until_owning(subs[1:])
        before = len(record.lines)
        await append_live(store, 10, start=20)
        await record.until_all(await store.head())
        after = record.lines[before:]
        assert {m for m, _, _ in after} <= {"b", "c"}
        assert max(record.positions().values()) == 1
        assert_per_stream_order(record.lines)

        [info] = await subscriptions(store)
        assert (info.partitions, info.members) == (16, 2)
        async with asyncio.timeout(5):  # quiet partitions catch up once the members idle
            while info.checkpoint < await store.head():
                await asyncio.sleep(0.1)
                [info] = await subscriptions(store)
        for sub in subs[1:]:
            await sub.stop()
        [info] = await subscriptions(store)
        assert info.members == 0


async def test_a_member_joining_midway_gets_partitions_without_duplicates(
    store_url: str,
) -> None:
    store = await tidings.connect(store_url)
    record = Record()
    subs = [member(store, record, name) for name in "abc"]
    async with store:
        for sub in subs:
            await sub.start_background()
        await until_owning(subs)
        writer = asyncio.create_task(append_live(store, 40))
        await asyncio.sleep(0.4)
        late = member(store, record, "d")
        await late.start_background()
        await until_owning([*subs, late])
        await writer
        await record.until_all(await store.head())
        assert record.by_member()["d"] > 0
        assert max(record.positions().values()) == 1
        assert not record.overlaps
        assert_per_stream_order(record.lines)
        assert max(len(s.owned) for s in [*subs, late]) == 4  # 16 partitions / 4 members
        for sub in [*subs, late]:
            await sub.stop()


async def test_reset_moves_every_partition_of_a_group(store_url: str) -> None:
    store = await tidings.connect(store_url)
    record = Record()
    async with store:
        await append_live(store, 2)
        sub = member(store, record, "a")
        async with sub:
            await record.until_all(await store.head())
        await reset_subscription(store, "crew", 0)
        [info] = await subscriptions(store)
        assert info.checkpoint == 0
        head = await store.head()
        async with member(store, record, "a"):
            await eventually(lambda: len(record.lines) >= 2 * head)
        assert_per_stream_order(record.lines[: len(record.lines) // 2])


async def test_another_partition_count_is_refused(store_url: str) -> None:
    store = await tidings.connect(store_url)
    record = Record()
    async with store, member(store, record, "a") as first:
        await eventually(lambda: bool(first.owned))
        other = subscribe(store, "crew", record.handler("x"), member="x", partitions=8)
        with pytest.raises(tidings.InvalidInput, match="16 partitions, not 8"):
            await other.run()


async def test_a_single_runner_on_a_group_name_is_refused(store_url: str) -> None:
    store = await tidings.connect(store_url)
    record = Record()
    async with store, member(store, record, "a") as first:
        await eventually(lambda: bool(first.owned))
        single = subscribe(store, "crew", record.handler("solo"))
        with pytest.raises(tidings.InvalidInput, match="consumer group"):
            await single.run()
        assert record.by_member()["solo"] == 0


async def test_groups_need_a_database_store() -> None:
    async with await tidings.connect("memory://") as store:
        with pytest.raises(tidings.InvalidInput, match="SQLite or PostgreSQL"):
            subscribe(store, "crew", Record().handler("a"), member="a")
        with pytest.raises(tidings.InvalidInput, match="partitions"):
            subscribe(store, "crew", Record().handler("a"), partitions=0)


# -- processes and SIGKILL --------------------------------------------------------------

TOTAL = 1200


async def start_member(url: str, name: str, out: Path) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        url,
        name,
        str(out),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"ready\n"
    return proc


def read_lines(out: Path) -> list[tuple[str, int, str]]:
    return [(name, position, stream) for name, position, stream, _ in read_timed(out)]


def read_timed(out: Path) -> list[tuple[str, int, str, float]]:
    if not out.exists():
        return []
    found = []
    for line in out.read_text().splitlines():
        name, position, stream, at = line.split()
        found.append((name, int(position), stream, float(at)))
    return found


@pytest.mark.slow
async def test_a_group_of_three_processes_survives_a_killed_member(
    store_url: str, tmp_path: Path
) -> None:
    async with await tidings.connect(store_url) as store:
        for n in range(TOTAL // 24):  # 24 streams of 50 events, interleaved in the log
            async with store.transaction() as tx:
                for s in range(24):
                    tx.append(f"order-{s}", [tidings.NewEvent("Placed", {"n": n})])
    out = tmp_path / "handled.txt"
    victim = "b"
    started = await asyncio.gather(*(start_member(store_url, name, out) for name in "abc"))
    procs = dict(zip("abc", started, strict=True))
    try:
        # Kill the victim in the middle of its share.
        await eventually(lambda: sum(1 for m, _, _ in read_lines(out) if m == victim) >= 30)
        procs[victim].send_signal(signal.SIGKILL)
        await procs[victim].wait()
        killed_time = time.time()
        killed_at = len(read_lines(out))
        assert killed_at < TOTAL, "the group finished before the kill: the test proved nothing"
        await eventually(lambda: {p for _, p, _ in read_lines(out)} == set(range(1, TOTAL + 1)), 20)
    finally:
        for name, proc in procs.items():
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM if name != "b" else signal.SIGKILL)
        for name, proc in procs.items():
            _, stderr = await asyncio.wait_for(proc.communicate(), 20)
            if name != "b":
                assert proc.returncode == 0, stderr.decode()

    lines = read_lines(out)
    assert {p for _, p, _ in lines} == set(range(1, TOTAL + 1))  # nothing lost
    survivors = [line for line in lines if line[0] != victim]
    assert max(Counter(p for _, p, _ in survivors).values()) == 1  # healthy: never twice
    assert_per_stream_order(survivors)
    assert_per_stream_order([line for line in lines if line[0] == victim])
    done_by_victim = {p for name, p, _ in lines if name == victim}
    # Across the takeover a stream only steps back to redo the killed member's batch.
    streams: dict[str, list[int]] = defaultdict(list)
    for _, position, stream in lines:
        if streams[stream] and position <= max(streams[stream]):
            assert position in done_by_victim, (stream, position)
        streams[stream].append(position)
    assert {name for name, _, _ in lines[killed_at:]} <= {"a", "c"}
    # The victim's streams were taken over within a few seconds (lease_ttl is 1 s).
    taken_over = {}
    for _, _, stream, at in read_timed(out)[killed_at:]:
        taken_over.setdefault(stream, at)
    victims_streams = {stream for name, _, stream in lines[:killed_at] if name == victim}
    late = [s for s in victims_streams if s in taken_over and taken_over[s] > killed_time + 4]
    assert not late, late
