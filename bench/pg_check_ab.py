"""PostgreSQL migration 11 before and after, in one run: appends on a store whose
``apply_batch`` has the old join check beside one with the key lookups.

Usage::

    python bench/pg_check_ab.py [--events 1000000] [--streams 10000] [--runs 5]
                                [--pg-url URL]

Not part of ``make bench``: the measurement behind migration 11. In one scratch database
``tidings_bench_<pid>_<n>``, two stores (schemas ``t_old`` and ``t_new``) are opened
empty and migrated by this tidings; ``t_old``'s ``apply_batch`` is then replaced with
the one of migration 5 (the version check as a ``LEFT JOIN`` of the streams table)
before any connection has run it. Each is filled by its own long-lived store, as an
application's would be: ``--events`` events in appends of ``events / streams`` events
(at most 100) round robin over ``--streams`` streams, 50 appends a transaction. Then a
``CHECKPOINT`` and ``sync()``, and ``--runs`` times, the two taking turns: 64 writers of
single events and 8 writers of 100-event appends, each to fresh streams (10,000 and
20,000 events). Medians with every run; the load average before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
OLD_FUNCTION = BENCH.parent / "src" / "tidings" / "sql" / "postgres" / "0005_json_events.sql"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--streams", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--pg-url",
        default=os.environ.get(
            "TIDINGS_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    return parser.parse_args(argv)


def old_function(schema: str) -> str:
    """Migration 5's apply_batch (the join check), for ``schema``."""
    text = OLD_FUNCTION.read_text()
    start = text.index("CREATE OR REPLACE FUNCTION {schema}.apply_batch(")
    body = text[start : text.index("$$;", start) + 3]
    return body.replace("{schema}", '"' + schema.replace('"', '""') + '"')


class Side:
    def __init__(self, name: str, store: Any, streams: int, per_append: int) -> None:
        self.name, self.store = name, store
        self.streams, self.per_append = streams, per_append
        self.appends = self.fresh = 0
        self.rates: dict[str, list[float]] = {"append_1": [], "append_100": []}

    async def fill(self, target: int) -> None:
        from workloads import EVENT_TYPE, event_data

        import tidings

        head = await self.store.head()
        while head < target:
            async with self.store.transaction() as tx:
                for _ in range(50):
                    if head >= target:
                        break
                    j = self.appends
                    stream, k = j % self.streams, j // self.streams
                    n = k * self.per_append
                    events = [
                        tidings.NewEvent(EVENT_TYPE, event_data(n + i))
                        for i in range(self.per_append)
                    ]
                    expected = tidings.NO_STREAM if k == 0 else n - 1
                    tx.append(f"order-{stream}", events, expected_version=expected)
                    self.appends += 1
                    head += self.per_append
            head = await self.store.head()

    async def rate(self, writers: int, batch: int, events: int) -> float:
        from workloads import EVENT_TYPE, event_data

        import tidings

        self.fresh += 1
        per_writer = events // batch // writers
        built = [
            [tidings.NewEvent(EVENT_TYPE, event_data(k * batch + i)) for i in range(batch)]
            for k in range(per_writer)
        ]

        async def writer(w: int) -> None:
            expected: tidings.Expected = tidings.NO_STREAM
            for batch_ in built:
                result = await self.store.append(
                    f"fresh{self.fresh}-{w}", batch_, expected_version=expected
                )
                expected = result.last_version

        began = time.perf_counter()
        await asyncio.gather(*(writer(w) for w in range(writers)))
        return per_writer * batch * writers / (time.perf_counter() - began)


async def main(args: argparse.Namespace) -> None:
    import asyncpg
    from run import Postgres

    import tidings

    postgres = Postgres(args.pg_url)
    postgres.drop_stale()
    per_append = max(1, min(100, args.events // args.streams))
    print(f"load average before {os.getloadavg()}", flush=True)
    with postgres.scratch() as database:
        pg = postgres.settings
        base = f"postgresql://{pg['user']}@{pg['host']}:{pg['port']}/{database}"
        sides = [
            Side(name, await tidings.connect(f"{base}?schema={schema}", notify=None),
                 args.streams, per_append)
            for name, schema in [("old join check", "t_old"), ("migration 11", "t_new")]
        ]  # fmt: skip
        try:
            conn = await asyncpg.connect(base)
            try:
                await conn.execute(old_function("t_old"))
            finally:
                await conn.close()
            for side in sides:
                began = time.perf_counter()
                await side.fill(args.events)
                print(f"{side.name}: filled in {time.perf_counter() - began:.0f} s", flush=True)
            conn = await asyncpg.connect(base)
            try:
                await conn.execute("CHECKPOINT")
            finally:
                await conn.close()
            os.sync()
            for run in range(args.runs):
                order = sides if run % 2 == 0 else sides[::-1]
                for side in order:
                    side.rates["append_1"].append(await side.rate(64, 1, 10_000))
                for side in order:
                    side.rates["append_100"].append(await side.rate(8, 100, 20_000))
        finally:
            for side in sides:
                await side.store.close()
    print(
        f"\n{args.events:,} events over {args.streams:,} streams "
        f"({per_append}-event fill appends); medians of {args.runs} runs, every run:"
    )
    for side in sides:
        cells = [
            f"{name} {statistics.median(rates):,.0f} ev/s {[round(r) for r in rates]}"
            for name, rates in side.rates.items()
        ]
        print(f"  {side.name:15} " + "   ".join(cells))
    print(f"load average after {os.getloadavg()}")


if __name__ == "__main__":
    sys.path.insert(0, str(BENCH))
    asyncio.run(main(parse_args()))
