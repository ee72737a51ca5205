"""ADR measurement: asyncpg vs psycopg 3 (async) and JSON codecs for tidings' PostgreSQL store.

What it measures (one *run* per invocation; run it 3 times and take medians):

  (a) write: 100-row batches, each one transaction made of a single
      ``INSERT ... SELECT FROM unnest($1::uuid[], $2::text[], $3::int8[], $4::text[],
      $5::text[], $6::text[])`` statement (data/metadata sent as text[] and cast to
      jsonb server-side), autocommit so that the statement is the transaction;
      1 connection and 8 concurrent connections, for --write-seconds each -> rows/s.
  (b) read: 200,000 rows by keyset pagination (1,000 rows per page,
      ``WHERE position > $1 ORDER BY position LIMIT 1000``), data/metadata fetched as
      text (``data::text``) and each row turned into a ``msgspec.Struct`` ``Event``
      with the JSON columns decoded by json.loads / orjson.loads / msgspec.json.decode;
      plus a "fetch only" baseline (rows fetched, nothing decoded) -> events/s.
  (c) read, server-built pages: the server aggregates each page into one JSON text
      (``json_agg(json_build_array(...) ORDER BY position)``) and the client decodes it
      in one call, ``msgspec.json.Decoder(list[EventRow]).decode(text)``, where
      ``EventRow`` is an ``array_like=True`` Struct; uuid and timestamptz strings as PG
      emits them in JSON (``2025-01-01T00:00:01.001+00:00``, session TimeZone=UTC) are
      parsed by msgspec directly -> events/s.

Drivers: "asyncpg" (binary protocol, always, statement cache on); "psycopg" = psycopg
AsyncConnection with its defaults (text-format parameters ``%s`` and results);
"psycopg-bin" = psycopg with the binary protocol both ways (``%b`` parameters for the
write, ``execute(..., binary=True)`` results for the reads). psycopg-bin is only run for
the write, "fetch only" and msgspec read rows, to keep a run under 60 s.
Before timing, every read variant's first page is checked to decode to equal Events.

One invocation = one run of one part (``--part write`` ~25 s, ``--part read`` ~50 s);
each creates the database ``adr_scratch_codec`` and drops it at the end.

Run (from the repo root), 3 runs of each part:

    for i in 1 2 3; do for part in write read; do
      PYTHONPATH=/tmp/adr-pydeps .venv/bin/python bench/adr/driver_codec.py --part $part --rotate $i \
          --out bench/adr/results/driver_codec.jsonl
    done; done

(orjson is not in the project venv; ``pip install --target /tmp/adr-pydeps orjson``
provides it without touching the venv. Without it the orjson rows are skipped.)
Then ``.venv/bin/python bench/adr/summarize.py bench/adr/results/driver_codec.jsonl``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import sys
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c

try:
    import orjson
except ImportError:  # pragma: no cover - reported in the output
    orjson = None

SCRIPT = "driver_codec"
BATCH = 100
PAGE = 1000
READ_ROWS = 200_000


class Event(msgspec.Struct):
    id: uuid.UUID
    stream: str
    type: str
    data: dict
    metadata: dict
    version: int
    position: int
    time: datetime


class EventRow(msgspec.Struct, array_like=True):
    """Same fields, decoded from a JSON array [id, stream, type, data, metadata, version, position, time]."""

    id: uuid.UUID
    stream: str
    type: str
    data: dict
    metadata: dict
    version: int
    position: int
    time: datetime


# ---------------------------------------------------------------- SQL

INSERT_PG = """
INSERT INTO events_w (id, stream, version, type, data, metadata)
SELECT u.id, u.stream, u.version, u.type, u.data::jsonb, u.metadata::jsonb
FROM unnest({p1}::uuid[], {p2}::text[], {p3}::int8[], {p4}::text[], {p5}::text[], {p6}::text[])
     AS u(id, stream, version, type, data, metadata)
