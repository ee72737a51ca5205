"""Crash safety of the durable stores: SIGKILL a writer process mid-write and audit the log.

A child process (``crash_writer.py``) appends from 32 concurrent tasks: single-event
and multi-event appends to streams of its own at exact expected versions, and
transactions over streams shared by every task and process. Before handing an
operation to the store it prints the operation (its streams and event ids); after
the store acknowledged it, the result. The parent kills it with SIGKILL while it
writes, reopens the store and checks, event by event:

* every acknowledged event is stored, at the acknowledged stream, versions and position;
* every operation, acknowledged or in flight at the kill, is stored whole or not at
  all (a transaction's events in both its streams, with one audit record);
* no event is stored that nobody appended;
* positions are exactly 1..head, each stream's versions 0..n-1, and time never
  decreases along positions;
* what a reader saw while the writer ran is still there, at the same positions,
  and the reader never saw a position skipped;
* the store keeps working: the in-flight operations can be retried with the same
  event ids (replaying what landed, landing what did not), and new appends and
  transactions land right after the head and read back.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import signal
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import asyncpg
import pytest

import tidings

pytestmark = [pytest.mark.durable, pytest.mark.slow]

WRITER = Path(__file__).with_name("crash_writer.py")
MIN_ACKS_BEFORE_KILL = 300  # let the writer get going, so the kill lands mid-write
KILL_AFTER_S = (0.5, 1.5)  # seconds after the writer is ready
START_TIMEOUT_S = 20.0
MAX_SHOWN = 25  # problems listed in a failure message
AUDIT_TX_SAMPLE = 400  # acknowledged transactions whose audit is checked, per verification
AUDIT_PLAIN_SAMPLE = 100  # plain (non-transaction) events checked to have no audit record
TWO_WRITERS_S = 3.0  # how long two processes write one SQLite file together
KILL_ROUNDS = 2  # kills of one store in a row, each retried and appended to after

Ids = list[uuid.UUID]


# -- what the writers said ------------------------------------------------------------


@dataclass
class Op:
    """One append or transaction: announced before it ran, acknowledged or not."""

    name: str
    kind: str  # single, multi, tx
    appends: list[tuple[str, Ids]]
    source: str  # the writer's tag, or "parent"
    results: list[tuple[str, int, int, int]] | None = None  # (stream, first, last, position)
    audited: bool = False  # its audit record was checked by an earlier verification

    @property
    def acked(self) -> bool:
        return self.results is not None

    @property
    def ids(self) -> Ids:
        return [i for _, ids in self.appends for i in ids]

    def type_of(self, append_index: int) -> str:
        if self.kind == "tx":
            return ("TxA", "TxB")[append_index]
        return self.kind.capitalize()

    def describe(self) -> str:
        state = "acknowledged" if self.acked else "in flight"
        parts = ", ".join(f"{s}: {len(ids)} event(s)" for s, ids in self.appends)
        return f"{self.kind} {self.name} ({state}; {parts})"


@dataclass
class Ledger:
    """Every operation announced or acknowledged, by every writer (and the parent)."""

    ops: dict[str, Op] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def feed(self, source: str, raw: bytes, child: Child) -> None:
        if not raw.endswith(b"\n"):
            self.errors.append(f"{source}: truncated protocol line {raw[:200]!r}")
            return
        try:
            msg = json.loads(raw)
        except ValueError:
            self.errors.append(f"{source}: unparsable protocol line {raw[:200]!r}")
            return
        kind = msg.get("t")
        if kind == "begin":
            if msg["op"] in self.ops:
                self.errors.append(f"{source}: operation {msg['op']} announced twice")
            appends = [(s, [uuid.UUID(i) for i in ids]) for s, ids in msg["appends"]]
            self.ops[msg["op"]] = Op(msg["op"], msg["kind"], appends, source)
        elif kind == "ack":
            op = self.ops.get(msg["op"])
            if op is None:
                self.errors.append(f"{source}: acknowledgement of unannounced {msg['op']}")
                return
            op.results = [tuple(r) for r in msg["results"]]  # type: ignore[misc]
            child.acks += 1
        elif kind == "error":
            self.errors.append(f"{source}: operation {msg['op']} raised:\n{msg['error']}")
        elif kind == "ready":
            child.ready = msg
        elif kind == "done":
            child.done = msg
        else:
            self.errors.append(f"{source}: unknown protocol line {raw[:200]!r}")

    def of(self, source: str) -> list[Op]:
        return [op for op in self.ops.values() if op.source == source]

    def add_parent_op(self, op: Op) -> None:
        assert op.name not in self.ops
        self.ops[op.name] = op


# -- the writer process ---------------------------------------------------------------


class Child:
    """A ``crash_writer.py`` process whose stdout feeds the ledger."""

    def __init__(self, tag: str, ledger: Ledger, stderr_path: Path) -> None:
        self.tag = tag
        self.ledger = ledger
        self.stderr_path = stderr_path
        self.proc: asyncio.subprocess.Process | None = None
        self.reader: asyncio.Task[None] | None = None
        self.acks = 0
        self.ready: dict[str, Any] | None = None
        self.done: dict[str, Any] | None = None

    @classmethod
    async def start(
        cls,
        url: str,
        tag: str,
        ledger: Ledger,
        tmp_path: Path,
        *,
        seconds: float = 0,
        seed: int = 0,
        wait_go: bool = False,
    ) -> Child:
        child = cls(tag, ledger, tmp_path / f"writer-{tag}.stderr")
        with child.stderr_path.open("wb") as stderr:
            child.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(WRITER),
                url,
                tag,
                "--tasks",
                "32",
                "--seconds",
                str(seconds),
                "--seed",
                str(seed),
                *(["--wait-go"] if wait_go else []),
                stdin=asyncio.subprocess.PIPE if wait_go else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
            )
        child.reader = asyncio.create_task(child._read())
        return child

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while True:
            raw = await self.proc.stdout.readline()
            if not raw:
                return
            self.ledger.feed(self.tag, raw, self)

    def go(self) -> None:
        """Let a writer started with ``wait_go`` start writing."""
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")

    def stderr(self) -> str:
        text = self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""
        return text[-4000:] or "(empty)"

    def explain(self, what: str) -> str:
        assert self.proc is not None
        errors = "\n".join(self.ledger.errors[:5]) or "(none)"
        return (
            f"writer {self.tag}: {what} (exit code {self.proc.returncode}, {self.acks} acks)\n"
            f"protocol errors:\n{errors}\nstderr:\n{self.stderr()}"
        )

    async def wait_for(self, condition: Callable[[], bool], within_s: float, what: str) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + within_s
        while not condition():
            if self.proc.returncode is not None or self.ledger.errors:
                pytest.fail(self.explain(f"stopped or failed while waiting for {what}"))
            if time.monotonic() > deadline:
                pytest.fail(self.explain(f"no {what} within {within_s:.0f}s"))
            await asyncio.sleep(0.01)

    async def kill(self) -> None:
        """SIGKILL the writer, then read what it wrote before it died."""
        assert self.proc is not None and self.reader is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()
        await asyncio.wait_for(self.reader, 10)

    async def finish(self, within_s: float) -> None:
        """Wait for a bounded run to end by itself."""
        assert self.proc is not None and self.reader is not None
        try:
            await asyncio.wait_for(self.proc.wait(), within_s)
        except TimeoutError:
            await self.kill()
            pytest.fail(self.explain(f"did not finish within {within_s:.0f}s"))
        await asyncio.wait_for(self.reader, 10)

    async def ensure_dead(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()
        if self.reader is not None and not self.reader.done():
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.reader


# -- a reader running while the writer writes -------------------------------------------


class Tailer:
    """Follows ``read_all`` while writers write; the log must only ever grow by one."""

    def __init__(self, store: tidings.EventStore) -> None:
        self.store = store
        self.seen: dict[int, uuid.UUID] = {}
        self.problems: list[str] = []
        self.last = 0
        self._stop = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while not self._stop.is_set():
            async for event in self.store.read_all(from_position=self.last):
                if event.position != self.last + 1:
                    self.problems.append(
                        f"a reader following the log saw position {event.position} right after "
                        f"{self.last}: it skipped an event that was not yet committed"
                    )
                    return
                self.seen[event.position] = event.id
                self.last = event.position
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        self._stop.set()
        await self.task
        await self.store.close()


# -- helpers --------------------------------------------------------------------------


def is_postgres(url: str) -> bool:
    return urlsplit(url).scheme in ("postgresql", "postgres")


async def wait_for_dead_sessions(url: str, within_s: float = 15) -> None:
    """On PostgreSQL, wait until the killed writer's sessions are gone.

    A batch whose query reached the server may still commit after the client died;
    checking the log before those sessions end would race with it.
    """
    if not is_postgres(url):
        return
    parts = urlsplit(url)
    schema = dict(parse_qsl(parts.query))["schema"]
    conn = await asyncpg.connect(parts._replace(query="").geturl())
    try:
        deadline = time.monotonic() + within_s
        while True:
            rows = await conn.fetch(
                "SELECT pid, state, left(query, 120) AS query FROM pg_stat_activity"
                " WHERE pid <> pg_backend_pid() AND strpos(query, $1) > 0",
                schema,
            )
            if not rows:
                return
            if time.monotonic() > deadline:
                pytest.fail(f"sessions of the killed writer still open after {within_s}s: {rows}")
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


def report(title: str, problems: list[str], stats: dict[str, Any]) -> str:
    shown = "\n".join(f"  - {p}" for p in problems[:MAX_SHOWN])
    more = f"\n  ... and {len(problems) - MAX_SHOWN} more" if len(problems) > MAX_SHOWN else ""
    return f"{title}: {len(problems)} problem(s) {stats}\n{shown}{more}"


# -- checking the log -------------------------------------------------------------------


@dataclass
class Verdict:
    events: list[tidings.RecordedEvent]
    landed: set[str]  # names of the operations stored
    stats: dict[str, Any]


async def verify(url: str, ledger: Ledger, seen: dict[int, uuid.UUID] | None = None) -> Verdict:
    """Reopen the store and check the whole log against the ledger; fail with every problem."""
    assert not ledger.errors, "writer errors:\n" + "\n".join(ledger.errors[:5])
    store = await tidings.connect(url)
    try:
        events = [e async for e in store.read_all()]
        head = await store.head()
        streams = {s.name: s.version async for s in store.list_streams()}
        problems: list[str] = []
        check_positions_and_time(events, head, problems)
        check_streams(events, streams, problems)
        landed, landed_in_flight, txs = check_operations(events, ledger, problems)
        await check_audit(store, txs, events, problems)
        if seen:
            by_position = {e.position: e.id for e in events}
            for position, event_id in sorted(seen.items()):
                if by_position.get(position) != event_id:
                    problems.append(
                        f"a reader saw event {event_id} at position {position} before the kill; "
                        f"now that position holds {by_position.get(position)}"
                    )
    finally:
        await store.close()
    in_flight = [op for op in ledger.ops.values() if not op.acked]
    stats = {
        "events": len(events),
        "head": head,
        "operations": len(ledger.ops),
        "acknowledged": len(ledger.ops) - len(in_flight),
        "in_flight": len(in_flight),
        "in_flight_landed": landed_in_flight,
    }
    if problems:
        pytest.fail(report("the store after the crash is wrong", problems, stats))
    return Verdict(events, landed, stats)


def check_positions_and_time(
    events: list[tidings.RecordedEvent], head: int, problems: list[str]
) -> None:
    positions = [e.position for e in events]
    for position, count in Counter(positions).items():
        if count > 1:
            problems.append(f"position {position} is stored {count} times")
    for index, position in enumerate(positions):
        if position != index + 1:
            before = events[index - 1] if index else None
            problems.append(
                f"positions are not 1..head: event #{index + 1} of the log has position "
                f"{position} (the one before: {before.position if before else None})"
            )
            break
    if head != len(events) or (events and events[-1].position != head):
        problems.append(
            f"head() is {head} but the log holds {len(events)} events, the last at position "
            f"{events[-1].position if events else None}"
        )
    for before, after in itertools.pairwise(events):
        if after.time < before.time:
            problems.append(
                f"time goes back along positions: position {before.position} at {before.time}, "
                f"position {after.position} at {after.time}"
            )


def check_streams(
    events: list[tidings.RecordedEvent], streams: dict[str, int], problems: list[str]
) -> None:
    versions: dict[str, list[tidings.RecordedEvent]] = defaultdict(list)
    for e in events:
        versions[e.stream].append(e)
    for stream, stored in versions.items():
        got = [e.version for e in stored]
        if got != list(range(len(got))):
            bad = next(i for i, v in enumerate(got) if v != i)
            problems.append(
                f"stream {stream}: versions along positions are not 0..{len(got) - 1}: "
                f"version {got[bad]} at position {stored[bad].position} where {bad} was due"
            )
        if streams.get(stream) != len(got) - 1:
            problems.append(
                f"stream {stream}: list_streams says version {streams.get(stream)}, "
                f"its last stored event has version {len(got) - 1}"
            )
    for stream in streams.keys() - versions.keys():
        problems.append(
            f"list_streams lists {stream} (version {streams[stream]}) but it holds no event"
        )


def check_operations(
    events: list[tidings.RecordedEvent], ledger: Ledger, problems: list[str]
) -> tuple[set[str], int, list[tuple[Op, list[tidings.RecordedEvent]]]]:
    by_id: dict[uuid.UUID, tidings.RecordedEvent] = {}
    for e in events:
        if e.id in by_id:
            problems.append(
                f"event id {e.id} stored twice: positions {by_id[e.id].position}, {e.position}"
            )
        by_id[e.id] = e
    landed: set[str] = set()
    landed_in_flight = 0
    txs: list[tuple[Op, list[tidings.RecordedEvent]]] = []
    known: set[uuid.UUID] = set()
    for op in ledger.ops.values():
        known.update(op.ids)
        present = [i for i in op.ids if i in by_id]
        missing = [i for i in op.ids if i not in by_id]
        if op.acked and missing:
            where = {i: s for s, ids in op.appends for i in ids}
            problems.append(
                f"acknowledged {op.describe()} lost {len(missing)} of its {len(op.ids)} events: "
                + ", ".join(f"{i} in {where[i]}" for i in missing[:4])
                + f"; acknowledged as {op.results}"
            )
            continue
        if present and missing:
            problems.append(
                f"{op.describe()} is partly stored (not atomic): present "
                + ", ".join(
                    f"{i} at position {by_id[i].position} in {by_id[i].stream}" for i in present[:4]
                )
                + "; missing "
                + ", ".join(map(str, missing[:4]))
            )
            continue
        if not present:
            continue
        landed.add(op.name)
        landed_in_flight += not op.acked
        stored_all: list[tidings.RecordedEvent] = []
        k = 0
        for index, (stream, ids) in enumerate(op.appends):
            stored = [by_id[i] for i in ids]
            stored_all.extend(stored)
            for e in stored:
                if (
                    e.stream != stream
                    or e.type != op.type_of(index)
                    or e.data != {"op": op.name, "k": k}
                ):
                    problems.append(
                        f"{op.describe()}: event {e.id} is stored as {e.type} {e.data!r} "
                        f"in {e.stream}, appended as {op.type_of(index)} "
                        f"{{'op': {op.name!r}, 'k': {k}}} to {stream}"
                    )
                k += 1
            versions = [e.version for e in stored]
            if versions != list(range(versions[0], versions[0] + len(versions))):
                problems.append(f"{op.describe()}: its events in {stream} have versions {versions}")
            positions = [e.position for e in stored]
            if positions != sorted(positions):
                problems.append(
                    f"{op.describe()}: its events in {stream} have positions {positions}"
                )
            if op.results is not None:
                got = (stream, versions[0], versions[-1], positions[-1])
                if tuple(op.results[index]) != got:
                    problems.append(
                        f"{op.describe()}: acknowledged as {tuple(op.results[index])}, "
                        f"stored as {got} (stream, first version, last version, last position)"
                    )
        if op.kind == "tx":
            txs.append((op, stored_all))
    for e in events:
        if e.id not in known:
            problems.append(
                f"event {e.id} at position {e.position} ({e.stream} v{e.version}, "
                f"{e.type} {e.data!r}) was never appended by anyone"
            )
    return landed, landed_in_flight, txs


async def check_audit(
    store: tidings.EventStore,
    txs: list[tuple[Op, list[tidings.RecordedEvent]]],
    events: list[tidings.RecordedEvent],
    problems: list[str],
) -> None:
    """Every stored transaction has one audit record, the plain appends none.

    All the events of transactions in flight at a kill or made by the parent are
    checked; of a sample of the acknowledged ones, the first and the last event (one
    query per event is slow on PostgreSQL). A transaction checked by an earlier
    verification is not checked again.
    """

    async def one_tx(op: Op, evs: list[tidings.RecordedEvent]) -> None:
        chosen = (
            evs if not op.acked or op.source == "parent" or len(evs) <= 2 else [evs[0], evs[-1]]
        )
        records = await asyncio.gather(*(store.audit(e) for e in chosen))
        ids = [r.id if r else None for r in records]
        first = records[0]
        if None in ids or len(set(ids)) != 1:
            problems.append(
                f"{op.describe()}: its events at positions {[e.position for e in chosen]} have "
                f"audit records {ids}, expected one record shared by all"
            )
        elif first is not None and (first.user != "crash" or first.extra != {"tx": op.name}):
            problems.append(f"{op.describe()}: audit record {first} is not the transaction's")

    async def no_audit(e: tidings.RecordedEvent) -> None:
        record = await store.audit(e)
        if record is not None:
            problems.append(
                f"event {e.id} at position {e.position}, not from a transaction, has audit {record}"
            )

    rng = random.Random(len(events))
    todo = [(op, evs) for op, evs in txs if not op.audited]
    must = [(op, evs) for op, evs in todo if not op.acked or op.source == "parent"]
    rest = [(op, evs) for op, evs in todo if op.acked and op.source != "parent"]
    todo = must + rng.sample(rest, min(AUDIT_TX_SAMPLE, len(rest)))
    for start in range(0, len(todo), 16):
        await asyncio.gather(*(one_tx(op, evs) for op, evs in todo[start : start + 16]))
    for op, _ in todo:
        op.audited = True
    tx_ids = {e.id for _, evs in txs for e in evs}
    plain = [e for e in events if e.id not in tx_ids]
    sample = rng.sample(plain, min(AUDIT_PLAIN_SAMPLE, len(plain)))
    for start in range(0, len(sample), 32):
        await asyncio.gather(*(no_audit(e) for e in sample[start : start + 32]))


# -- after the crash: retry, and append more ---------------------------------------------


def events_of(op: Op, index: int, ids: Ids, k0: int) -> list[tidings.NewEvent]:
    return [
        tidings.NewEvent(op.type_of(index), {"op": op.name, "k": k0 + j}, id=i)
        for j, i in enumerate(ids)
    ]


async def retry_in_flight(
    store: tidings.EventStore, ledger: Ledger, source: str, landed: set[str]
) -> int:
    """Retry the operations in flight at the kill, with their event ids, as a client would.

    One that landed must replay its stored result, writing nothing; one that did not
    must land now. Either way it counts as acknowledged for the next verification.
    """
    retried = 0
    for op in ledger.of(source):
        if op.acked:
            continue
        head = await store.head()
        results: list[tidings.AppendResult] = []
        if op.kind == "tx":
            async with store.transaction(
                audit=tidings.Audit(user="crash", extra={"tx": op.name})
            ) as tx:
                k = 0
                for index, (stream, ids) in enumerate(op.appends):
                    tx.append(stream, events_of(op, index, ids, k))
                    k += len(ids)
            results = tx.results
        else:
            ((stream, ids),) = op.appends
            # The stream is the dead task's own: its version is what the lost append expected.
            version = await store.stream_version(stream)
            expected: tidings.Expected = tidings.NO_STREAM if version is None else version
            results = [
                await store.append(stream, events_of(op, 0, ids, 0), expected_version=expected)
            ]
        grown = await store.head() - head
        want = 0 if op.name in landed else len(op.ids)
        assert grown == want, (
            f"retrying {op.describe()}, which {'had' if op.name in landed else 'had not'} landed, "
            f"moved the head by {grown}, not {want}"
        )
        op.results = [(r.stream, r.first_version, r.last_version, r.position) for r in results]
        retried += 1
    return retried


async def append_more(url: str, ledger: Ledger, tag: str, landed: set[str], source: str) -> None:
    """Reopen the store, retry what was in flight, then append and read back new events."""
    store = await tidings.connect(url)
    try:
        await retry_in_flight(store, ledger, source, landed)
        head = await store.head()

        single = Op(
            f"{tag}.after.single",
            "multi",
            [(f"after-{tag}", [uuid.uuid4() for _ in range(3)])],
            "parent",
        )
        result = await store.append(
            f"after-{tag}",
            events_of(single, 0, single.appends[0][1], 0),
            expected_version=tidings.NO_STREAM,
        )
        assert result == tidings.AppendResult(f"after-{tag}", 0, 2, head + 3), result
        single.results = [(result.stream, 0, 2, result.position)]
        ledger.add_parent_op(single)

        version = await store.stream_version("a-0")
        tx_op = Op(
            f"{tag}.after.tx",
            "tx",
            [("a-0", [uuid.uuid4(), uuid.uuid4()]), ("b-7", [uuid.uuid4()])],
            "parent",
        )
        async with store.transaction(
            audit=tidings.Audit(user="crash", extra={"tx": tx_op.name})
        ) as tx:
            # An exact expected version on a stream the killed writer was appending to.
            tx.append(
                "a-0",
                events_of(tx_op, 0, tx_op.appends[0][1], 0),
                expected_version=tidings.NO_STREAM if version is None else version,
            )
            tx.append("b-7", events_of(tx_op, 1, tx_op.appends[1][1], 2))
        first_a = 0 if version is None else version + 1
        assert tx.results[0].first_version == first_a, (tx.results, version)
        assert tx.results[1].position == head + 6, (tx.results, head)
        tx_op.results = [
            (r.stream, r.first_version, r.last_version, r.position) for r in tx.results
        ]
        ledger.add_parent_op(tx_op)

        new = [e async for e in store.read_all(from_position=head)]
        assert [e.id for e in new] == single.ids + tx_op.ids, (
            "appends after the crash do not read back"
        )
        assert [e.position for e in new] == list(range(head + 1, head + 7))
        back = [e.id async for e in store.read_stream(f"after-{tag}")]
        assert back == single.ids
        assert await store.head() == head + 6
    finally:
        await store.close()


# -- one crash ----------------------------------------------------------------------------


async def crash_once(
    url: str, tag: str, ledger: Ledger, tmp_path: Path, seed: int, *, tail: bool
) -> dict[int, uuid.UUID]:
    """Run a writer, SIGKILL it mid-write; return what a reader saw meanwhile."""
    rng = random.Random(seed)
    child = await Child.start(url, tag, ledger, tmp_path, seed=seed)
    tailer: Tailer | None = None
    try:
        await child.wait_for(lambda: child.ready is not None, START_TIMEOUT_S, "ready line")
        if tail:
            tailer = Tailer(await tidings.connect(url))
        ready_at = time.monotonic()
        kill_after = rng.uniform(*KILL_AFTER_S)
        await child.wait_for(
            lambda: (
                child.acks >= MIN_ACKS_BEFORE_KILL and time.monotonic() - ready_at >= kill_after
            ),
            15,
            f"{MIN_ACKS_BEFORE_KILL} acknowledgements",
        )
        await child.kill()
    finally:
        await child.ensure_dead()
        if tailer is not None:
            await tailer.stop()
    assert child.proc is not None and child.proc.returncode == -signal.SIGKILL, child.explain(
        "not killed"
    )
    assert not ledger.errors, child.explain("reported errors")
    in_flight = [op for op in ledger.of(tag) if not op.acked]
    assert in_flight, f"writer {tag}: nothing was in flight at the kill, so it proved nothing"
    await wait_for_dead_sessions(url)
    if tailer is not None:
        assert not tailer.problems, tailer.problems
        assert tailer.seen, "the reader saw nothing while the writer wrote"
        return tailer.seen
    return {}


# -- the tests ----------------------------------------------------------------------------


async def test_sigkill_loses_no_acknowledged_event_and_no_partial_group(
    store_url: str, tmp_path: Path
) -> None:
    ledger = Ledger()
    seen = await crash_once(store_url, "k0", ledger, tmp_path, seed=1, tail=True)
    verdict = await verify(store_url, ledger, seen)
    print("after the kill:", verdict.stats)
    assert verdict.stats["acknowledged"] >= MIN_ACKS_BEFORE_KILL
    await append_more(store_url, ledger, "k0", verdict.landed, "k0")
    print("after retrying and appending more:", (await verify(store_url, ledger, seen)).stats)


async def test_repeated_sigkill_on_the_same_store(store_url: str, tmp_path: Path) -> None:
    ledger = Ledger()
    seen: dict[int, uuid.UUID] = {}
    for round_ in range(KILL_ROUNDS):
        tag = f"r{round_}"
        seen.update(
            await crash_once(store_url, tag, ledger, tmp_path, seed=10 + round_, tail=round_ == 1)
        )
        verdict = await verify(store_url, ledger, seen)
        print(f"after kill {round_ + 1}:", verdict.stats)
        await append_more(store_url, ledger, tag, verdict.landed, tag)
    final = await verify(store_url, ledger, seen)
    print("final:", final.stats)
    for round_ in range(KILL_ROUNDS):
        assert any(op.acked for op in ledger.of(f"r{round_}")), (
            f"round {round_} acknowledged nothing"
        )
    assert final.stats["events"] == final.stats["head"]


async def test_two_processes_write_one_sqlite_file(sqlite_url: str, tmp_path: Path) -> None:
    ledger = Ledger()
    children = [
        await Child.start(
            sqlite_url, f"p{i}", ledger, tmp_path, seconds=TWO_WRITERS_S, seed=20 + i, wait_go=True
        )
        for i in range(2)
    ]
    try:
        # Both open the fresh file at once; then both write from the same moment.
        for child in children:
            await child.wait_for(lambda c=child: c.ready is not None, START_TIMEOUT_S, "ready line")
        for child in children:
            child.go()
        for child in children:
            await child.finish(within_s=30)
    finally:
        for child in children:
            await child.ensure_dead()
    for child in children:
        assert child.proc is not None
        assert child.proc.returncode == 0 and child.done is not None, child.explain(
            "did not finish cleanly"
        )
        assert child.done["acked"] == child.acks > 0, child.explain(f"done line {child.done}")
    not_acked = [op.describe() for op in ledger.ops.values() if not op.acked]
    assert not not_acked, f"operations never acknowledged: {not_acked[:10]}"
    verdict = await verify(sqlite_url, ledger)
    owner = {i: op.source for op in ledger.ops.values() for i in op.ids}
    sources = [owner[e.id] for e in verdict.events]
    switches = sum(1 for a, b in itertools.pairwise(sources) if a != b)
    print("two writers:", verdict.stats, f"{switches} switches", [c.done for c in children])
    # Both processes really wrote at the same time: one's events land amid the other's.
    # (SQLite's lock is not fair: one writer may get far fewer commits than the other.)
    assert switches >= 2, (
        f"the two writers did not overlap ({switches} switches between them along the log): "
        f"{Counter(sources)}, done lines {[c.done for c in children]}"
    )
    await append_more(sqlite_url, ledger, "p", verdict.landed, "none")
    await verify(sqlite_url, ledger)