"""
INSERT_ASYNCPG = INSERT_PG.format(p1="$1", p2="$2", p3="$3", p4="$4", p5="$5", p6="$6")
INSERT_PSYCOPG = INSERT_PG.format(p1="%s", p2="%s", p3="%s", p4="%s", p5="%s", p6="%s")
INSERT_PSYCOPG_BIN = INSERT_PG.format(p1="%b", p2="%b", p3="%b", p4="%b", p5="%b", p6="%b")

PAGE_ROWS = """
SELECT id, stream, type, data::text, metadata::text, version, position, time
FROM events WHERE position > {p} ORDER BY position LIMIT 1000
"""
PAGE_ROWS_ASYNCPG = PAGE_ROWS.format(p="$1")
PAGE_ROWS_PSYCOPG = PAGE_ROWS.format(p="%s")

PAGE_JSON = """
SELECT json_agg(json_build_array(id, stream, type, data, metadata, version, position, time)
                ORDER BY position)::text
FROM (SELECT * FROM events WHERE position > {p} ORDER BY position LIMIT 1000) page
"""
PAGE_JSON_ASYNCPG = PAGE_JSON.format(p="$1")
PAGE_JSON_PSYCOPG = PAGE_JSON.format(p="%s")


# ---------------------------------------------------------------- connections


class Conn:
    """Tiny uniform facade over the two drivers (only what the benchmark needs)."""

    def __init__(self, driver: str, raw: Any) -> None:
        self.driver = driver
        self.raw = raw
        self.binary = driver == "psycopg-bin"

    @classmethod
    async def open(cls, driver: str, dsn: str) -> Conn:
        if driver == "asyncpg":
            raw = await asyncpg.connect(dsn, server_settings={"timezone": "UTC"})
        else:
            raw = await psycopg.AsyncConnection.connect(
                dsn, autocommit=True, options="-c timezone=UTC"
            )
        return cls(driver, raw)

    async def close(self) -> None:
        await self.raw.close()

    async def insert_batch(self, cols: tuple[list, ...]) -> None:
        if self.driver == "asyncpg":
            await self.raw.execute(INSERT_ASYNCPG, *cols)
        else:
            await self.raw.execute(INSERT_PSYCOPG_BIN if self.binary else INSERT_PSYCOPG, cols)

    async def page_rows(self, after: int) -> list:
        if self.driver == "asyncpg":
            return await self.raw.fetch(PAGE_ROWS_ASYNCPG, after)
        cur = await self.raw.execute(PAGE_ROWS_PSYCOPG, (after,), binary=self.binary)
        return await cur.fetchall()

    async def page_json(self, after: int) -> str | None:
        if self.driver == "asyncpg":
            return await self.raw.fetchval(PAGE_JSON_ASYNCPG, after)
        cur = await self.raw.execute(PAGE_JSON_PSYCOPG, (after,), binary=self.binary)
        row = await cur.fetchone()
        return row[0]


# ---------------------------------------------------------------- (a) writes


def make_batch(payloads: list[str], metas: list[str], tag: str, n: int) -> tuple[list, ...]:
    """One 100-event append to a fresh stream: ids, streams, versions, types, data, metadata."""
    stream = f"order-{tag}-{n}"
    k = n * BATCH
    return (
        [uuid.uuid4() for _ in range(BATCH)],
        [stream] * BATCH,
        list(range(1, BATCH + 1)),
        ["OrderPlaced"] * BATCH,
        [payloads[(k + i) % len(payloads)] for i in range(BATCH)],
        [metas[(k + i) % len(metas)] for i in range(BATCH)],
    )


async def bench_write(
    dsn: str, driver: str, conns: int, seconds: float, run_tag: str
) -> dict[str, Any]:
    rng = random.Random(42)
    payloads = [c.make_payload(rng, i) for i in range(1000)]
    metas = [c.make_metadata(rng) for _ in range(1000)]
    admin = await asyncpg.connect(dsn)
    await admin.execute("TRUNCATE events_w RESTART IDENTITY")
    await admin.execute("CHECKPOINT")
    pool = [await Conn.open(driver, dsn) for _ in range(conns)]
    # warm-up: one batch per connection (prepares statements, psycopg needs 5 to prepare)
    for w, conn in enumerate(pool):
        for j in range(5):
            await conn.insert_batch(make_batch(payloads, metas, f"warm{run_tag}{w}", j))
    counts = [0] * conns
    deadline = time.perf_counter() + seconds

    async def worker(w: int, conn: Conn) -> None:
        n = 0
        while time.perf_counter() < deadline:
            await conn.insert_batch(make_batch(payloads, metas, f"{run_tag}w{w}", n))
            n += 1
        counts[w] = n

    gc.collect()
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(w, conn) for w, conn in enumerate(pool)))
    elapsed = time.perf_counter() - t0
    for conn in pool:
        await conn.close()
    stored = await admin.fetchval("SELECT count(*) FROM events_w")
    await admin.close()
    rows = sum(counts) * BATCH
    assert stored == rows + conns * 5 * BATCH, (stored, rows)
    return {
        "part": "a-write",
        "driver": driver,
        "conns": conns,
        "batch": BATCH,
        "rows": rows,
        "seconds": round(elapsed, 3),
        "rows_per_s": round(rows / elapsed),
    }


# ---------------------------------------------------------------- (b) + (c) reads


def rows_to_events(rows: list, loads: Callable[[Any], Any]) -> list[Event]:
    return [Event(r[0], r[1], r[2], loads(r[3]), loads(r[4]), r[5], r[6], r[7]) for r in rows]


def codecs() -> dict[str, Callable[[Any], Any] | None]:
    out: dict[str, Callable[[Any], Any] | None] = {"json.loads": json.loads}
    if orjson is not None:
        out["orjson.loads"] = orjson.loads
    out["msgspec.json.decode"] = msgspec.json.decode
    return out


async def read_rows(conn: Conn, loads: Callable[[Any], Any] | None) -> int:
    """Page through the whole table; loads=None means fetch only (no Struct, no JSON decode)."""
    after, total = 0, 0
    while True:
        rows = await conn.page_rows(after)
        if not rows:
            return total
        if loads is not None:
            events = rows_to_events(rows, loads)
            after = events[-1].position
        else:
            after = rows[-1][6]
        total += len(rows)
        if len(rows) < PAGE:
            return total


async def read_json_pages(conn: Conn) -> int:
    decoder = msgspec.json.Decoder(list[EventRow])
    after, total = 0, 0
    while True:
        text = await conn.page_json(after)
        if text is None:
            return total
        events = decoder.decode(text)
        after = events[-1].position
        total += len(events)
        if len(events) < PAGE:
            return total


async def check_equivalence(dsn: str, drivers: list[str]) -> None:
    """Every read variant must decode the first page to the same events."""
    reference: list[tuple] | None = None
    decoder = msgspec.json.Decoder(list[EventRow])
    for driver in drivers:
        conn = await Conn.open(driver, dsn)
        variants: list[list[Event]] = []
        rows = await conn.page_rows(0)
        for loads in codecs().values():
            variants.append(rows_to_events(rows, loads))
        variants.append(
            [Event(*msgspec.structs.astuple(e)) for e in decoder.decode(await conn.page_json(0))]
        )
        await conn.close()
        for evs in variants:
            as_tuples = [
                (
                    uuid.UUID(str(e.id)),
                    e.stream,
                    e.type,
                    e.data,
                    e.metadata,
                    e.version,
                    e.position,
                    e.time,
                )
                for e in evs
            ]
            if reference is None:
                reference = as_tuples
            assert as_tuples == reference, f"{driver}: decoded page differs"
    assert reference is not None and len(reference) == PAGE


async def bench_read(dsn: str, driver: str, how: str) -> dict[str, Any]:
    conn = await Conn.open(driver, dsn)
    # warm-up: a few pages so statements are prepared and caches are hot
    for _ in range(6):
        await conn.page_rows(0)
        await conn.page_json(0)
    gc.collect()
    t0 = time.perf_counter()
    if how == "json_agg+msgspec":
        n = await read_json_pages(conn)
    elif how == "fetch only":
        n = await read_rows(conn, None)
    else:
        n = await read_rows(conn, codecs()[how])
    elapsed = time.perf_counter() - t0
    await conn.close()
    assert n == READ_ROWS, n
    part = "c-json_agg" if how == "json_agg+msgspec" else "b-rows"
    return {
        "part": part,
        "driver": driver,
        "codec": how,
        "rows": n,
        "seconds": round(elapsed, 3),
        "events_per_s": round(n / elapsed),
    }


# ---------------------------------------------------------------- main


def rotated(items: list[str], k: int) -> list[str]:
    k %= len(items)
    return items[k:] + items[:k]


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--write-seconds", type=float, default=3.0, help="duration of each write configuration"
    )
    ap.add_argument("--out", help="append JSON result lines to this file")
    ap.add_argument("--part", choices=["write", "read"], required=True)
    ap.add_argument(
        "--rotate",
        type=int,
        default=0,
        help="rotate the driver order by this much (pass the run number, to spread order effects)",
    )
    args = ap.parse_args()
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)

    run_id = f"{int(time.time())}"
    state = c.machine_state()
    state.update(
        {
            "orjson": getattr(orjson, "__version__", None),
            "asyncpg": asyncpg.__version__,
            "psycopg": psycopg.__version__,
            "psycopg_impl": psycopg.pq.__impl__,
            "msgspec": msgspec.__version__,
            "run_id": run_id,
        }
    )
    c.emit(args.out, SCRIPT, {"part": f"machine-{args.part}", **state})
    t_start = time.perf_counter()

    async with c.scratch_db("codec") as dsn:
        setup = await asyncpg.connect(dsn)
        if args.part == "write":
            await setup.execute(
                c.events_ddl("events_w", position_default=" GENERATED BY DEFAULT AS IDENTITY")
            )
            await setup.close()
            for conns in (1, 8):
                for driver in rotated(["asyncpg", "psycopg", "psycopg-bin"], args.rotate):
                    res = await bench_write(dsn, driver, conns, args.write_seconds, run_id)
                    c.emit(args.out, SCRIPT, {**res, "run_id": run_id})
        else:
            await setup.execute(c.events_ddl("events"))
            t0 = time.perf_counter()
            await setup.execute(c.FILL_SQL, READ_ROWS)
            await setup.execute("VACUUM ANALYZE events")
            fill_s = time.perf_counter() - t0
            avg_data = await setup.fetchval(
                "SELECT round(avg(length(data::text)))::int FROM events"
            )
            await setup.close()
            print(
                f"# filled {READ_ROWS} rows in {fill_s:.1f}s, avg data text {avg_data} bytes",
                file=sys.stderr,
            )
            await check_equivalence(dsn, ["asyncpg", "psycopg", "psycopg-bin"])
            plan: list[tuple[str, list[str]]] = [
                ("fetch only", ["asyncpg", "psycopg", "psycopg-bin"])
            ]
            for codec in codecs():
                extra = ["psycopg-bin"] if codec == "msgspec.json.decode" else []
                plan.append((codec, ["asyncpg", "psycopg", *extra]))
            plan.append(("json_agg+msgspec", ["asyncpg", "psycopg"]))
            for how, drivers in plan:
                for driver in rotated(drivers, args.rotate):
                    res = await bench_read(dsn, driver, how)
                    c.emit(args.out, SCRIPT, {**res, "avg_data_bytes": avg_data, "run_id": run_id})

    print(f"# run took {time.perf_counter() - t_start:.1f}s", file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(main())
